"""Benchmark: does a generation recipe make models that read real crystals better?

Each recipe of conf/bench/recipe.yaml names a pretraining set, the realism cells' superposed
twins made its way and the realism hosts' references made its way. Every recipe trains one
reference-informed network (``train_overrides``, through ``train.py``) on the pretraining
parents all the recipes' sets hold so far, with their references; then that network and
two-point NNLS read the realism set's ``full`` cells (those whose relaxation converged, of the
hosts every recipe has references for) and the recipe's own twins of them, each with the
recipe's references. Same parents, same training, same cells: only the recipe differs, so a
partly made set can already be compared with the one it replaces. The network's presence
threshold is its own (chosen on its val split) and, with ``calibration`` (a preset of `full`
cells of pretraining hosts, generate=presence_calibration), also the one chosen on those cells;
NNLS is scored on concentrations only. Each
recipe trains one network per seed (``seeds``): the table gives the mean and the range.

    python scripts/bench_recipe.py [docs=true]

Stopped part-way, the same command with ``hydra.run.dir=<its output folder>`` trains only the
seeds that have no metrics.json yet.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from defectnet.atomic import write_json_atomic, write_text_atomic
from defectnet.cli import CONF_DIR
from defectnet.data.cache import PDoSDataset, network_input, save_cache
from defectnet.data.presets import converged_dataset, preset_dataset
from defectnet.data.references import (
    FAITHFUL_DENSE,
    NNLS_VARIANTS,
    holds_level,
    level_entry,
    load_references,
    reference_matrix,
)
from defectnet.evaluation import nnls_unmix
from defectnet.metrics import best_threshold, concentration_bands, split_metrics
from defectnet.model.checkpoint import load_network

log = logging.getLogger("bench_recipe")
ROOT = Path(__file__).resolve().parents[1]
COLUMNS = (("RMSE", "rmse", "{:.4f}"), ("R²", "r2", "{:.2f}"))
DOCS_INTRO = """# Recipe benchmark: the same training on sets made different ways

