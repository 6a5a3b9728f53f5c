"""The reference-informed network: its in-network unmixing, its start at NNLS, the references
the data module serves with each sample, and a short training run to evaluation."""

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from scipy.optimize import nnls

from defectnet.data.datamodule import Batch, PDoSDataModule, SpectrumAugmentation
from defectnet.data.references import (
    FAITHFUL_DENSE,
    LEVELS,
    NNLS_VARIANTS,
    THREE_POINT,
    TWO_POINT,
    host_references,
    load_references,
    reference_columns,
    reference_matrix,
)
from defectnet.elements import DOPANTS, candidate_vector, composition_vector
from defectnet.errors import UserError
from defectnet.evaluation import nnls_unmix
from defectnet.model.checkpoint import load_network
from defectnet.model.reference_defectnet import ReferenceDefectNet
from defectnet.model.unmixing import nonnegative_unmix
from defectnet.spectra import EnergyGrid

from .conftest import DEMO_CACHE, DEMO_REFERENCES, compose_config


def test_in_network_unmixing_matches_scipy_nnls_on_the_active_columns():
    g = torch.Generator().manual_seed(0)
    b, k, n = 12, 56, 100
    columns = torch.randn(b, k, n, generator=g) * 0.1
    active = torch.rand(b, k, generator=g) < 0.1
    active[:, 0] = True
    truth = torch.rand(b, k, generator=g) * active
    target = (truth[..., None] * columns).sum(1) + 0.01 * torch.randn(b, n, generator=g)
    shares, residual = nonnegative_unmix(target, columns, active)
    assert (shares[~active] == 0).all()
    for row in range(b):
        idx = active[row].nonzero().ravel().numpy()
        want, want_residual = nnls(
            columns[row, idx].double().numpy().T, target[row].double().numpy()
        )
        assert np.allclose(shares[row, idx].numpy(), want, atol=1e-4)
        assert abs(residual[row].item() - want_residual) < 1e-4


def _two_dopant_host():
    """A host with Ge and C references (Sn offered without one) and exact mixtures: C responds
    linearly, Ge quadratically in its concentration c (0.01 (c A + c² Q)), with a dilute and a
    high-concentration reference for Ge (and a dense one, which two-level networks do not read)
    and a dilute one for C."""
    e = EnergyGrid().energies
    peak = lambda at, w: np.exp(-0.5 * ((e - at) / w) ** 2)  # noqa: E731
    pristine = peak(60, 8) / (peak(60, 8).sum() * EnergyGrid().step)
    linear = {"Ge": peak(30, 5) - peak(60, 8), "C": peak(90, 5) - peak(60, 8)}
    bend = {"Ge": 5 * (peak(40, 6) - peak(30, 5)), "C": 0 * e}

    def spectrum(el, c):
        return pristine + 0.01 * (c * linear[el] + c * c * bend[el])

    def entry(el, c):
        return {"concentration": c, "spectrum": spectrum(el, c).tolist()}

    ref = {
        "parent_id": "host",
        "pristine": pristine.tolist(),
        "dopants": {
            "Ge": entry("Ge", 1 / 64) | {"high": entry("Ge", 0.1), "dense": entry("Ge", 0.25)},
            "C": entry("C", 1 / 64),
        },
    }
    truth = [(0.05, 0.0), (0.02, 0.1), (0.0, 0.03)]
    doped = [spectrum("Ge", a) + spectrum("C", c) - pristine for a, c in truth]
    spectra = torch.tensor(
        np.stack([[pristine, d, composition_vector(["Si"])] for d in doped]), dtype=torch.float32
    )
    mask = torch.tensor(np.tile(candidate_vector(["Ge", "C", "Sn"]), (len(truth), 1)))
    return ref, spectra, mask.float(), truth


