"""Benchmark: do undoped crystals with measurement noise read as undoped in the open set?

For every host of the given data sets, its pristine spectrum with counting noise (two draws:
one as the pristine, one as the "doped" spectrum) is offered to a shipped ensemble with every
non-host element as a candidate, and presence is called above the card's open-set threshold and
each candidate's limit of detection at that noise (defectnet/detection.py). Prints, per data
set and noise level, how many hosts (the pretraining set's held-out parents, every demo host)
read as undoped and what was called in the others.

    python scripts/bench_undoped.py [levels=[0.01,0.03]] [draws=512] [false_alarm=0.01]

Limits of detection come from ``draws`` noisy reads at a host-wide ``false_alarm`` (defaults:
conf/presence's ``detection_draws`` and ``false_alarm``, as ``defectnet-predict`` and the
evaluation use).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from defectnet.calibration import undoped_open_set
from defectnet.cli import CONF_DIR
from defectnet.data.datamodule import PDoSDataModule
from defectnet.ensemble import load_ensemble
from defectnet.model.pretrained import pretrained_card, pretrained_dir

ROOT = Path(__file__).resolve().parents[1]
SETS = {  # data set: its references
    "demo_hosts8": "data/demo_hosts8/references",
    "pretrain": "data/pretrain/references",
}


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    levels = [float(v) for v in args.get("levels", "[0.01,0.03]").strip("[]").split(",")]
    presence = OmegaConf.load(Path(CONF_DIR) / "presence" / "default.yaml")
    draws = int(args.get("draws", presence.detection_draws))
    false_alarm = float(args.get("false_alarm", presence.false_alarm))
    for reads_references, folder in ((True, pretrained_dir() / "references"), (False, None)):
        networks, *_ = load_ensemble(folder)
        card = pretrained_card(reads_references)
        rule = card["presence"]
        name = "reference-informed" if reads_references else "spectrum-only"
        for data, refs in SETS.items():
            dm = PDoSDataModule(
                str(ROOT / "data" / data / "dataset.safetensors"),
                references=str(ROOT / refs) if reads_references else None,
                made_by=data,
            )
            dm.setup()
            held = card["members"][0]["data"].get("ood_parents", [])
            reads = undoped_open_set(
                networks,
                dm,
                rule["open_set_threshold"],
                rule["spread_weight"],
                levels,
                parents=held if data == "pretrain" else dm.dataset.parents,
                draws=draws,
                false_alarm=false_alarm,
            )
            for level, hosts in reads.items():
                ok = sum(r["read_undoped"] for r in hosts.values())
                called = {p: r["called"] for p, r in hosts.items() if r["called"]}
                print(
                    f"{name:19s} {data:12s} noise {level:>3s}: {ok}/{len(hosts)} read as undoped "
                    f"(open-set threshold {rule['open_set_threshold']:.4g}, {draws} draws)"
                    + (f"; called: {called}" if called else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main(sys.argv[1:])
