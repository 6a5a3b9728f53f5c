"""Difference spectra (doped − pristine): what the networks read. A data engine is judged on
them, not on total spectra: two totals can agree to cosine 0.99 while the dopants' share of
them is off several times. Here: how one way of making a difference spectrum agrees with
another (the truth, ``full`` phonons of the same cell), and a table of that agreement by the
cell's total dopant fraction."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# total dopant fraction of a cell (all dopants together), the bands the tables report
BANDS = ((0.002, 0.01), (0.01, 0.05), (0.05, 0.12), (0.12, 0.25))


def band_label(lo: float, hi: float) -> str:
    return f"{100 * lo:g}–{100 * hi:g} %"


def band_of(total: float, bands=BANDS) -> str | None:
    """The band of ``bands`` a total dopant fraction falls in, the last one's upper edge
    included (None outside every band)."""
    for lo, hi in bands:
        if lo <= total < hi or (hi == bands[-1][1] and total == hi):
            return band_label(lo, hi)
    return None


def agreement(test: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Cosine between two difference spectra and the norm of ``test`` over that of ``truth``
    (1: as much signal; 0.3: a third of it)."""
    test, truth = np.asarray(test, np.float64), np.asarray(truth, np.float64)
    nt, nr = np.linalg.norm(test), np.linalg.norm(truth)
    cosine = float(test @ truth / (nt * nr)) if nt > 0 and nr > 0 else float("nan")
    return {"cosine": cosine, "norm_ratio": float(nt / nr) if nr > 0 else float("nan")}


def band_table(rows: Iterable[dict], methods: Iterable[str]) -> list[dict]:
    """Per band of total dopant fraction and per method: cells, median cosine and median norm
    ratio (with their quartiles). ``rows`` hold ``total`` and, per method, an ``agreement``."""
    rows = list(rows)
    out = []
    for lo, hi in (*BANDS, (0.0, 1.0)):
        label = band_label(lo, hi) if hi < 1 else "all"
        cell = [r for r in rows if (band_of(r["total"]) == label) or label == "all"]
        for method in methods:
            got = [r[method] for r in cell if method in r]
            if not got:
                continue
            cos = np.array([g["cosine"] for g in got])
            ratio = np.array([g["norm_ratio"] for g in got])
            out.append(
                {
                    "band": label,
                    "method": method,
                    "cells": len(got),
                    "cosine": float(np.nanmedian(cos)),
                    "cosine_q": [float(np.nanquantile(cos, q)) for q in (0.25, 0.75)],
                    "norm_ratio": float(np.nanmedian(ratio)),
                    "norm_ratio_q": [float(np.nanquantile(ratio, q)) for q in (0.25, 0.75)],
                }
            )
    return out


def host_table(rows: Iterable[dict], methods: Iterable[str]) -> str:
    """Per host (``rows`` hold ``host``) a Markdown table: cells, and per method the median
    cosine / norm ratio and the lowest cosine: a host where a method fails shows here, while
    the bands mix it with the others."""
    rows, methods = list(rows), list(methods)
    lines = [
        "| host | cells | "
        + " | ".join(f"{m}: median cosine / norm ratio, lowest cosine" for m in methods)
        + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for host in sorted({r["host"] for r in rows}):
        cell = [r for r in rows if r["host"] == host]
        line = f"| {host} | {len(cell)} |"
        for method in methods:
            got = [r[method] for r in cell if method in r]
            if not got:
                line += " — |"
                continue
            cos = np.array([g["cosine"] for g in got])
            ratio = np.median([g["norm_ratio"] for g in got])
            line += f" {np.median(cos):.2f} / {ratio:.2f}, {cos.min():.2f} |"
        lines.append(line)
    return "\n".join(lines)


def markdown(table: list[dict]) -> str:
    """``band_table`` as a Markdown table: median (quartiles) per band and method."""
    lines = [
        "| total dopant fraction | method | cells | cosine, median (quartiles) "
        "| norm ratio, median (quartiles) |",
        "|---|---|---|---|---|",
    ]
    for r in table:
        cq, nq = r["cosine_q"], r["norm_ratio_q"]
        lines.append(
            f"| {r['band']} | {r['method']} | {r['cells']} | {r['cosine']:.2f} "
            f"({cq[0]:.2f}–{cq[1]:.2f}) | {r['norm_ratio']:.2f} ({nq[0]:.2f}–{nq[1]:.2f}) |"
        )
    return "\n".join(lines)
