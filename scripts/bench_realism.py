"""Benchmark: how well DefectNet reads spectra that were not made by its own approximation.

The realism set (``generate=realism_central``) holds doped cells of real crystals that are not
pretraining parents, each relaxed and its phonons from ``full`` finite displacements (central
differences), read against the pristine spectrum of the same supercell;
``generate=realism_superposed`` holds the same cells made the pretraining set's way (each
host's defect library). Every method is scored
on the cells both sets hold, on each kind of spectrum, so the approximation's share of any error
shows: the shipped reference-informed and spectrum-only ensembles (with the presence rule and
interval widening of their cards, as defectnet-predict applies them: the threshold chosen on
`full` cells of training hosts where a card records one), one member, two-point NNLS on the
hosts' references, the pretraining mean and "predict zero". NNLS's and the mean's presence
thresholds are chosen on the pretraining val split. Then, per cell, the difference
spectrum (doped − pristine) of the superposed twin and of the linear sum of the host's dilute
references against ``full``'s: cosine and norm ratio by total dopant fraction. Prints the
tables and writes them (metrics.json) with every cell's answers (cells.csv) to its run folder;
``docs=true`` writes them with a parity figure to ``docs/benchmarks/<truth preset>.md``,
``cards=true`` into the shipped models' cards.

    python scripts/bench_realism.py [docs=true] [cards=true]
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig

from defectnet import difference
from defectnet.atomic import write_json_atomic, write_text_atomic
from defectnet.cli import CONF_DIR
from defectnet.data.cache import PDoSDataset
from defectnet.data.datamodule import Batch
from defectnet.data.presets import preset_dataset, records_dir, unconverged_samples
from defectnet.data.references import (
    host_references,
    load_references,
    reference_columns,
    reference_matrix,
    reference_overlap,
    reference_stand_ins,
)
from defectnet.elements import DOPANTS
from defectnet.ensemble import EnsemblePrediction
from defectnet.evaluation import nnls_unmix
from defectnet.metrics import best_threshold, coverage, split_metrics
from defectnet.model.checkpoint import load_network
from defectnet.model.pretrained import REFERENCE_MODEL, card_in, members_in, pretrained_dir
from defectnet.predict import card_threshold, interval_widening

log = logging.getLogger("bench_realism")
KINDS = ("full", "superposed")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Answer:
    """A method's answer on a batch: concentrations, what presence is called on and where,
    and, for an ensemble, its widened interval."""

    mean: np.ndarray
    score: np.ndarray
    threshold: float
    interval: tuple[np.ndarray, np.ndarray] | None = None


def paired(full: PDoSDataset, twin: PDoSDataset, hosts: set[str], left_out: set[str]):
    """The two sets cut to the cells both hold, of hosts with references and not left out, in
    one order."""
    ids_f, ids_t = full.meta["sample_ids"], twin.meta["sample_ids"]
    common = [
        i for i in ids_f if i in set(ids_t) and i.split("/")[0] in hosts and i not in left_out
    ]
    return (
        full.select([ids_f.index(i) for i in common]),
        twin.select([ids_t.index(i) for i in common]),
    )


def batch_of(ds: PDoSDataset, references: str, stand_ins: dict[str, str]) -> Batch:
    refs = host_references(references, ds.parents, ds.grid.n_points, stand_ins)
    return Batch(
        torch.stack([ds.pristine, ds.doped], dim=1),
        ds.composition,
        ds.mask,
        ds.targets,
        (ds.targets > 0).sum(1),
        ds.parent_index,
        refs[ds.parent_index],
    )


def model_folder(cfg: DictConfig, reads_references: bool) -> Path:
    """The folder of the ensemble scored (``cfg.models``; by default the one that ships)."""
    chosen = cfg.models["reference-informed" if reads_references else "spectrum-only"]
    if chosen:
        return Path(chosen)
    return pretrained_dir() / REFERENCE_MODEL if reads_references else pretrained_dir()


class Methods:
    """Every method compared, each a function of a batch."""

    def __init__(self, cfg: DictConfig, references: dict[str, dict], parents: list[str]):
        self.cfg, self.references, self.parents = cfg, references, parents
        self.ensembles = {
            "reference-informed ensemble": self._load(True),
            "spectrum-only ensemble": self._load(False),
        }
        member, _, thresholds = load_network(self._members(True)[0])
        self.member = (member.eval(), thresholds.guided)
        self.mean, self.thresholds = self._pretrain_calibration()

    def _members(self, reads_references: bool) -> list[Path]:
        folder = model_folder(self.cfg, reads_references)
        return members_in(folder, f"models: '{folder}' holds no ensemble")

    def _load(self, reads_references: bool):
        nets = [load_network(p)[0].eval() for p in self._members(reads_references)]
        return nets, card_in(model_folder(self.cfg, reads_references))

    def _pretrain_calibration(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The pretraining mean, and NNLS's and the mean's thresholds on the pretraining val
        split (best F1 at the configured distractor FPR, as the shipped models' were chosen)."""
        ev = compose(config_name="eval", overrides=[f"data={self.cfg.pretrain_data}"])
        dm = instantiate(ev.data)
        dm.setup("test")
        val = dm.split_tensors("val")
        refs = load_references(self.cfg.pretrain_references)
        parents = [dm.dataset.parents[i] for i in val.parent.tolist()]
        target, mask = val.targets.numpy(), val.candidates.numpy()
        fpr = self.cfg.presence.max_distractor_fpr
        mean = dm.train_mean()
        thresholds = {
            "NNLS": best_threshold(
                nnls_unmix(val.spectra, val.candidates, [refs[p] for p in parents]),
                target,
                mask,
                fpr,
            ),
            "pretraining mean": best_threshold(
                (mean[None] * val.candidates).numpy(), target, mask, fpr
            ),
        }
        return mean, thresholds

    @torch.no_grad()
    def __call__(self, batch: Batch) -> dict[str, Answer]:
        x, mask, refs = batch.inputs(), batch.candidates, batch.references
        out = {}
        for name, (nets, card) in self.ensembles.items():
            answer = EnsemblePrediction.from_members(
                np.stack([net(x, mask, refs)[0].numpy() for net in nets])
            )
            rule = card["presence"]
            out[name] = Answer(
                answer.mean,
                answer.presence(rule["spread_weight"]),
                card_threshold(rule, open_set=False),
                # as defectnet-predict widens it; none for a model of one member
                answer.interval(self.cfg.interval, *interval_widening(self.cfg, card))
                if "interval_scale" in card
                else None,
            )
        net, threshold = self.member
        pred = net(x, mask, refs)[0].numpy()
        out["one member (reference-informed)"] = Answer(pred, pred, threshold)
        hosts = [self.references[self.parents[i]] for i in batch.parent.tolist()]
        nnls = nnls_unmix(batch.spectra, mask, hosts)
        out["NNLS, two-point"] = Answer(nnls, nnls, self.thresholds["NNLS"])
        mean = (self.mean[None] * mask).numpy()
        out["pretraining mean"] = Answer(mean, mean, self.thresholds["pretraining mean"])
        zero = np.zeros(mask.shape)
        out["predict zero"] = Answer(zero, zero, 0.0)
        return out