def test_an_untrained_network_answers_two_point_nnls_and_needs_references(tmp_path):
    ref, spectra, mask, truth = _two_dopant_host()
    (tmp_path / "host.json").write_text(__import__("json").dumps(ref))
    references = host_references(tmp_path, ["host"], 100).expand(len(truth), -1, -1)
    assert references.shape == (len(truth), len(LEVELS) * 56, 100)  # every level; it reads two
    net = ReferenceDefectNet().eval()
    with torch.no_grad():
        conc, attention = net(spectra, mask, references)
        dilute = (torch.arange(len(LEVELS) * 56) < 56)[:, None]
        dilute_only, _ = net(spectra, mask, references * dilute)
    ge, c, sn = (DOPANTS.index(s) for s in ("Ge", "C", "Sn"))
    # between its two reference concentrations a quadratic response is unmixed exactly
    assert np.allclose(conc[:, ge].numpy(), [a for a, _ in truth], atol=2e-4)
    assert np.allclose(conc[:, c].numpy(), [b for _, b in truth], atol=2e-4)
    assert (conc[:, sn] == 0).all() and (conc * (1 - mask) == 0).all()  # no reference; not offered
    assert abs(dilute_only[0, ge].item() - 0.05) > 2e-3  # the dilute reference alone misses
    assert attention.shape == (len(truth), 100)
    with pytest.raises(UserError, match="references="):
        net(spectra, mask)
    with pytest.raises(UserError, match="rows per sample"):
        net(spectra, mask, references[:, :56])


def test_a_network_reads_the_levels_it_was_built_with(tmp_path):
    ref, spectra, mask, truth = _two_dopant_host()
    (tmp_path / "host.json").write_text(__import__("json").dumps(ref))
    references = host_references(tmp_path, ["host"], 100).expand(len(truth), -1, -1)
    rows = torch.arange(len(LEVELS) * 56)
    no_high = references * ((rows < 56) | (rows >= 112))[:, None]
    three, two = ReferenceDefectNet(levels=THREE_POINT).eval(), ReferenceDefectNet().eval()
    with torch.no_grad():
        # untrained, each answers NNLS over its own levels' references
        for net, levels in ((three, THREE_POINT), (two, TWO_POINT)):
            want = nnls_unmix(spectra[:, :2], mask, [ref] * len(truth), levels)
            assert np.allclose(net(spectra, mask, references)[0].numpy(), want, atol=2e-4)
        # without the high-concentration rows the dilute and dense ones still span Ge's
        # quadratic response; a two-level network has only the dilute one left
        ge = DOPANTS.index("Ge")
        read = three(spectra, mask, no_high)[0][:, ge]
        assert np.allclose(read, [a for a, _ in truth], atol=2e-4)
        assert abs(two(spectra, mask, no_high)[0][0, ge].item() - 0.05) > 2e-3
    with pytest.raises(UserError, match="model.model.levels"):
        ReferenceDefectNet(levels=["dilute", "sparse"])


def test_an_alloy_cell_is_read_against_its_own_pristine_spectrum():
    # an alloy entry's cell is not the host's supercell: its difference is from the pristine
    # spectrum of its own cell, which it carries
    ref, spectra, mask, _ = _two_dopant_host()
    ge = ref["dopants"]["Ge"]
    own = 1.1 * np.asarray(ref["pristine"])
    spectrum = np.asarray(ge["dense"]["spectrum"]) + own - np.asarray(ref["pristine"])
    ge["alloy"] = {"concentration": 0.25, "spectrum": spectrum.tolist(), "pristine": own.tolist()}
    slot = DOPANTS.index("Ge")
    (dense,), (alloy,) = (reference_columns(ref, [slot], lv) for lv in ("dense", "alloy"))
    assert np.allclose(alloy, dense)
    rows = reference_matrix(ref, 100).unflatten(0, (len(LEVELS), -1))
    assert torch.allclose(rows[LEVELS.index("alloy"), slot], rows[LEVELS.index("dense"), slot])
    assert not rows[LEVELS.index("alloy"), DOPANTS.index("C")].any()
    # the NNLS that reads it (a baseline wherever references hold it) reads it as such
    read = {k: nnls_unmix(spectra[:, :2], mask, [ref] * 3, v) for k, v in NNLS_VARIANTS.items()}
    assert np.allclose(read["NNLS, alloy"], read["NNLS, three-point"], atol=1e-6)


def test_an_alloy_cell_stands_in_for_the_dense_one_only_where_a_dopant_has_it():
    # a network trained on superposed cells reads a real crystal's spectrum with the alloy cell
    # (relaxed, computed in full) in its dense slot; a dopant without one keeps its dense cell
    ref, _, _, _ = _two_dopant_host()
    ref["dopants"]["C"]["dense"] = ref["dopants"]["C"] | {"concentration": 0.2}
    ge = ref["dopants"]["Ge"]
    alloy = 1.3 * np.asarray(ge["dense"]["spectrum"]) - 0.3 * np.asarray(ref["pristine"])
    ge["alloy"] = {"concentration": 0.25, "spectrum": alloy.tolist(), "pristine": ref["pristine"]}
    plain = reference_matrix(ref, 100).unflatten(0, (len(LEVELS), -1))
    read = reference_matrix(ref, 100, stand_ins=FAITHFUL_DENSE).unflatten(0, (len(LEVELS), -1))
    ge_slot, c_slot, dense = DOPANTS.index("Ge"), DOPANTS.index("C"), LEVELS.index("dense")
    assert torch.allclose(read[dense, ge_slot], plain[LEVELS.index("alloy"), ge_slot])
    assert torch.allclose(read[dense, ge_slot], 1.3 * plain[dense, ge_slot])
    assert torch.equal(read[dense, c_slot], plain[dense, c_slot]) and plain[dense, c_slot].any()
    others = [i for i in range(len(LEVELS)) if i != dense]
    assert torch.equal(read[others], plain[others])


