"""The evaluation's report: the comparison table, its log lines, and W&B or CSV loggers."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("defectnet.evaluation")


COLUMNS = ("RMSE", "R²", "FPR", "F1")


def comparison_table(results: dict) -> str:
    """Markdown: one row per method, RMSE / R² / distractor FPR / F1 per split."""
    splits = [s for s in ("test_id", "test_ood") if any(s in m for m in results.values())]
    head = "| method | " + " | ".join(f"{s} {c}" for s in splits for c in COLUMNS) + " |"
    lines = [head, "|---" * (1 + len(COLUMNS) * len(splits)) + "|"]
    for method, by_split in results.items():
        cells = []
        for s in splits:
            m = by_split.get(s)
            cells += (
                [
                    f"{m['rmse']:.4f}",
                    f"{m['r2']:.2f}",
                    f"{m['distractor_fpr']:.2f}",
                    f"{m['f1']:.2f}",
                ]
                if m
                else ["—"] * len(COLUMNS)
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log_to_loggers(loggers, results: dict, figures: list[Path]) -> None:
    for lg in loggers:
        if hasattr(lg, "log_image"):
            for f in figures:
                lg.log_image(key=f.stem, images=[str(f)])
        lg.log_metrics(
            {
                f"{m}/{s}/{k}": v
                for m, by_split in results.items()
                for s, r in by_split.items()
                for k, v in r.items()
            }
        )


def log_summary(cfg, metrics: dict, table: str, name: str, out_dir: Path) -> None:
    """The evaluation's findings as log lines: thresholds, the table, open set, intervals,
    undoped crystals, and what the model card takes."""
    thresholds = metrics["thresholds"]
    log.info(
        "presence thresholds (best F1 on val, distractor FPR ≤ %s): %s",
        cfg.presence.max_distractor_fpr,
        thresholds,
    )
    log.info("\n%s", table)
    for split, o in metrics["open_set"].items():
        log.info(
            "%s open set: precision %.2f recall %.2f at %.3g (guided: %.2f / %.2f at %.3g)",
            split,
            o["open_precision"],
            o["open_recall"],
            o["threshold"],
            o["guided_precision"],
            o["guided_recall"],
            o["guided_threshold"],
        )
    for split, c in metrics["calibration"].items():
        log.info(
            "%s: %.0f %% intervals hold %.0f %% of candidates, %.0f %% of present dopants; "
            "spread + %g widened ×%.2f (chosen on val): %.0f %% / %.0f %%",
            split,
            100 * c["interval"],
            100 * c["coverage_candidates"],
            100 * c["coverage_present"],
            c.get("interval_floor", 0.0),
            c["interval_scale"],
            100 * c["scaled_coverage_candidates"],
            100 * c["scaled_coverage_present"],
        )
    log_undoped(cfg, metrics, thresholds[name])
    if "interval_scale" in metrics:
        presence = metrics["presence"]
        log.info(
            "for the model card (scripts/ship_model.py evaluation=%s): interval_scale %.2f, "
            "presence on mean − %g × spread above %.4g (open set %.4g)",
            out_dir,
            metrics["interval_scale"],
            presence["spread_weight"],
            presence["threshold"],
            presence["open_set_threshold"],
        )


def log_undoped(cfg, metrics: dict, threshold: float) -> None:
    """How many parents' pristine spectra read as undoped: guided, then in the open set with
    noise."""
    undoped = metrics["undoped_crystals"]
    for held, label in ((False, "seen"), (True, "held-out")):
        group = [u for u in undoped.values() if u["held_out"] == held]
        if group:
            log.info(
                "undoped crystals (pristine as doped, up to %d candidates), %s parents: %d of %d "
                "read as undoped at threshold %.3g (largest prediction %.3f)",
                cfg.undoped_candidates,
                label,
                sum(u["read_undoped"] for u in group),
                len(group),
                threshold,
                max(u["max_prediction"] for u in group),
            )
    for level, reads in metrics.get("undoped_open_set", {}).items():
        log.info(
            "held-out undoped crystals in open set with %s noise: %d of %d read as undoped "
            "(called above threshold and limit of detection: %s)",
            level,
            sum(r["read_undoped"] for r in reads.values()),
            len(reads),
            {p: r["called"] for p, r in reads.items() if r["called"]} or "none",
        )