Each recipe (conf/bench/recipe.yaml) trains one reference-informed network
(`experiment=pretrain_references`) on the shared parents of its pretraining set with their
references, then it and two-point NNLS read the realism set's `full` cells and the recipe's own
superposed twins of them, with the realism hosts' references made the recipe's way. F1 and FPR
at the network's own val threshold, and where a row says so at the one chosen on `full` cells of
training hosts (generate=presence_calibration); NNLS on concentrations only; predicting zero for
scale.
Newest run first.
"""
PRESENCE = (("element F1", "f1", "{:.2f}"), ("distractor FPR", "distractor_fpr", "{:.2f}"))
# the network read with FAITHFUL_DENSE's stand-in, where the realism references hold it
NETWORK_FAITHFUL = "network, alloy cell read as dense"
# a network scored at the presence threshold chosen on the calibration cells (``calibration``)
CALIBRATED = "threshold from training hosts' `full` cells"


def rows_of(ds: PDoSDataset, keep) -> list[int]:
    """The rows of ``ds`` whose sample id ``keep`` accepts."""
    return [i for i, sample_id in enumerate(ds.meta["sample_ids"]) if keep(sample_id)]


def host_of(sample_id: str) -> str:
    return sample_id.split("/")[0]


def train(
    cfg: DictConfig, name: str, ds: PDoSDataset, references: str, out: Path, extra=()
) -> list[Path]:
    """One network per seed trained on ``ds`` with ``references`` by ``train.py`` (with the
    recipe's own ``extra`` overrides after the common ones); their best checkpoints."""
    cache = out / name / "dataset.safetensors"
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_cache(ds, cache)
    best = []
    for seed in cfg.seeds:
        run = out / name / f"seed{seed}"
        command = [
            sys.executable,
            str(ROOT / "train.py"),
            *cfg.train_overrides,
            *extra,
            f"seed={seed}",
            f"data.path={cache}",
            f"data.references={references}",
            f"hydra.run.dir={run}",
        ]
        if not (run / "metrics.json").exists():  # a finished seed of a resumed run is kept
            log.info("%s, seed %d: %d samples of %d parents", name, seed, len(ds), len(ds.parents))
            subprocess.run(command, check=True, cwd=ROOT)
        best.append(sorted((run / "checkpoints").glob("best_epoch_*.ckpt"))[-1])
    return best


def holding(references: dict[str, dict], levels: list[str]) -> set[str]:
    """The hosts whose every reference holds each of ``levels`` (``require_levels``)."""
    return {
        host
        for host, ref in references.items()
        if all(
            level_entry(e, level) is not None for e in ref["dopants"].values() for level in levels
        )
    }


def readings(net, ds: PDoSDataset, references: dict[str, dict]) -> dict[str, torch.Tensor]:
    """The reference rows ``net`` reads each cell of ``ds`` with: its host's ``references`` as
    made and, for a network that reads the dense level, with FAITHFUL_DENSE's stand-in where the
    references hold it."""
    hosts = [ds.parents[k] for k in ds.parent_index.tolist()]
    rows = {
        "network": torch.stack([reference_matrix(references[h], ds.grid.n_points) for h in hosts])
    }
    if "dense" in net.levels and any(
        holds_level(references[h], FAITHFUL_DENSE["dense"]) for h in hosts
    ):
        rows[NETWORK_FAITHFUL] = torch.stack(
            [
                reference_matrix(references[h], ds.grid.n_points, stand_ins=FAITHFUL_DENSE)
                for h in hosts
            ]
        )
    return rows


def answers(net, ds: PDoSDataset, rows: torch.Tensor) -> np.ndarray:
    return net(network_input(ds.pristine, ds.doped, ds.composition), ds.mask, rows)[0].numpy()


@torch.no_grad()
def read(
    checkpoints: list[Path],
    ds: PDoSDataset,
    references: dict[str, dict],
    calibration: tuple[PDoSDataset, dict[str, dict]] | None = None,
    max_fpr: float | None = None,
) -> dict:
    """Each network's figures on ``ds`` (a list, one per checkpoint) and NNLS's, every cell with
    its host's ``references``. With ``calibration`` (`full` cells of training hosts and their
    references) each network reading is scored a second time at the presence threshold chosen
    on those cells (best F1 at distractor FPR ≤ ``max_fpr``), beside its own val threshold."""
    target, mask = ds.targets.numpy(), ds.mask.numpy()
    own = [references[ds.parents[k]] for k in ds.parent_index.tolist()]
    methods = {"network": []}
    for checkpoint in checkpoints:
        net, _, thresholds = load_network(checkpoint)
        calibrating = readings(net, *calibration) if calibration is not None else {}
        for name, rows in readings(net, ds, references).items():
            pred = answers(net, ds, rows)
            methods.setdefault(name, []).append(
                split_metrics(pred, target, mask, thresholds.guided)
            )
            if name in calibrating:
                cells = calibration[0]
                found = answers(net, cells, calibrating[name])
                threshold = best_threshold(
                    found, cells.targets.numpy(), cells.mask.numpy(), max_fpr
                )
                scored = split_metrics(pred, target, mask, threshold)
                methods.setdefault(f"{name}, {CALIBRATED}", []).append(
                    {**scored, "threshold": threshold}
                )
    spectra = torch.stack([ds.pristine, ds.doped], dim=1)
    methods["NNLS, two-point"] = [split_metrics(nnls_unmix(spectra, ds.mask, own), target, mask, 0)]
    for name, levels in NNLS_VARIANTS.items():
        if any(holds_level(ref, levels[-1]) for ref in own):
            unmixed = nnls_unmix(spectra, ds.mask, own, levels)
            methods[name] = [split_metrics(unmixed, target, mask, 0.0)]
    methods["predict zero"] = [split_metrics(np.zeros_like(target), target, mask, 0.0)]
    return methods


def own_test(checkpoint: Path) -> dict[str, dict]:
    """Each method's test-OOD figures on the recipe's own kind of spectra (the held-out shared
    parents; train.py's metrics.json)."""
    path = checkpoint.parents[1] / "metrics.json"
    methods = json.loads(path.read_text()).get("methods", {}) if path.exists() else {}
    return {m: splits["test_ood"] for m, splits in methods.items() if "test_ood" in splits}


def spread(runs: list[dict], key: str, form: str) -> str:
    """The mean over runs, with the range where there is more than one."""
    values = np.array([m[key] for m in runs])
    text = form.format(values.mean())
    if len(values) > 1:
        text += f" ({form.format(values.min())}–{form.format(values.max())})"
    return text


def own_table(trained: dict) -> str:
    lines = ["| recipe | method | test-OOD RMSE | R² |", "|---|---|---|---|"]
    for name, runs in trained.items():
        for method in runs[0]["test_ood"]:
            figures = [r["test_ood"][method] for r in runs]
            lines.append(
                f"| {name} | {method} | {spread(figures, 'rmse', '{:.4f}')} "
                f"| {spread(figures, 'r2', '{:.2f}')} |"
            )
    return "\n".join(lines)


def band_table(results: dict) -> str:
    """RMSE per candidate entry by its true concentration (absent, then the bands of
    ``metrics.concentration_bands``): where each method's error lies."""
    bins = [("absent", "rmse_absent")]
    bins += [(f"{100 * lo:g}–{100 * hi:g} %", k) for k, (lo, hi) in concentration_bands().items()]
    lines = [
        "| recipe | spectra | method | " + " | ".join(b for b, _ in bins) + " |",
        "|---|---|---|" + "---|" * len(bins),
    ]
    for (recipe, spectra, _, _), methods in results.items():
        for method, runs in methods.items():
            values = [
                spread(runs, key, "{:.4f}") if all(key in r for r in runs) else "—"
                for _, key in bins
            ]
            lines.append(f"| {recipe} | {spectra} | {method} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def table(results: dict) -> str:
    lines = [
        "| recipe | spectra | cells (hosts) | method | RMSE | R² | element F1 | distractor FPR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (recipe, spectra, cells, hosts), methods in results.items():
        for method, runs in methods.items():
            values = [spread(runs, k, f) for _, k, f in COLUMNS]
            values += [
                spread(runs, k, f) if method.startswith("network") else "—" for _, k, f in PRESENCE
            ]
            lines.append(
                f"| {recipe} | {spectra} | {cells} ({hosts}) | {method} | "
                + " | ".join(values)
                + " |"
            )
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/recipe")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.paths.output_dir)
    recipes = cfg.recipes
    pretrain = {name: preset_dataset(r.pretrain) for name, r in recipes.items()}
    levels = list(cfg.require_levels)
    shared = set.intersection(
        *(
            set(pretrain[name].parents) & holding(load_references(r.references), levels)
            for name, r in recipes.items()
        )
    )
    if not shared:
        raise SystemExit("bench_recipe: no pretraining parent is in every recipe's set yet")
    realism_refs = {name: load_references(r.realism_references) for name, r in recipes.items()}
    covered = set.intersection(*(holding(refs, levels) for refs in realism_refs.values()))
    full = converged_dataset(cfg.full)
    twins = {name: preset_dataset(r.twins) for name, r in recipes.items()}
    cells = {i for i in full.meta["sample_ids"] if host_of(i) in covered}
    twin_cells = cells.intersection(*(set(t.meta["sample_ids"]) for t in twins.values()))
    calibration_cells = converged_dataset(cfg.calibration) if cfg.calibration else None
    results, trained = {}, {}
    for name, r in recipes.items():
        ds = pretrain[name]
        subset = ds.select(rows_of(ds, lambda i: host_of(i) in shared))
        checkpoints = train(cfg, name, subset, r.references, out, r.get("train", []))
        trained[name] = [{"checkpoint": str(c), "test_ood": own_test(c)} for c in checkpoints]
        refs = realism_refs[name]
        calibration = None
        if calibration_cells is not None and r.get("calibration_references"):
            calibration = (calibration_cells, load_references(r.calibration_references))
        sets = {"full": full.select(rows_of(full, cells.__contains__))}
        if twin_cells != cells:  # the twins hold fewer cells: full on those too, to compare
            sets["full, the twins' cells"] = full.select(rows_of(full, twin_cells.__contains__))
        sets["twins"] = twins[name].select(rows_of(twins[name], twin_cells.__contains__))
        for spectra, ds_read in sets.items():
            if len(ds_read):
                hosts = len({ds_read.parents[k] for k in ds_read.parent_index.tolist()})
                key = (name, spectra, len(ds_read), hosts)
                results[key] = read(
                    checkpoints, ds_read, refs, calibration, cfg.presence.max_distractor_fpr
                )
    summary = (
        f"{len(shared)} shared pretraining parents; {len(cells)} relaxed `full` cells of "
        f"{len(covered)} hosts every recipe has references for (levels {', '.join(levels)}), "
        f"{len(twin_cells)} of them with every recipe's twin"
    )
    text = table(results)
    bands = band_table(results)
    own = own_table(trained)
    log.info(
        "%s\n\n%s\n\nby true concentration:\n%s\n\non their own kind of spectra:\n%s",
        summary,
        text,
        bands,
        own,
    )
    write_json_atomic(
        out / "metrics.json",
        {
            "date": datetime.date.today().isoformat(),
            "shared_parents": sorted(shared),
            "trained": trained,
            "results": [
                {"recipe": k[0], "spectra": k[1], "cells": k[2], "hosts": k[3], **v}
                for k, v in results.items()
            ],
        },
        indent=2,
    )
    if cfg.docs:
        title = f"{datetime.date.today().isoformat()}: {' against '.join(recipes)}"
        section = f"""## {title} on {len(shared)} shared parents

`python scripts/bench_recipe.py docs=true` (recipes {", ".join(recipes)}), {platform.machine()}
CPU: {summary}. Networks: the mean over seeds {list(cfg.seeds)} (range in brackets).

{text}

RMSE per candidate entry by its true concentration (where the error lies):

{bands}

On their own kind of spectra (superposed, the shared parents held out by each run's split):

{own}

Shared parents: {", ".join(sorted(shared))}.
"""
        write_docs_section(ROOT / "docs" / "benchmarks" / "recipe.md", section)


def write_docs_section(path: Path, section: str) -> None:
    """Put ``section`` first among the page's dated sections; earlier runs stay below it."""
    text = path.read_text() if path.exists() else ""
    intro, _, older = text.partition("\n## ")
    intro = intro.rstrip() or DOCS_INTRO.rstrip()
    older = f"\n## {older}" if older else ""
    write_text_atomic(path, f"{intro}\n\n{section.rstrip()}\n{older}")


if __name__ == "__main__":
    main()
