"""Benchmark: is a DefectNet trained on superposed spectra as good as one trained on ``full``?

The two data sets of ``generate=research/phonon_check`` hold the same doped cells, one with ``full``
finite-displacement phonons of every relaxed sample, one from the hosts' defect libraries. The
samples both hold become two caches in one order, so one split serves both; for each seed a
DefectNet is trained on each cache (the same training config), and both are tested on the
``full`` test split. Prints how the spectra themselves agree, then RMSE, R² and element F1 per
run and the ratio of the mean RMSEs (superposed / full). Then the learning curve that only
superposed data can afford (``more``): DefectNets trained on growing sets of superposed cells of
the same hosts, none of them a cell of the ``full`` test split, tested on that split. Asserts
nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, open_dict

from defectnet.cli import CONF_DIR
from defectnet.data.cache import PDoSDataset, load_cache, save_cache
from defectnet.spectra import agreement

SOURCES = ("full", "superposed")
FRACTION_BANDS = (0.0, 0.02, 0.05, 0.12, 0.25, 1.0)  # total dopant fraction bands of the spectra


def of_hosts(cfg: DictConfig, sample_id: str) -> bool:
    """Whether a sample belongs to the parents the benchmark keeps (``cfg.hosts``, null: all);
    a sample id is ``<parent>/<index>``."""
    return cfg.hosts is None or sample_id.rsplit("/", 1)[0] in cfg.hosts


def common_caches(cfg: DictConfig, out: Path) -> dict[str, Path]:
    """Both data sets cut to the samples they share (of the kept parents), in the same order,
    written to ``out``."""
    data = {name: load_cache(cfg[name]) for name in SOURCES}
    ids = {name: ds.meta["sample_ids"] for name, ds in data.items()}
    shared = set(ids["superposed"])
    common = [i for i in ids["full"] if i in shared and of_hosts(cfg, i)]
    print(
        f"samples: full {len(ids['full'])}, superposed {len(ids['superposed'])}, both {len(common)}"
    )
    paths = {}
    for name, ds in data.items():
        position = {sample: row for row, sample in enumerate(ids[name])}
        paths[name] = out / f"{name}.safetensors"
        save_cache(ds.select([position[i] for i in common]), paths[name])
    return paths, len(common)


def spectra_agreement(full: PDoSDataset, superposed: PDoSDataset) -> None:
    """Median cosine and L1 of the doped (and pristine) spectra, superposed against full; the
    doped ones also by the cells' total dopant fraction."""
    for key in ("doped", "pristine"):
        a, b = getattr(superposed, key).numpy(), getattr(full, key).numpy()
        stats = [agreement(x, y, full.grid) for x, y in zip(a, b)]
        cos = np.median([s["cosine"] for s in stats])
        l1 = np.array([s["l1"] for s in stats])
        print(
            f"{key:>9} spectra, superposed vs full: median cosine {cos:.4f}, "
            f"median L1 {np.median(l1):.3f}"
        )
        if key == "doped":
            total = full.targets.sum(1).numpy()
            bands = zip(FRACTION_BANDS[:-1], FRACTION_BANDS[1:])
            parts = [(lo, hi, (total > lo) & (total <= hi)) for lo, hi in bands]
            print(
                "    median L1 by total dopant fraction: "
                + ", ".join(
                    f"{lo:.0%}–{hi:.0%} {np.median(l1[sel]):.3f} ({sel.sum()} cells)"
                    for lo, hi, sel in parts
                    if sel.any()
                )
            )


def train_on(overrides: list[str], cache: Path, seed: int, out: Path) -> Path:
    """Train one DefectNet on ``cache``; returns its best checkpoint (reused when present)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from defectnet.training import train

    found = sorted(out.glob("checkpoints/best*.ckpt"))
    if found:
        return found[-1]
    overrides = [*overrides, f"data.path={cache}", f"seed={seed}", "test=false"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train_cfg = compose(config_name="train", overrides=overrides)
    with open_dict(train_cfg):
        train_cfg.paths.output_dir = str(out)
    train(train_cfg)
    return sorted(out.glob("checkpoints/best*.ckpt"))[-1]


def test_split(cfg: DictConfig, cache: Path) -> tuple:
    """A cache's test split as one batch, its sample ids, and the training-mean RMSE on it (both
    caches hold the same samples in the same order, so they split alike)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from defectnet.evaluation import split_truth, train_mean_predict
    from defectnet.metrics import split_metrics

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train_cfg = compose(config_name="train", overrides=[*cfg.split])
    with open_dict(train_cfg):
        train_cfg.data.path = str(cache)
    dm = instantiate(train_cfg.data)
    dm.setup("test")
    ids = [dm.dataset.meta["sample_ids"][i] for i in dm.splits.test_id]
    return (
        dm.split_tensors("test_id"),
        ids,
        split_metrics(train_mean_predict(dm, "test_id"), *split_truth(dm, "test_id"), 0.0)["rmse"],
    )


def curve_caches(cfg: DictConfig, held_out: list[str], out: Path) -> dict[int, Path]:
    """Caches of ``cfg.curve.sizes`` superposed cells from ``cfg.more``, none of them in
    ``held_out`` (the ``full`` test split); each size's cells include the smaller sizes'."""
    more = load_cache(cfg.more)
    excluded = set(held_out)
    rows = [
        r for r, i in enumerate(more.meta["sample_ids"]) if i not in excluded and of_hosts(cfg, i)
    ]
    rows = np.random.default_rng(0).permutation(rows)
    paths = {}
    for size in cfg.curve.sizes:
        if size > len(rows):
            print(f"learning curve: {size} cells asked, {len(rows)} available; skipped")
            continue
        paths[int(size)] = out / f"more-{size}.safetensors"
        save_cache(more.select(sorted(rows[:size].tolist())), paths[int(size)])
    return paths


