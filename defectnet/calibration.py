"""Calibration of an evaluated model on the validation split: where presence is called (given
candidates and the open set, with a measurement's noise), and whether undoped crystals read as
undoped. Counting noise (``data.datamodule.counting_noise``) stands in for a measurement's.
Where `full` cells of training hosts are given (``full_cells_threshold``), presence is also
called where it holds its bound on spectra as faithful as a measurement's."""

from __future__ import annotations

import numpy as np
import torch

from defectnet.data.cache import PDoSDataset, network_input
from defectnet.data.datamodule import Batch, PDoSDataModule, counting_noise, open_set_mask
from defectnet.data.references import FAITHFUL_DENSE, ReferenceError, reference_matrix
from defectnet.detection import detection_limits
from defectnet.elements import DOPANTS
from defectnet.ensemble import EnsemblePrediction
from defectnet.metrics import best_threshold, split_metrics


@torch.no_grad()
def undoped_crystals(
    networks, dm: PDoSDataModule, threshold: float, n_candidates: int, spread_weight: float
):
    """Each parent's pristine spectrum given as the doped one too, offered the ``n_candidates``
    dopants its samples offer most often: a model that knows "nothing here" calls none of them
    present. Per parent: the largest predicted concentration and whether every candidate's
    presence score (``EnsemblePrediction.presence``) stays below ``threshold``."""
    ds = dm.dataset
    out = {}
    for k, parent in enumerate(ds.parents):
        rows = torch.nonzero(ds.parent_index == k).ravel()
        offered = ds.mask[rows].sum(0)
        mask = torch.zeros(1, offered.shape[0])
        mask[0, offered.argsort(descending=True)[:n_candidates]] = 1
        mask *= (offered > 0).to(mask.dtype)  # never a dopant the parent was not offered
        i = rows[0]
        x = network_input(ds.pristine[i], ds.pristine[i], ds.composition[i])
        refs = dm.references[k][None] if dm.references is not None else None
        answer = EnsemblePrediction.from_members(
            np.stack([net(x, mask, refs)[0].numpy() for net in networks])
        )
        offered_now = mask[0].numpy() > 0
        out[parent] = {
            "held_out": parent in dm.splits.ood_parents,
            "n_candidates": int(mask.sum()),
            "max_prediction": float(answer.mean[0][offered_now].max()),
            "read_undoped": bool(
                (answer.presence(spread_weight)[0][offered_now] < threshold).all()
            ),
        }
    return out


