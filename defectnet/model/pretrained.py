"""The pretrained DefectNet that ships with the package: a deep ensemble of member checkpoints
in ``defectnet/pretrained`` and a model card (``card.json``: the data it learned from, how it
was trained, its test figures).

Prediction and evaluation use it when no ``ckpt_path`` is given, and fine-tuning presets start
from it (``init_from=${defectnet_pretrained:}``: member ``seed mod M``, so an ensemble fine-tuned
with seeds 0…M-1 starts each member from its own pretrained one). A shipped member holds the
network weights and the ``defectnet`` entry only: no optimizer state, loaded with
``torch.load(weights_only=True)`` like every checkpoint.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from defectnet.atomic import atomic_path, write_json_atomic
from defectnet.model.checkpoint import CheckpointError

MEMBER_GLOB = "member-*.ckpt"
# the reference-informed ensemble ships beside the spectrum-only one, in this subfolder
REFERENCE_MODEL = "references"


def pretrained_dir() -> Path:
    """Where the shipped model lives (the checkout's or the installed package's folder)."""
    return Path(str(resources.files("defectnet"))) / "pretrained"


def members_in(folder: Path, hint: str) -> list[Path]:
    """The ``member-*.ckpt`` of a shipped model's folder, sorted; ``hint`` starts the error."""
    members = sorted(folder.glob(MEMBER_GLOB))
    if not members:
        raise CheckpointError(f"{hint} (no {MEMBER_GLOB} in {folder}).")
    return members


def pretrained_members(reads_references: bool = False) -> list[Path]:
    """The shipped ensemble's member checkpoints, sorted: the spectrum-only model, or the
    reference-informed one."""
    folder = pretrained_dir() / REFERENCE_MODEL if reads_references else pretrained_dir()
    return members_in(
        folder,
        "ckpt_path: no pretrained model ships with DefectNet; pass ckpt_path= (a checkpoint or "
        "training folder), or build the shipped one with scripts/ship_model.py",
    )


def card_in(folder: Path) -> dict:
    """The card of the model in ``folder`` ({} when it has none)."""
    path = folder / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def pretrained_card(reads_references: bool = False) -> dict:
    """The shipped model's card ({} when none ships)."""
    return card_in(pretrained_dir() / REFERENCE_MODEL if reads_references else pretrained_dir())


def member_for_seed(folder: Path, seed: int) -> Path:
    """The member a fine-tuning run with ``seed`` starts from: member ``seed mod M``."""
    members = members_in(
        folder, f"init_from: '{folder}' is no shipped model; pass a .ckpt or its folder"
    )
    return members[seed % len(members)]


def strip_checkpoint(source: Path, target: Path) -> None:
    """Write ``source`` (a training checkpoint) as a shipped member: network weights and the
    ``defectnet`` entry, nothing else (written atomically)."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    if "defectnet" not in ckpt:
        raise CheckpointError(f"{source}: no 'defectnet' entry; not a DefectNet checkpoint.")
    member = {
        "state_dict": {
            k: v.clone() for k, v in ckpt["state_dict"].items() if k.startswith("model.")
        },
        "defectnet": ckpt["defectnet"],
    }
    with atomic_path(target) as tmp:
        torch.save(member, tmp)


def ship(checkpoints: list[Path], card: dict, folder: Path | None = None) -> list[Path]:
    """Replace the shipped model in ``folder`` by these checkpoints and this card."""
    folder = folder or pretrained_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(MEMBER_GLOB):
        old.unlink()
    written = []
    for i, source in enumerate(checkpoints):
        written.append(folder / f"member-{i}.ckpt")
        strip_checkpoint(Path(source), written[-1])
    write_json_atomic(folder / "card.json", card, indent=2)
    return written
