"""The comparison: metrics, NNLS unmixing, open set, ensemble coverage, the evaluate command."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from defectnet.calibration import full_cells_threshold, undoped_crystals
from defectnet.data.cache import PDoSDataset, load_cache, save_cache
from defectnet.data.datamodule import Batch, PDoSDataModule, SpectrumAugmentation, open_set_mask
from defectnet.data.references import ReferenceError, load_references
from defectnet.elements import DOPANTS, candidate_vector, composition_vector
from defectnet.evaluation import evaluate, nnls_predict
from defectnet.metrics import best_threshold, coverage, split_metrics
from defectnet.spectra import EnergyGrid

from .conftest import DEMO_CACHE, DEMO_REFERENCES, ROOT_DIR, compose_config


def test_split_metrics_count_what_they_say():
    target = np.zeros((2, 56))
    mask = np.zeros((2, 56))
    mask[:, :3] = 1
    target[0, 0], target[1, 1] = 0.1, 0.2
    pred = np.zeros((2, 56))
    pred[0, 0], pred[0, 2] = 0.1, 0.05  # sample 0: right, plus one false positive
    pred[1, 1] = 0.001  # sample 1: missed
    m = split_metrics(pred, target, mask, threshold=0.01)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["distractor_fpr"] == pytest.approx(1 / 4)
    assert m["rmse_absent"] == pytest.approx(np.sqrt(0.05**2 / 4))  # the four absent entries
    assert m["rmse_c0.1-0.25"] == pytest.approx(np.sqrt(0.199**2 / 2))
    assert m["rmse"] == pytest.approx(np.sqrt((0.05**2 + 0.199**2) / 6))
    assert m["rmse_n1"] == pytest.approx(m["rmse"])
    t_sel = target[mask > 0]
    r2 = 1 - (0.05**2 + 0.199**2) / ((t_sel - t_sel.mean()) ** 2).sum()
    assert m["r2"] == pytest.approx(r2)
    assert m["detected_0.05-0.25"] == pytest.approx(0.5)  # 0.1 found, 0.2 missed
    assert "undoped_read_empty" not in m
    empty = np.zeros((1, 56))
    offered = np.zeros((1, 56))
    offered[0, :4] = 1  # four candidates offered, none present
    quiet, loud = np.full((1, 56), 0.005), np.full((1, 56), 0.05)
    assert split_metrics(quiet, empty, offered, 0.01)["undoped_read_empty"] == 1.0
    assert split_metrics(loud, empty, offered, 0.01)["undoped_read_empty"] == 0.0
    c = coverage(pred - 0.01, pred + 0.01, target, mask)
    assert c["coverage_present"] == pytest.approx(0.5)
    # the best threshold on these samples separates the two true dopants from the rest
    pred[1, 1] = 0.2
    t = best_threshold(pred, target, mask)
    assert split_metrics(pred, target, mask, t)["f1"] > split_metrics(pred, target, mask, 0.0)["f1"]


def test_a_bounded_false_alarm_rate_keeps_the_threshold_from_calling_everything_present():
    """Three of four candidates present, predictions that barely tell them apart: F1 alone
    calls every candidate present (FPR 1); with the bound the threshold calls ≤ 15 % of the
    absent ones, and the dopants that stand out are still found."""
    rng = np.random.default_rng(0)
    mask = np.zeros((300, 56))
    mask[:, :4] = 1
    target = np.zeros((300, 56))
    target[:, :3] = rng.uniform(0.002, 0.2, (300, 3))
    pred = rng.uniform(0.0, 0.03, (300, 56)) * mask + 0.05 * target
    free = split_metrics(pred, target, mask, best_threshold(pred, target, mask))
    bounded = split_metrics(pred, target, mask, best_threshold(pred, target, mask, max_fpr=0.15))
    assert free["distractor_fpr"] > 0.85
    assert bounded["distractor_fpr"] <= 0.15 and bounded["recall"] > 0.25


def test_nnls_unmixes_a_linear_mixture_exactly(tmp_path):
    grid = EnergyGrid()
    e = grid.energies
    pristine = np.exp(-0.5 * ((e - 60) / 8) ** 2)
    ref = {
        "parent_id": "host",
        "pristine": pristine.tolist(),
        "dopants": {
            el: {"concentration": 1 / 64, "spectrum": (pristine + d / 64).tolist()}
            for el, d in (
                ("Ge", np.exp(-0.5 * ((e - 30) / 5) ** 2)),
                ("C", np.exp(-0.5 * ((e - 90) / 5) ** 2)),
            )
        },
    }
    truth = [(0.05, 0.0), (0.02, 0.1), (0.0, 0.03)]
    doped = [
        pristine
        + a * (np.array(ref["dopants"]["Ge"]["spectrum"]) - pristine) * 64
        + b * (np.array(ref["dopants"]["C"]["spectrum"]) - pristine) * 64
        for a, b in truth
    ]
    n = len(truth)
    mask = np.tile(candidate_vector(["Ge", "C", "Sn"]), (n, 1))  # Sn: no reference → 0
    targets = np.zeros((n, 56), dtype=np.float32)
    targets[:, DOPANTS.index("Ge")] = [a for a, _ in truth]
    targets[:, DOPANTS.index("C")] = [b for _, b in truth]
    f = lambda a: torch.tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    ds = PDoSDataset(
        f([pristine] * n),
        f(doped),
        f([composition_vector(["Si"])] * n),
        f(mask),
        f(targets),
        torch.zeros(n, dtype=torch.int64),
        ["host"],
        grid,
    )
    save_cache(ds, tmp_path / "mix.safetensors")
    dm = PDoSDataModule(str(tmp_path / "mix.safetensors"), 8, 0, 0.0, 0.0, 1.0)
    dm.setup()
    pred = nnls_predict(dm, "test_id", {"host": ref})
    order = dm.splits.test_id
    assert np.allclose(pred, targets[order], atol=1e-5)
    with pytest.raises(ValueError, match="no single-dopant references for parent 'host'"):
        nnls_predict(dm, "test_id", {})
    # the reference benchmark's per-candidate features: its NNLS is the evaluation's, each
    # candidate's own share is exact where the other reference does not overlap, and a
    # candidate without a reference is flagged
    path = ROOT_DIR / "scripts" / "bench_reference_unmixing.py"
    spec = importlib.util.spec_from_file_location("bench_reference_unmixing", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    features, entries, bench_nnls = bench.candidate_features(
        dm.split_tensors("test_id"), dm.dataset.parents, {"host": ref}
    )
    assert np.allclose(bench_nnls, pred, atol=1e-6) and len(entries) == 3 * n
    column = {name: k for k, name in enumerate(bench.FEATURES)}
    truth_at = targets[order][entries[:, 0], entries[:, 1]]
    known = features[:, column["has reference"]] == 1
    assert (~known == (entries[:, 1] == DOPANTS.index("Sn"))).all()
    assert np.allclose(features[known, column["nnls share"]], truth_at[known], atol=1e-5)
    own = features[known, column["own least-squares share"]]
    assert np.allclose(own, truth_at[known], atol=1e-3)
    assert (features[:, column["candidates"]] == 3).all()


def test_open_set_mask_and_augmentation_offer_every_non_host_element():
    composition = torch.tensor(composition_vector(["Ga", "As"])).repeat(2, 1)
    mask = open_set_mask(composition)
    offered = {DOPANTS[i] for i in torch.nonzero(mask[0]).flatten().tolist()}
    assert "Ga" not in offered and "As" not in offered and "Ar" not in offered
    assert len(offered) == 56 - 5 - 2
    aug = SpectrumAugmentation(open_set=1.0)
    zeros = torch.zeros(2, 56)
    batch = Batch(torch.zeros(2, 2, 100), composition, zeros, zeros, zeros[:, 0], zeros[:, 0])
    assert torch.equal(aug(batch).candidates, mask)


def test_interval_scale_widens_an_overconfident_ensemble_to_its_level():
    from defectnet.ensemble import EnsemblePrediction

    rng = np.random.default_rng(0)
    n, level = 4000, 0.9
    truth = rng.uniform(0.01, 0.2, size=(n, 56))
    mask = np.ones_like(truth)
    # members scatter 0.01 around a centre that misses the truth by 0.03 (normal): too narrow
    centre = truth + rng.normal(0, 0.03, size=truth.shape)
    members = centre[None] + rng.normal(0, 0.01, size=(8, n, 56))
    ensemble = EnsemblePrediction.from_members(members)
    assert coverage(*ensemble.interval(level), truth, mask)["coverage_present"] < 0.5
    scale = ensemble.interval_scale(truth, mask, level)
    assert 2.5 < scale < 3.6  # ≈ sqrt(0.03² + 0.01²) / 0.01
    widened = coverage(*ensemble.interval(level, scale), truth, mask)["coverage_present"]
    assert abs(widened - level) < 0.01


def test_a_floor_keeps_intervals_where_every_member_answers_zero():
    """A reference-informed ensemble can put a present dopant at exactly zero in every member
    (12 % of val's present dopants for the v3 ensemble): with the spread alone that interval
    is a point and the widening that covers it runs to 10⁹; a floor keeps it finite."""
    from defectnet.ensemble import EnsemblePrediction

    rng = np.random.default_rng(1)
    n, level, floor = 4000, 0.9, 0.002
    truth = rng.uniform(0.002, 0.05, size=(n, 8))
    mask = np.ones_like(truth)
    members = np.clip(truth[None] + rng.normal(0, 0.005, size=(5, n, 8)), 0, None)
    members[:, : n // 5] = 0.0  # a fifth of the samples missed by every member
    ensemble = EnsemblePrediction.from_members(members)
    assert ensemble.interval_scale(truth, mask, level) > 1e6
    scale = ensemble.interval_scale(truth, mask, level, floor)
    assert scale < 50
    low, high = ensemble.interval(level, scale, floor)
    assert abs(coverage(low, high, truth, mask)["coverage_present"] - level) < 0.01
    assert (high[: n // 5] > 0).all()  # no point intervals at zero


def test_presence_is_called_on_the_ensembles_lower_bound():
    from defectnet.ensemble import EnsemblePrediction

    # two candidates with one mean: members agree on the first, split on the second
    members = np.array([[[0.02, 0.04]], [[0.02, 0.0]]])
    answer = EnsemblePrediction.from_members(members)
    assert np.allclose(answer.mean, [[0.02, 0.02]])
    score = answer.presence(2.0)
    assert score[0, 0] == pytest.approx(0.02) and score[0, 1] < 0
    assert np.array_equal(answer.presence(0.0), answer.mean)
    target, mask = np.array([[0.02, 0.0]]), np.ones((1, 2))
    on_mean = split_metrics(answer.mean, target, mask, 0.01)
    on_bound = split_metrics(answer.mean, target, mask, 0.01, score)
    assert on_mean["distractor_fpr"] == 1.0 and on_bound["distractor_fpr"] == 0.0
    assert on_bound["f1"] == 1.0 and on_bound["rmse"] == on_mean["rmse"]


def test_evaluate_compares_the_methods_and_writes_figures(ensemble, mlp_checkpoint, tmp_path):
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path=[{ensemble[0]},{ensemble[1]}]",
            f"mlp_ckpt={mlp_checkpoint}",
            f"references={DEMO_REFERENCES}",
            "presence.full_cells=demo_hosts8",  # stands in for `full` cells of training hosts
        ],
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(cfg)
    methods = metrics["methods"]
    assert set(methods) == {"DefectNet (ensemble of 2)", "MLP", "NNLS", "training mean"}
    for m in methods.values():
        assert set(m) == {"test_id", "test_ood"} and m["test_ood"]["rmse"] > 0
    calibration = metrics["calibration"]["test_ood"]
    assert 0 <= calibration["coverage_present"] <= 1
    assert calibration["interval_scale"] == metrics["interval_scale"] > 0
    assert 0 <= calibration["scaled_coverage_present"] <= 1
    assert 0 <= metrics["open_set"]["test_ood"]["open_recall"] <= 1
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["methods"]["NNLS"] == methods["NNLS"]
    assert "| NNLS |" in (tmp_path / "eval" / "comparison.md").read_text()
    for f in metrics["figures"]:
        assert (tmp_path / "eval" / f).stat().st_size > 10_000
    assert set(metrics["thresholds"]) == set(methods)
    rule = metrics["presence"]  # what the model card takes (scripts/ship_model.py)
    assert rule["spread_weight"] == cfg.presence.spread_weight
    assert rule["threshold"] == metrics["thresholds"]["DefectNet (ensemble of 2)"]
    on_full = metrics["full_cells"]  # the threshold chosen on presence.full_cells, beside val's
    assert rule["full_cells_threshold"] == on_full["threshold"] > 0
    assert on_full["cells"] == len(load_cache(DEMO_CACHE)) and len(on_full["hosts"]) == 8
    assert on_full["distractor_fpr"] <= cfg.presence.max_distractor_fpr
    undoped = metrics["undoped_crystals"]  # every parent, its held-out ones marked
    assert {p for p, u in undoped.items() if u["held_out"]} == set(metrics["ood_parents"])
    assert len(undoped) == 8 and all(u["max_prediction"] >= 0 for u in undoped.values())


class _Echo(torch.nn.Module):
    """Answers each offered candidate with the doped spectrum at bin 10; keeps the offers."""

    offered: list = []

    def forward(self, x, mask, references=None):
        self.offered.append(int(mask.sum()))
        return x[:, 1, 10:11].expand_as(mask) * mask, None


def test_undoped_crystals_offer_four_of_the_parents_candidates_and_compare_to_the_threshold():
    dm = PDoSDataModule(str(DEMO_CACHE), ood_fraction=0.25)
    dm.setup()
    level = float(dm.dataset.pristine[dm.dataset.parent_index == 0][0, 10])
    below = undoped_crystals([_Echo()], dm, level + 1e-3, n_candidates=4, spread_weight=2.0)
    above = undoped_crystals([_Echo()], dm, level - 1e-3, n_candidates=4, spread_weight=2.0)
    first = dm.dataset.parents[0]
    assert below[first]["read_undoped"] and not above[first]["read_undoped"]
    assert below[first]["max_prediction"] == pytest.approx(level)
    assert set(_Echo.offered) == {4}  # four candidates for every parent
    assert below[first]["n_candidates"] == 4


def test_evaluate_refuses_checkpoints_trained_on_another_split(pretrained, tmp_path):
    cfg = compose_config("eval", [f"ckpt_path={pretrained}", "data.seed=1"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
    with pytest.raises(ValueError, match="trained with test-OOD parents"):
        evaluate(cfg)


def test_missing_references_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="stage=references"):
        load_references(tmp_path)


@pytest.mark.slow
def test_compare_methods_runs_from_nothing_to_the_table(tmp_path):
    """The one command: an ensemble multirun, the MLP, then the evaluation (tiny settings)."""
    import subprocess
    import sys

    overrides = '["logger=none","trainer.max_epochs=1"]'
    cmd = [
        sys.executable,
        str(ROOT_DIR / "scripts" / "compare_methods.py"),
        "seeds=[0,1]",
        f"train_overrides={overrides}",
        f"work_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path, timeout=900)
    table = (tmp_path / "eval" / "comparison.md").read_text()
    for method in ("DefectNet (ensemble of 2)", "MLP", "NNLS", "training mean"):
        assert f"| {method} |" in table
    assert len(list((tmp_path / "ensemble").rglob("best*.ckpt"))) == 2


class _DifferenceReader(torch.nn.Module):
    """Answers each candidate with the largest positive difference (doped − pristine): exactly
    0 on an undoped crystal's clean spectra, a little on noisy ones."""

    def forward(self, x, mask, references=None):
        signal = (x[:, 1] - x[:, 0]).clamp_min(0).amax(-1, keepdim=True)
        return signal.expand_as(mask) * mask, None


def test_open_set_threshold_is_chosen_with_noise_and_never_zero():
    from defectnet.calibration import open_set_threshold, undoped_open_set
    from defectnet.data.datamodule import counting_noise

    dm = PDoSDataModule(str(DEMO_CACHE), ood_fraction=0.25)
    dm.setup()
    spectra = dm.dataset.pristine[:4]
    noisy = counting_noise(spectra, 0.03, dm.dataset.grid.step, torch.Generator().manual_seed(0))
    assert torch.allclose(noisy.sum(-1) * dm.dataset.grid.step, torch.ones(4))
    peak = spectra.amax(-1)
    spread = (noisy - spectra).std(-1)
    assert ((spread > 0.002 * peak) & (spread < 0.03 * peak)).all()  # ~level × peak at most
    nets = [_DifferenceReader()]
    clean = open_set_threshold(nets, dm, 0.0, [], max_fpr=0.15)
    with_noise = open_set_threshold(nets, dm, 0.0, [0.03], max_fpr=0.15)
    assert clean > 0 and with_noise > 0
    reads = undoped_open_set(nets, dm, with_noise, 0.0, [0.03])["3%"]
    assert set(reads) == set(dm.splits.ood_parents)
    assert all(isinstance(r["read_undoped"], bool) for r in reads.values())


class _Answers(torch.nn.Module):
    """Gives fixed answers on the offered candidates; reads references only if told to."""

    def __init__(self, answers: torch.Tensor, reads_references: bool = False):
        super().__init__()
        self.answers, self.reads_references = answers, reads_references

    def forward(self, x, mask, references=None):
        return self.answers * mask, None


def test_a_threshold_chosen_on_full_cells_keeps_their_false_alarms_within_the_bound():
    cells = load_cache(DEMO_CACHE)
    absent = (cells.mask > 0) & (cells.targets == 0)
    # the truth, with 40 % of the absent candidates read at 1–5 %, as `full` spectra are read
    noise = torch.rand(cells.targets.shape, generator=torch.Generator().manual_seed(0))
    loud = absent & (noise < 0.4)
    answers = cells.targets + loud * (0.01 + 0.1 * noise)
    for bound in (0.15, 0.3):
        out = full_cells_threshold([_Answers(answers)], cells, None, 0.0, bound)
        assert out["distractor_fpr"] <= bound and out["cells"] == len(cells)
        called = (answers > out["threshold"]) & absent
        assert called.sum() / absent.sum() == pytest.approx(out["distractor_fpr"])
    # a model that reads references needs every host's
    with pytest.raises(ReferenceError, match="no references for .*zincblende-GaAs"):
        full_cells_threshold([_Answers(answers, reads_references=True)], cells, {}, 0.0, 0.15)