@torch.no_grad()
def open_set_scores(networks, batch, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Presence scores of every open-set candidate of a batch, and that mask."""
    mask = open_set_mask(batch.composition)
    members = np.stack([net(batch.inputs(), mask, batch.references)[0].numpy() for net in networks])
    return EnsemblePrediction.from_members(members).presence(weight), mask.numpy()


def open_set_threshold(
    networks, dm: PDoSDataModule, weight: float, levels, max_fpr, undoped_quantile: float = 0.95
) -> float:
    """The open-set presence threshold: best F1 on val at the distractor FPR bound, over val as
    it is and with counting noise at each of ``levels`` (a measurement has noise, and a model
    that answers exactly 0 on clean spectra answers a little on noisy ones), never 0, and at
    least the ``undoped_quantile`` of what the val parents' noisy undoped spectra score."""
    val = dm.split_tensors("val")
    generator = torch.Generator().manual_seed(0)
    scores, masks, targets = [], [], []
    for level in [0.0, *levels]:
        batch = val
        if level:
            batch = val._replace(
                spectra=counting_noise(val.spectra, level, dm.dataset.grid.step, generator)
            )
        score, mask = open_set_scores(networks, batch, weight)
        scores.append(score)
        masks.append(mask)
        targets.append(val.targets.numpy())
    score, mask, target = map(np.concatenate, (scores, masks, targets))
    threshold = best_threshold(score, target, mask, max_fpr)
    if threshold <= 0:  # "anything above nothing": the smallest answer the val spectra gave
        threshold = float(np.min(score[(mask > 0) & (score > 0)], initial=1e-4))
    # With ~50 candidates a per-candidate false-alarm bound still lets most undoped spectra
    # name something: the threshold also keeps the val parents' noisy undoped spectra quiet.
    quiet = undoped_scores(networks, dm, weight, levels, rows=val_parent_rows(dm))
    if quiet.size:
        threshold = max(threshold, float(np.quantile(quiet, undoped_quantile)))
    return threshold


def val_parent_rows(dm: PDoSDataModule) -> list[int]:
    """One sample of each parent in the val split (its pristine spectrum is the parent's)."""
    parents = sorted({int(dm.dataset.parent_index[i]) for i in dm.splits.val})
    return [int(torch.nonzero(dm.dataset.parent_index == k)[0]) for k in parents]


def noisy_undoped(dm: PDoSDataModule, rows: list[int], level: float, generator) -> Batch:
    """The pristine spectra of ``rows``' parents with counting noise at ``level`` given as both
    spectra (two draws), offered their usual candidates: undoped crystals as measured."""
    ds = dm.dataset
    pristine = ds.pristine[rows]
    spectra = torch.stack(
        [counting_noise(pristine, level, ds.grid.step, generator) for _ in range(2)], dim=1
    )
    refs = dm.references[ds.parent_index[rows]] if dm.references is not None else None
    return Batch(
        spectra,
        ds.composition[rows],
        ds.mask[rows],
        ds.targets[rows] * 0,
        torch.zeros(len(rows), dtype=torch.int64),
        ds.parent_index[rows],
        refs,
    )


def undoped_scores(networks, dm, weight: float, levels, rows, draws: int = 5) -> np.ndarray:
    """The largest open-set presence score of each noisy undoped spectrum of ``rows``' parents
    (``noisy_undoped``), ``draws`` times at each level."""
    generator = torch.Generator().manual_seed(2)
    out = []
    for level in levels:
        for _ in range(draws):
            score, mask = open_set_scores(
                networks, noisy_undoped(dm, rows, level, generator), weight
            )
            out.append(np.where(mask > 0, score, -np.inf).max(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def undoped_open_set(
    networks,
    dm: PDoSDataModule,
    threshold: float,
    weight: float,
    levels,
    parents=None,
    draws: int = 128,
    false_alarm: float = 0.01,
):
    """Per noise level and parent (``parents``; None: the held-out, test-OOD ones): its noisy
    undoped spectra (``noisy_undoped``) in the open set, read as undoped when no candidate
    scores above both the threshold and its limit of detection at that level
    (``detection.detection_limits``)."""
    ds = dm.dataset
    generator = torch.Generator().manual_seed(1)
    wanted = set(dm.splits.ood_parents if parents is None else parents)
    held = [k for k, parent in enumerate(ds.parents) if parent in wanted]
    rows = [int(torch.nonzero(ds.parent_index == k)[0]) for k in held]
    out = {}
    for level in levels:
        batch = noisy_undoped(dm, rows, level, generator)
        score, mask = open_set_scores(networks, batch, weight)
        limits = detection_limits(
            networks,
            ds.pristine[rows],
            batch.composition,
            torch.as_tensor(mask),
            batch.references,
            weight,
            level,
            ds.grid.step,
            draws,
            false_alarm,
        )
        called = (score > np.maximum(threshold, limits)) & (mask > 0)
        out[f"{level:.0%}"] = {
            ds.parents[k]: {
                "read_undoped": not bool(called[i].any()),
                "called": [DOPANTS[j] for j in np.flatnonzero(called[i])],
            }
            for i, k in enumerate(held)
        }
    return out


@torch.no_grad()
def full_cells_threshold(
    networks, cells: PDoSDataset, references: dict[str, dict] | None, weight: float, max_fpr
) -> dict:
    """The guided presence threshold chosen on ``cells``, `full` doped cells of training hosts
    (generate=presence_calibration), with the ensemble's rule (mean less ``weight`` spreads):
    the best F1 at distractor FPR ≤ ``max_fpr``, and what it gives there. The val split's
    threshold is chosen on superposed spectra, whose difference signal is cleaner than a `full`
    cell's or a measurement's; on the realism hosts' `full` cells it called 0.23–0.33 of the
    absent candidates present at a 0.15 bound, where a threshold chosen on training hosts'
    `full` cells called 0.09–0.13 (docs/benchmarks/recipe.md). A model that reads references
    reads each host's (``references``) with the alloy cell in the dense slot, as
    defectnet-predict does."""
    hosts = cells.parent_ids
    rows = None
    if any(getattr(net, "reads_references", False) for net in networks):
        missing = sorted(set(hosts) - set(references or {}))
        if missing:
            raise ReferenceError(
                f"presence.full_cells_references: no references for {', '.join(missing)}; "
                "make them with defectnet-generate stage=references for those hosts."
            )
        rows = torch.stack(
            [
                reference_matrix(references[h], cells.grid.n_points, stand_ins=FAITHFUL_DENSE)
                for h in hosts
            ]
        )
    x = network_input(cells.pristine, cells.doped, cells.composition)
    members = np.stack([net(x, cells.mask, rows)[0].numpy() for net in networks])
    answer = EnsemblePrediction.from_members(members)
    target, mask = cells.targets.numpy(), cells.mask.numpy()
    score = answer.presence(weight)
    threshold = best_threshold(score, target, mask, max_fpr)
    there = split_metrics(answer.mean, target, mask, threshold, score)
    return {
        "threshold": threshold,
        "cells": len(cells),
        "hosts": sorted(set(hosts)),
        **{k: there[k] for k in ("rmse", "r2", "f1", "distractor_fpr")},
    }