def select(batch, rows):
    """The rows of a test batch that ``rows`` (a boolean tensor) marks."""
    return type(batch)(*(field[rows] for field in batch))


def test_on(checkpoint: Path, batch) -> dict:
    """RMSE, R², element F1 and distractor FPR of a checkpoint on one test batch."""
    import torch

    from defectnet.metrics import split_metrics
    from defectnet.model.checkpoint import entry_thresholds, network_from_checkpoint

    net = network_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        pred, _ = net(batch.inputs(), batch.candidates)
    entry = torch.load(checkpoint, map_location="cpu", weights_only=True)["defectnet"]
    threshold = entry_thresholds(entry).guided
    return split_metrics(pred.numpy(), batch.targets.numpy(), batch.candidates.numpy(), threshold)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/superposed_training")
def main(cfg: DictConfig) -> None:
    work = Path(cfg.work_dir)
    caches, n_common = common_caches(cfg, work)
    spectra_agreement(load_cache(caches["full"]), load_cache(caches["superposed"]))
    if cfg.spectra_only:
        return
    # checkpoints are reused only for the same data sets and samples
    hosts = None if cfg.hosts is None else list(cfg.hosts)
    sources = json.dumps([cfg.full, cfg.superposed, cfg.more, hosts])
    runs = work / f"{n_common}-samples-{hashlib.sha1(sources.encode()).hexdigest()[:8]}"
    rows = []
    for variant, recipe in cfg.variants.items():
        for seed in cfg.seeds:
            for source in SOURCES:
                out = runs / variant / f"{source}-seed{seed}"
                best = train_on([*recipe, *cfg.split], caches[source], int(seed), out)
                rows.append((variant, source, int(seed), best))
    test, test_ids, baseline = test_split(cfg, caches["full"])
    curve = []
    if cfg.more:
        recipe = [*cfg.variants[cfg.curve.variant], *cfg.curve.split]
        for size, cache in curve_caches(cfg, test_ids, work).items():
            for seed in cfg.curve.seeds:
                out = runs / "curve" / f"superposed-{size}-seed{seed}"
                curve.append((size, int(seed), train_on(recipe, cache, int(seed), out)))
    rows = [(v, source, seed, test_on(best, test)) for v, source, seed, best in rows]
    n_test = int(test.targets.shape[0])
    print(f"\ntest split of the full data set: {n_test} samples; training-mean RMSE {baseline:.4f}")
    header = ("recipe", "trained on", "seed", "RMSE", "R²", "F1", "dist. FPR")
    print("{:<12}{:<12}{:>5}{:>9}{:>8}{:>7}{:>11}".format(*header))
    for variant, source, seed, m in rows:
        print(
            f"{variant:<12}{source:<12}{seed:>5}{m['rmse']:>9.4f}{m['r2']:>8.3f}{m['f1']:>7.3f}"
            f"{m['distractor_fpr']:>11.3f}"
        )
    for variant in cfg.variants:
        mean = {}
        for source in SOURCES:
            group = [m for v, src, _, m in rows if v == variant and src == source]
            mean[source] = float(np.mean([m["rmse"] for m in group]))
            r2 = np.mean([m["r2"] for m in group])
            print(f"{variant:<12}{source:<12}{'mean':>5}{mean[source]:>9.4f}{r2:>8.3f}")
        print(
            f"{variant}: RMSE superposed / full {mean['superposed'] / mean['full']:.3f} "
            "(within 10 %: ≤ 1.10)"
        )
    if curve:
        # the same test cells with superposed spectra: how much is lost from superposed to full
        same_cells, superposed_ids, _ = test_split(cfg, caches["superposed"])
        assert superposed_ids == test_ids
        print(f"\nlearning curve ({cfg.curve.variant}): superposed cells, the same test cells")
        print(
            "{:>7}{:>6}{:>11}{:>8}{:>7}{:>11}{:>17}{:>8}".format(
                "cells", "seed", "full RMSE", "R²", "F1", "dist. FPR", "superposed RMSE", "R²"
            )
        )
        for size, seed, best in curve:
            m, ms = test_on(best, test), test_on(best, same_cells)
            print(
                f"{size:>7}{seed:>6}{m['rmse']:>11.4f}{m['r2']:>8.3f}{m['f1']:>7.3f}"
                f"{m['distractor_fpr']:>11.3f}{ms['rmse']:>17.4f}{ms['r2']:>8.3f}"
            )
        # where superposition was checked against full (≤ dilute_max) and beyond it
        total = test.targets.sum(1)
        dilute = total <= cfg.curve.dilute_max
        bands = {f"≤ {cfg.curve.dilute_max:.0%}": dilute, f"> {cfg.curve.dilute_max:.0%}": ~dilute}
        print("\nthe same, by the test cells' total dopant fraction (full RMSE R² | superposed)")
        for band, rows in bands.items():
            part, part_s = (select(b, rows) for b in (test, same_cells))
            print(f"{band} ({int(rows.sum())} test cells)")
            for size, seed, best in curve:
                m, ms = test_on(best, part), test_on(best, part_s)
                print(
                    f"{size:>7}{seed:>6}{m['rmse']:>11.4f}{m['r2']:>8.3f}  |"
                    f"{ms['rmse']:>9.4f}{ms['r2']:>8.3f}"
                )


if __name__ == "__main__":
    main()