def scores(answers: dict[str, Answer], batch: Batch, rows=None) -> dict[str, dict]:
    """``split_metrics`` (and interval coverage) of every method on ``rows`` of the batch."""
    rows = slice(None) if rows is None else rows
    target, mask = batch.targets.numpy()[rows], batch.candidates.numpy()[rows]
    out = {}
    for name, a in answers.items():
        m = split_metrics(a.mean[rows], target, mask, a.threshold, a.score[rows])
        if a.interval is not None:
            m |= coverage(a.interval[0][rows], a.interval[1][rows], target, mask)
        out[name] = m
    return out


# total dopant fraction of a cell: doping (0.2–5 %), heavy doping, alloying
READING_BANDS = ((0.002, 0.05), (0.05, 0.12), (0.12, 0.25))


def band_scores(answers: dict[str, dict[str, Answer]], batches: dict[str, Batch]) -> list:
    """(band, cells, {kind: scores}) per band of the cells' total dopant fraction: a method
    can read doped crystals well and alloys badly, which one figure over all cells hides."""
    labels = [
        difference.band_of(t, READING_BANDS) for t in batches["full"].targets.numpy().sum(axis=1)
    ]
    out = []
    for lo, hi in READING_BANDS:
        rows = np.flatnonzero([label == difference.band_label(lo, hi) for label in labels])
        if rows.size:
            by_kind = {k: scores(answers[k], batches[k], rows) for k in KINDS}
            out.append((difference.band_label(lo, hi), int(rows.size), by_kind))
    return out