def test_samples_carry_their_hosts_references_through_augmentation():
    dm = PDoSDataModule(str(DEMO_CACHE), batch_size=16, references=str(DEMO_REFERENCES))
    dm.setup()
    batch = dm.split_tensors("train")
    assert batch.references.shape == (len(dm.splits.train), len(LEVELS) * 56, 100)
    want = host_references(DEMO_REFERENCES, dm.dataset.parents, 100)[batch.parent]
    assert torch.equal(batch.references, want)
    loaded = load_references(DEMO_REFERENCES)
    parent = dm.dataset.parents[int(batch.parent[0])]
    offered = [s for s in loaded[parent]["dopants"]]
    assert batch.references[0, DOPANTS.index(offered[0])].abs().sum() > 0
    loader = next(iter(dm.train_dataloader()))
    assert isinstance(loader, Batch) and loader.references.shape[1:] == (len(LEVELS) * 56, 100)
    # a stretched sample's difference is still its concentration times the stretched reference
    augment = SpectrumAugmentation(max_energy_stretch=0.2, energy_step=dm.dataset.grid.step)
    pristine = batch.spectra[:1, 0]
    slot = DOPANTS.index(offered[0])
    doped = pristine + 0.05 * batch.references[0, slot]
    one = Batch(
        torch.stack([pristine, doped], dim=1),
        batch.composition[:1],
        batch.candidates[:1],
        batch.targets[:1],
        batch.n_dopants[:1],
        batch.parent[:1],
        batch.references[:1],
    )
    torch.manual_seed(3)  # stretch 1/1.2: near 1 it would leave the reference as it was
    out = augment(one)
    diff = out.spectra[0, 1] - out.spectra[0, 0]
    error = lambda ref: float((diff - 0.05 * ref).norm() / diff.norm())  # noqa: E731
    # under 1 % off (each spectrum is renormalised); the unstretched reference misses by > 100 %
    assert error(out.references[0, slot]) < 0.05 and error(one.references[0, slot]) > 0.5


@pytest.mark.slow
def test_a_short_training_run_reads_references_and_evaluates(reference_checkpoint, tmp_path):
    from defectnet.evaluation import evaluate

    network, _, _ = load_network(reference_checkpoint)
    assert isinstance(network, ReferenceDefectNet)
    cfg = compose_config(
        "eval", [f"ckpt_path={reference_checkpoint}", f"references={DEMO_REFERENCES}"]
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
    metrics = evaluate(cfg)
    assert {"DefectNet", "NNLS"} <= set(metrics["methods"])
    assert metrics["methods"]["DefectNet"]["test_ood"]["rmse"] > 0
    assert len(metrics["undoped_crystals"]) == 8  # the undoped check reads references too


def test_a_hosts_reference_overlap_says_how_alike_its_dopants_signatures_are():
    from defectnet.data.references import reference_overlap

    pristine = np.zeros(100)

    def entry(centre: float, scale: float, c: float) -> dict:
        """A dopant at concentration ``c`` whose unit signature is a bump at ``centre``."""
        bump = scale * np.exp(-0.5 * ((np.arange(100) - centre) / 2.0) ** 2)
        return {"concentration": c, "spectrum": (pristine + c * bump).tolist()}

    def host(**dopants) -> dict:
        return {"pristine": pristine.tolist(), "dopants": dopants}

    assert reference_overlap(host(Ga=entry(20, 1, 0.01), In=entry(60, 1, 0.02))) < 1e-6
    assert reference_overlap(host(Ga=entry(20, 1, 0.01), In=entry(20, 3, 0.02))) == pytest.approx(1)
    assert np.isnan(reference_overlap(host(Ga=entry(20, 1, 0.01))))
