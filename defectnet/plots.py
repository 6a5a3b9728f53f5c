"""Figures that the training and evaluation runs write as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from defectnet.atomic import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path


def _parity(ax, t, p, hi: float, title: str) -> None:
    """True vs predicted concentrations of candidate entries; distractors (true 0) in grey."""
    present = t > 0
    ax.scatter(t[~present], p[~present], s=8, c="0.6", label="distractor (absent)")
    ax.scatter(t[present], p[present], s=8, c="C0", label="dopant")
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="true concentration", title=title)


def parity_plot(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, path: Path, title: str = ""
) -> Path:
    """Predicted vs true concentration of every candidate; distractors (true 0) in grey."""
    sel = mask.bool()
    p, t = pred[sel].numpy(), target[sel].numpy()
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
    hi = max(float(t.max(initial=0)), float(p.max(initial=0)), 1e-3) * 1.05
    _parity(ax, t, p, hi, title)
    ax.set_ylabel("predicted concentration")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def prediction_report(
    energies,
    pristine,
    doped,
    attention,
    rows: list[dict],
    path: Path,
    title: str,
    interval: float,
    threshold: float,
    threshold_label: str = "presence threshold",
) -> Path:
    """One page: the two spectra and their difference, the predicted concentrations with their
    interval (blue: called present), and where in energy the model looked (attention)."""
    import numpy as np

    fig, axes = plt.subplots(3, 1, figsize=(6.4, 8.0), dpi=120)
    both = np.maximum(pristine, doped)
    band = energies[both > 0.005 * both.max()]
    e_hi = min(float(energies[-1]), float(band.max()) + 10.0) if band.size else float(energies[-1])
    for ax in (axes[0], axes[2]):
        ax.set_xlim(float(energies[0]), e_hi)
    ax = axes[0]
    ax.plot(energies, pristine, c="0.4", label="pristine")
    ax.plot(energies, doped, c="C0", label="doped")
    ax.plot(energies, doped - pristine, c="C3", lw=0.8, label="doped − pristine")
    ax.axhline(0, c="k", lw=0.4)
    ax.set(xlabel="energy (meV)", ylabel="PDoS (1/meV)", title=title)
    ax.legend(fontsize=7)
    ax = axes[1]
    names = [r["dopant"] for r in rows]
    values = [100 * r["concentration"] for r in rows]
    colours = ["C0" if r["present"] else "0.7" for r in rows]
    ax.bar(names, values, color=colours)
    if rows and rows[0]["low"] is not None:
        lower = [100 * (r["concentration"] - r["low"]) for r in rows]
        upper = [100 * (r["high"] - r["concentration"]) for r in rows]
        ax.errorbar(names, values, yerr=[lower, upper], fmt="none", c="k", capsize=3, lw=0.8)
    ax.axhline(100 * threshold, c="C3", ls="--", lw=0.8, label=threshold_label)
    level = f"{round(100 * interval)} % interval" if rows and rows[0]["low"] is not None else ""
    ax.set(ylabel="concentration (% of atoms)", title=f"predicted concentrations {level}".strip())
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(energies, attention, c="C2")
    ax.fill_between(energies, 0, attention, color="C2", alpha=0.3)
    ax.set(xlabel="energy (meV)", ylabel="attention", title="attention over energy")
    return _save(fig, path)


def quartile_parity_plot(pred, target, mask, path: Path, title: str = "") -> Path:
    """Parity plots of the samples in each quartile of per-sample MSE (best to worst)."""
    import numpy as np

    mse = ((pred - target) ** 2 * mask).sum(1) / np.clip(mask.sum(1), 1, None)
    edges = np.quantile(mse, [0, 0.25, 0.5, 0.75, 1.0])
    quartile = np.clip(np.searchsorted(edges, mse, side="right") - 1, 0, 3)
    hi = max(float(target.max(initial=0)), float(pred.max(initial=0)), 1e-3) * 1.05
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.3), dpi=110, sharex=True, sharey=True)
    for q, ax in enumerate(axes):
        rows = quartile == q
        sel = mask[rows] > 0
        label = f"Q{q + 1}: {rows.sum()} samples, MSE ≤ {edges[q + 1]:.1e}"
        _parity(ax, target[rows][sel], pred[rows][sel], hi, label)
        ax.title.set_fontsize(8)
    axes[0].set_ylabel("predicted concentration")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def error_profile_plot(results: dict[str, dict], path: Path, title: str = "") -> Path:
    """RMSE of each method against true concentration (bins) and number of dopants."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    for method, m in results.items():
        bins = [k for k in m if k.startswith("rmse_c")]
        if bins:
            left.plot(range(len(bins)), [m[k] for k in bins], "o-", label=method)
            left.set_xticks(range(len(bins)), [k.removeprefix("rmse_c") for k in bins], fontsize=7)
        ns = sorted((int(k.removeprefix("rmse_n")), m[k]) for k in m if k.startswith("rmse_n"))
        if ns:
            right.plot([n for n, _ in ns], [v for _, v in ns], "o-", label=method)
            right.set_xticks([n for n, _ in ns])
    left.set(xlabel="true concentration (bin)", ylabel="RMSE (present dopants)", title=title)
    right.set(xlabel="coexisting dopants", ylabel="RMSE (candidates)")
    left.legend(fontsize=7)
    return _save(fig, path)


def spectra_overlay(energies, curves: dict[str, dict[str, object]], path: Path) -> Path:
    """One panel per crystal, one line per source (``curves[crystal][source]``): the reference
    in black, simulated spectra in colour."""
    n = len(curves)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.8 * rows), dpi=110, squeeze=False)
    for ax, (crystal, lines) in zip(axes.flat, curves.items()):
        for k, (source, spectrum) in enumerate(lines.items()):
            style = {"c": "k", "lw": 1.6} if k == 0 else {"c": f"C{k - 1}", "lw": 1.1}
            ax.plot(energies, spectrum, label=source, **style)
        top = max(float(max(s)) for s in lines.values())
        last = max(
            float(energies[max(i for i, v in enumerate(s) if v > 0.01 * top)])
            for s in lines.values()
        )
        ax.set(title=crystal, xlabel="energy (meV)", xlim=(0, min(energies[-1], last * 1.1)))
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path)