def band_table(bands: list) -> str:
    """``band_scores`` as Markdown: RMSE / R² / distractor FPR on `full` and on the twins."""
    lines = [
        "| total dopant fraction | cells | method | full: RMSE / R² / distractor FPR "
        "| twins: RMSE / R² / distractor FPR |",
        "|---|---|---|---|---|",
    ]
    for label, n, by_kind in bands:
        for name in by_kind["full"]:
            cells = [
                f"{m['rmse']:.4f} / {m['r2']:.2f} / {m['distractor_fpr']:.2f}"
                for m in (by_kind[k][name] for k in KINDS)
            ]
            lines.append(f"| {label} | {n} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def undoped(methods: Methods, ds: PDoSDataset, batch: Batch) -> dict[str, int]:
    """Per method, the hosts whose pristine spectrum, given as the doped one and offered every
    candidate its cells offer, is read as undoped (nothing called present)."""
    rows = [int(np.flatnonzero(ds.parent_index.numpy() == k)[0]) for k in range(len(ds.parents))]
    offered = torch.stack([ds.mask[ds.parent_index == k].amax(0) for k in range(len(ds.parents))])
    pristine = ds.pristine[rows]
    clean = Batch(
        torch.stack([pristine, pristine], dim=1),
        ds.composition[rows],
        offered,
        torch.zeros_like(offered),
        torch.zeros(len(rows), dtype=torch.int64),
        ds.parent_index[rows],
        batch.references[rows],
    )
    answers = methods(clean)
    sel = offered.numpy() > 0
    return {
        name: int((~((a.score > a.threshold) & sel).any(axis=1)).sum())
        for name, a in answers.items()
    }


def difference_rows(
    full: PDoSDataset, twins: dict[str, PDoSDataset], refs: dict[str, dict]
) -> list[dict]:
    """Per cell: its total dopant fraction and how each twin's difference spectrum (the twins
    that hold the cell), and the linear sum of the host's dilute references, agree with
    ``full``'s."""
    index = {name: twin.meta["sample_ids"] for name, twin in twins.items()}
    rows = []
    for i, sample_id in enumerate(full.meta["sample_ids"]):
        truth = (full.doped[i] - full.pristine[i]).numpy()
        target = full.targets[i].numpy()
        present = np.flatnonzero(target > 0)
        host = full.parents[int(full.parent_index[i])]
        row = {"total": float(target.sum()), "host": host}
        for name, twin in twins.items():
            if sample_id in index[name]:
                j = index[name].index(sample_id)
                row[name] = difference.agreement((twin.doped[j] - twin.pristine[j]).numpy(), truth)
        columns = reference_columns(refs[host], present)
        if present.size and all(c is not None for c in columns):
            linear = sum(target[s] * c for s, c in zip(present, columns))
            row["dilute references, linear"] = difference.agreement(linear, truth)
        rows.append(row)
    return rows


COLUMNS = (
    ("RMSE", "rmse", "{:.4f}"),
    ("R²", "r2", "{:.2f}"),
    ("element F1", "f1", "{:.2f}"),
    ("distractor FPR", "distractor_fpr", "{:.2f}"),
    ("found 0.2–1 %", "detected_0.002-0.01", "{:.2f}"),
    ("found 1–5 %", "detected_0.01-0.05", "{:.2f}"),
    ("found 5–25 %", "detected_0.05-0.25", "{:.2f}"),
    ("90 % interval holds", "coverage_present", "{:.2f}"),
)


def reference_variants(
    cfg, methods: Methods, sets: dict, batches: dict, answers: dict, stand_ins: dict[str, str]
) -> list:
    """The methods that read references (NNLS and the reference-informed ensemble) given each of
    ``cfg.reference_variants`` (with ``stand_ins``) in place of the benchmark's references,
    beside the same methods with the benchmark's, on the cells of the hosts each variant covers
    so far."""
    out = []
    for name, folder in (cfg.get("reference_variants") or {}).items():
        if not Path(folder).is_dir():
            log.info("%s: no references yet, left out", folder)
            continue
        variant = load_references(folder)
        parents = sets["full"].parents
        hosts = [parents[k] for k in sets["full"].parent_index.tolist()]
        rows = np.flatnonzero([h in variant for h in hosts])
        if not rows.size:
            continue
        own, methods.references = methods.references, {**methods.references, **variant}
        n_points = sets["full"].grid.n_points
        matrices = torch.stack(
            [reference_matrix(variant[hosts[i]], n_points, folder, stand_ins) for i in rows]
        )
        for kind in KINDS:
            batch = Batch(*(t[rows] for t in batches[kind]))
            with_variant = methods(batch._replace(references=matrices))
            for method in ("reference-informed ensemble", "NNLS, two-point"):
                ours = scores({method: answers[kind][method]}, batches[kind], rows)[method]
                theirs = scores({method: with_variant[method]}, batch)[method]
                out.append(
                    (kind, method, name, len(rows), len({hosts[i] for i in rows}), ours, theirs)
                )
        methods.references = own
    return out


def variant_table(rows: list) -> str:
    lines = [
        "| spectra | method | references | cells (hosts) | RMSE | R² | element F1 "
        "| distractor FPR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, method, name, n, hosts, ours, theirs in rows:
        for label, m in (("the benchmark's", ours), (name, theirs)):
            cells = " | ".join(f.format(m[k]) for _, k, f in COLUMNS[:4])
            lines.append(f"| {kind} | {method} | {label} | {n} ({hosts}) | {cells} |")
    return "\n".join(lines)


def cell_answers(answers: dict[str, dict[str, Answer]], batches: dict[str, Batch], ids) -> str:
    """CSV, one row per offered candidate of every cell: the truth and each method's answer on
    each kind of spectrum, for reading a host's failures cell by cell."""
    names = list(answers["full"])
    mask, target = batches["full"].candidates.numpy(), batches["full"].targets.numpy()
    out = io.StringIO()
    table = csv.writer(out, lineterminator="\n")
    table.writerow(
        ["sample_id", "candidate", "truth"] + [f"{k}: {n}" for k in KINDS for n in names]
    )
    for i, sample_id in enumerate(ids):
        for s in np.flatnonzero(mask[i]):
            values = [answers[k][n].mean[i, s] for k in KINDS for n in names]
            table.writerow(
                [sample_id, DOPANTS[s], f"{target[i, s]:.4f}"] + [f"{v:.4f}" for v in values]
            )
    return out.getvalue()


def method_table(by_kind: dict[str, dict], undoped_reads: dict[str, dict], n_hosts: int) -> str:
    head = "| spectra | method | " + " | ".join(c for c, *_ in COLUMNS) + " | undoped read |"
    lines = [head, "|---" * (len(COLUMNS) + 3) + "|"]
    for kind, results in by_kind.items():
        for name, m in results.items():
            cells = [f.format(m[k]) if k in m else "—" for _, k, f in COLUMNS]
            reads = undoped_reads[kind][name]
            lines.append(f"| {kind} | {name} | " + " | ".join(cells) + f" | {reads}/{n_hosts} |")
    return "\n".join(lines)


def host_table(
    per_host: dict[str, dict[str, dict]], methods: list[str], references: dict[str, dict]
) -> str:
    """RMSE (and R²) per host on `full` spectra, beside how alike the host's dilute references
    are (``reference_overlap``: near 1, no unmixing tells its dopants apart)."""
    head = "| host | cells | references' overlap | " + " | ".join(methods) + " |"
    lines = [head, "|---" * (len(methods) + 3) + "|"]
    for host, (n, results) in per_host.items():
        cells = [f"{results[m]['rmse']:.4f} ({results[m]['r2']:.2f})" for m in methods]
        overlap = f"{reference_overlap(references[host]):.2f}"
        lines.append(f"| {host} | {n} | {overlap} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parity_figure(answers: dict[str, dict[str, Answer]], batches: dict[str, Batch], path: Path):
    from defectnet.plots import _parity, _save, plt

    shown = ("reference-informed ensemble", "NNLS, two-point")
    fig, axes = plt.subplots(2, 2, figsize=(8, 7.5), dpi=120)
    for col, kind in enumerate(KINDS):
        sel = batches[kind].candidates.numpy() > 0
        t = batches[kind].targets.numpy()[sel]
        for row, name in enumerate(shown):
            p = answers[kind][name].mean[sel]
            hi = max(float(t.max(initial=0)), float(p.max(initial=0)), 1e-3) * 1.05
            _parity(axes[row, col], t, p, hi, f"{name}, {kind} spectra")
            axes[row, col].title.set_fontsize(9)
            axes[row, col].set_ylabel("predicted concentration")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    return _save(fig, path)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench/realism")
def main(cfg: DictConfig) -> None:
    refs = load_references(cfg.references)
    left_out = unconverged_samples(cfg.full) if cfg.truth_relaxed_only else set()
    full, twin = paired(
        preset_dataset(cfg.full), preset_dataset(cfg.superposed), set(refs), left_out
    )
    if not len(full):
        raise SystemExit("bench_realism: no cell is in both sets with its host's references yet")
    methods = Methods(cfg, refs, full.parents)
    sets = {"full": full, "superposed": twin}
    stand_ins = reference_stand_ins(cfg.reference_stand_ins)
    batches = {k: batch_of(ds, cfg.references, stand_ins) for k, ds in sets.items()}
    answers = {k: methods(b) for k, b in batches.items()}
    results = {k: scores(answers[k], batches[k]) for k in KINDS}
    reads = {k: undoped(methods, sets[k], batches[k]) for k in KINDS}
    bands = band_scores(answers, batches)
    per_host = {}
    for k, host in enumerate(full.parents):
        rows = np.flatnonzero(full.parent_index.numpy() == k)
        per_host[host] = (len(rows), scores(answers["full"], batches["full"], rows))
    twins = {"superposed twin": twin}
    for name, preset in (cfg.get("twin_variants") or {}).items():
        if any(records_dir(preset).glob("shard-*")):
            twins[f"superposed twin, {name}"] = preset_dataset(preset)
        else:
            log.info("%s: no records yet, left out of the difference table", preset)
    rows = difference_rows(full, twins, refs)
    diff = difference.band_table(rows, (*twins, "dilute references, linear"))
    # the twins side by side on the cells every one of them holds
    shared = [r for r in rows if all(name in r for name in twins)]
    diff_shared = difference.band_table(shared, twins) if len(twins) > 1 else []
    n_dopants = int((full.targets > 0).sum())
    n_absent = int(((full.mask > 0) & (full.targets == 0)).sum())
    summary = (
        f"{len(full)} cells of {len(full.parents)} hosts ({n_dopants} dopants present, "
        f"{n_absent} offered candidates absent); thresholds of NNLS / mean from the pretraining "
        f"val split: {methods.thresholds['NNLS']:.4g} / "
        f"{methods.thresholds['pretraining mean']:.4g}"
    )
    if left_out:
        summary += (
            f"; {len(left_out)} cells left out, their relaxation stopped short of the tolerance "
            f"(truth_relaxed_only): {', '.join(sorted(left_out))}"
        )
    tables = {
        "methods": method_table(results, reads, len(full.parents)),
        "hosts": host_table(per_host, list(results["full"]), refs),
        "bands": band_table(bands),
        "difference": difference.markdown(diff),
        "twins": difference.markdown(diff_shared) if diff_shared else "",
        "twin_hosts": difference.host_table(rows, twins),
    }
    variants = reference_variants(cfg, methods, sets, batches, answers, stand_ins)
    tables["references"] = variant_table(variants) if variants else ""
    log.info(
        "%s\n\n%s\n\nby total dopant fraction:\n%s\n\nper host, full spectra, RMSE (R²):"
        "\n%s\n\ndifference spectra "
        "against full:\n%s\n\nthe twins on the cells every one holds:\n%s\n\nthe twins per "
        "host:\n%s\n\nother references:\n%s",
        summary,
        tables["methods"],
        tables["bands"],
        tables["hosts"],
        tables["difference"],
        tables["twins"] or "(one twin)",
        tables["twin_hosts"],
        tables["references"] or "(none)",
    )
    out_dir = Path(cfg.paths.output_dir)
    record = {
        "date": datetime.date.today().isoformat(),
        "cells": len(full),
        "left_out_unrelaxed": sorted(left_out),
        "hosts": full.parents,
        "methods": results,
        "undoped_read": reads,
        "per_host": {h: {"cells": n, **r} for h, (n, r) in per_host.items()},
        "by_total_fraction": {label: {"cells": n, **r} for label, n, r in bands},
        "difference": diff,
        "difference_shared_cells": diff_shared,
        "reference_variants": [
            {
                "spectra": k,
                "method": m,
                "references": n,
                "cells": c,
                "hosts": h,
                "own": o,
                "variant": v,
            }
            for k, m, n, c, h, o, v in variants
        ],
        "thresholds": methods.thresholds,
    }
    write_json_atomic(out_dir / "metrics.json", record, indent=2)
    write_text_atomic(
        out_dir / "cells.csv", cell_answers(answers, batches, full.meta["sample_ids"])
    )
    parity_figure(answers, batches, out_dir / "realism_parity.png")
    if cfg.docs:
        write_docs(cfg, summary, tables, answers, batches)
    if cfg.cards:
        for reads_references, name in ((True, "reference-informed"), (False, "spectrum-only")):
            folder = model_folder(cfg, reads_references)
            card = card_in(model_folder(cfg, reads_references))
            card["realism"] = {
                "date": record["date"],
                "cells": len(full),
                "hosts": len(full.parents),
                "benchmark": f"docs/benchmarks/{Path(cfg.full).name}.md "
                "(python scripts/bench_realism.py)",
                **{k: results[k][f"{name} ensemble"] for k in KINDS},
            }
            write_json_atomic(folder / "card.json", card, indent=2)


def write_docs(cfg, summary: str, tables: dict, answers, batches) -> None:
    """docs/benchmarks/<the truth preset's name>.md and its parity figure."""
    docs = ROOT / "docs" / "benchmarks"
    name = Path(cfg.full).name
    figure = parity_figure(answers, batches, docs / f"{name}_parity.png")
    truth = compose(config_name="generate", overrides=[f"generate={cfg.full}"])
    free = truth.relax.relax_cell
    steps = (
        "one-sided steps: each difference spectrum holds a host-wide error that does not "
        "shrink with the cell, largest where the dopants are few (docs/phonons.md)"
        if truth.phonons.plusminus is False
        else "central differences"
    )
    relaxed = (
        "at zero pressure, positions and cell, as a free crystal is"
        if free
        else "in the pristine lattice, positions only (a clamped cell)"
    )
    command = f"python scripts/bench_realism.py docs=true full={cfg.full}"
    ensembles = (
        ", ".join(f"{kind} `{folder}`" for kind, folder in cfg.models.items() if folder)
        or "the shipped ones"
    )
    text = f"""# Realism benchmark against `generate={cfg.full}`

`{command}` — {datetime.date.today().isoformat()},
{platform.machine()} CPU, {summary}.

The cells are `generate={cfg.full}` (full finite displacements of every doped cell, relaxed
{relaxed}; {steps}; 96–128 atoms, pristine spectrum from the same supercell); their
superposed twins are `generate={cfg.superposed}`; references `{cfg.references}`; ensembles
{ensembles}. Presence:
each ensemble's card rule (its threshold chosen on `full` cells of training hosts where the
card records one, else on val); one member its own threshold; NNLS and the mean at thresholds
chosen on the pretraining val split (distractor FPR ≤ {cfg.presence.max_distractor_fpr}).
"Undoped read": hosts whose pristine spectrum, given as the doped one with every candidate its
cells offer, has nothing called present.

## Every method, on full spectra and on their superposed twins

{tables["methods"]}

![parity]({name}_parity.png)

## By total dopant fraction

Doping (0.2–5 % of the atoms substituted in all), heavy doping (5–12 %) and alloying
(12–25 %) read apart, on `full` and on the twins of the same cells:

{tables["bands"]}

## Per host, full spectra: RMSE (R²)

Beside each host, its references' overlap: the median cosine between its dilute single-dopant
signatures, dopant against dopant. Near 1 (BeO, CaO) the dopants change the spectrum alike,
mostly by broadening the same sharp host bands, and no unmixing tells them apart well: there
NNLS reads even the superposed twins, made the references' own way, at R² 0.2–0.3.

{tables["hosts"]}

## Difference spectra (doped − pristine) against `full`, by total dopant fraction

Cosine and norm ratio (1: as much signal as `full`) of the superposed twin's difference
spectrum (the pretraining set's settings; and, where named, the same cells made with other
superposed settings: `twin_variants` of conf/bench/realism.yaml) and of the linear sum of the
host's dilute references (unit-concentration signature × each dopant's concentration) against
`full`'s, on the same cells.

{tables["difference"]}

The twins side by side on the cells every one of them holds:

{tables["twins"] or "(one twin)"}

Per host (median cosine / norm ratio, lowest cosine):

{tables["twin_hosts"]}

## The same methods with other references

The methods that read the host's references, given references made another way
(`reference_variants` of conf/bench/realism.yaml) beside the benchmark's own, on the cells of
the hosts those references cover.

{tables["references"] or "(none configured)"}
"""
    write_text_atomic(docs / f"{name}.md", text)
    log.info("wrote %s and %s", docs / f"{name}.md", figure)


if __name__ == "__main__":
    main()
