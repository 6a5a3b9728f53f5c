"""Make a pretraining run's best checkpoints the pretrained model that ships with DefectNet:

    python scripts/ship_model.py run=outputs/train/multiruns/<time> evaluation=<its eval run>
    python scripts/ship_model.py recalibrate=true folder=<shipped folder> evaluation=<eval run>

Each member keeps only its network weights and the ``defectnet`` entry (a few MB in all); the
model card (``card.json``) records the data set each member learned from (path, settings hash,
samples, parents, held-out parents), the test figures its run wrote to ``metrics.json`` and,
from a ``defectnet-evaluate`` run of the same members, the interval widening and the presence
rule chosen on val (and on `full` cells where the run was given them), which
``defectnet-predict`` applies.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from defectnet.cli import CONF_DIR, reports_user_errors
from defectnet.data.cache import load_cache
from defectnet.ensemble import checkpoint_paths
from defectnet.errors import UserError
from defectnet.model.checkpoint import spectrum_recipe
from defectnet.model.pretrained import ship

KEPT_METRICS = ("rmse", "r2", "element_f1", "distractor_fpr", "baseline_mean_rmse", "n_samples")


def short_path(path: str) -> str:
    """A data set's (or references folder's) last two path parts: the card says which set,
    not where one machine kept it."""
    return "/".join(Path(path).parts[-2:])


def member_card(checkpoint: Path, entry: dict) -> dict:
    """What one member (its checkpoint and ``defectnet`` entry) learned from and how it tested
    (from its run's metrics.json)."""
    run = checkpoint.parent.parent
    metrics = (
        json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    )
    tests = {
        split: {k: v for k, v in values.items() if k in KEPT_METRICS}
        for split, values in metrics.get("comparison", {}).items()
    }
    for key, value in metrics.items():  # the test metrics Lightning logged (test_id/r2, …)
        split, _, name = key.partition("/")
        if split in tests and name in KEPT_METRICS:
            tests[split][name] = value
    data = dict(entry.get("data", {}))
    for key in ("path", "references"):  # which set, not where one machine kept it
        if data.get(key):
            data[key] = short_path(data[key])
    return {
        "checkpoint": checkpoint.name,
        "run": run.name,
        "data": data,
        "threshold": entry["threshold"],
        "open_set_threshold": entry.get("open_set_threshold"),
        "test": tests,
    }


def evaluation_card(folder: Path, members: list[Path]) -> dict:
    """The interval widening and presence rule a defectnet-evaluate run of ``members`` chose
    on val (its ``metrics.json``)."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise UserError(f"evaluation: no {path}; pass a defectnet-evaluate run folder.")
    metrics = json.loads(path.read_text())
    evaluated = sorted(Path(p).resolve() for p in metrics.get("checkpoints", []))
    if evaluated != sorted(p.resolve() for p in members):
        raise UserError(
            f"evaluation: {path} evaluated other checkpoints than run= holds; evaluate these "
            "members (defectnet-evaluate ckpt_path=<run>) and pass that folder."
        )
    if "presence" not in metrics:
        raise UserError(f"evaluation: {path} records no presence rule; evaluate again.")
    card = {"presence": metrics["presence"]}
    if "full_cells" in metrics:  # where presence.full_cells_threshold was chosen, and its figures
        card["presence_full_cells"] = metrics["full_cells"]
    for key in ("interval_scale", "interval_floor"):
        if key in metrics:
            card[key] = metrics[key]
    return card


def recalibrate(folder: Path, evaluation: Path) -> None:
    """A shipped model's card takes the presence rule and interval widening of a new
    defectnet-evaluate run of its own members (the members are not touched)."""
    from defectnet.atomic import write_json_atomic
    from defectnet.model.pretrained import MEMBER_GLOB

    card_path = folder / "card.json"
    if not card_path.is_file():
        raise UserError(f"folder: no {card_path}; pass a shipped model's folder.")
    card = json.loads(card_path.read_text())
    card |= evaluation_card(evaluation, sorted(folder.glob(MEMBER_GLOB)))
    card["recalibrated"] = datetime.date.today().isoformat()
    write_json_atomic(card_path, card, indent=2)
    print(f"{card_path}: presence {json.dumps(card['presence'])}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ship_model")
@reports_user_errors("ship_model")
def main(cfg: DictConfig) -> None:
    if cfg.get("recalibrate"):
        return recalibrate(Path(cfg.folder), Path(cfg.evaluation))
    members = checkpoint_paths(cfg.run)
    entries = [torch.load(p, map_location="cpu", weights_only=True)["defectnet"] for p in members]
    cards = [member_card(p, e) for p, e in zip(members, entries)]
    first = entries[0]
    data = first.get("data", {})
    card = {
        "shipped": datetime.date.today().isoformat(),
        "members": cards,
        "network": first["network"],
    }
    if cfg.get("evaluation"):
        card |= evaluation_card(Path(cfg.evaluation), members)
    if data.get("path") and Path(data["path"]).is_file():
        ds = load_cache(data["path"])
        card["data_set"] = {
            "path": short_path(data["path"]),
            "samples": len(ds),
            "parents": len(ds.parents),
            "parent_ids": list(ds.parents),  # the set grows; these are the ones it learned from
            "settings_hashes": ds.meta.get("settings_hashes"),
        }
        card["recipe"] = spectrum_recipe(ds.grid, ds.meta)
    written = ship(members, card, Path(cfg.folder))
    size = sum(p.stat().st_size for p in written) / 1e6
    print(f"shipped {len(written)} members ({size:.1f} MB) to {cfg.folder}")
    print(json.dumps({k: v for k, v in card.items() if k != "members"}, indent=2))


if __name__ == "__main__":
    main()
