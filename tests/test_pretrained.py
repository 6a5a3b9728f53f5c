"""The pretrained model: shipping a run's checkpoints, and the model that ships."""

import numpy as np
import torch

from defectnet.cli import ROOT_DIR
from defectnet.data.cache import load_cache
from defectnet.ensemble import checkpoint_paths, ensemble_predict, load_ensemble
from defectnet.model.checkpoint import load_network
from defectnet.model.pretrained import (
    member_for_seed,
    pretrained_card,
    pretrained_dir,
    pretrained_members,
    ship,
)

from .conftest import compose_config


def test_shipping_keeps_only_weights_and_the_entry(ensemble, tmp_path):
    written = ship(ensemble, {"note": "test"}, tmp_path)
    assert [p.name for p in written] == ["member-0.ckpt", "member-1.ckpt"]
    for source, member in zip(ensemble, written):
        stored = torch.load(member, map_location="cpu", weights_only=True)
        assert set(stored) == {"state_dict", "defectnet"}
        assert all(k.startswith("model.") for k in stored["state_dict"])
        assert member.stat().st_size < source.stat().st_size  # no optimizer state
        a, _, ta = load_network(source)
        b, _, tb = load_network(member)
        x = torch.rand(3, 3, 100)
        mask = torch.zeros(3, 56)
        mask[:, :4] = 1
        assert torch.equal(a(x, mask)[0], b(x, mask)[0]) and ta == tb
    assert checkpoint_paths(tmp_path) == written  # a shipped folder is an ensemble
    assert member_for_seed(tmp_path, 3) == written[1]  # seed mod M


def test_the_shipped_model_loads_safely_and_reads_a_known_sample():
    members = pretrained_members()
    for member in members:  # nothing is unpickled
        torch.load(member, map_location="cpu", weights_only=True)
    card = pretrained_card()
    assert card["data_set"]["samples"] > 0 and len(card["members"]) == len(members)
    # simulated samples with one clearly dominant dopant, of the parents the model learned from
    ds = load_cache(ROOT_DIR / "data" / "pretrain" / "dataset.safetensors")
    held_out = set(card["members"][0]["data"]["ood_parents"])
    top2 = ds.targets.topk(2, dim=1).values
    seen = torch.tensor([p not in held_out for p in ds.parent_ids])
    rows = torch.nonzero(seen & (top2[:, 0] >= 0.1) & (top2[:, 1] <= top2[:, 0] / 5)).ravel()
    networks, *_ = load_ensemble(None)  # no ckpt_path: the shipped model
    pred = ensemble_predict(networks, ds.inputs()[rows], ds.mask[rows])
    offered = ds.mask[rows].numpy() > 0
    right = np.where(offered, pred.mean, -1).argmax(1) == ds.targets[rows].argmax(1).numpy()
    chance = (1 / offered.sum(1)).mean()
    assert len(rows) >= 20 and right.mean() >= max(0.7, 2 * chance), (right.mean(), chance)


def test_fine_tuning_presets_start_from_the_shipped_model():
    for experiment in ("finetune_sige", "finetune_mgb2"):
        cfg = compose_config("train", [f"experiment={experiment}"])
        assert cfg.init_from == str(pretrained_dir())
    assert compose_config("predict", ["doped=a", "pristine=b", "host=Si"]).ckpt_path is None
