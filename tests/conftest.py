"""Shared fixtures: composed Hydra configs and one model per potential and session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from defectnet.cli import CONF_DIR, ROOT_DIR

DEMO_CACHE = ROOT_DIR / "data" / "demo_hosts8" / "dataset.safetensors"
DEMO_REFERENCES = ROOT_DIR / "data" / "demo_hosts8" / "references"  # its single-dopant spectra

# A Si run small enough for a test: 8-atom cells, one dopant at a time.
TINY_SI = [
    "num_parents=0",
    "include=[diamond-Si]",
    "samples_per_parent=2",
    "progress=false",
    "supercell.min_atoms=8",
    "supercell.max_atoms=8",
    "pristine_supercell.min_atoms=8",
    "pristine_supercell.max_atoms=16",
    "sampling.n_dopants=[1,1]",
    "sampling.concentration=[0.1,0.15]",
    "sampling.n_distractors=[0,0]",
]


def pytest_configure(config):
    """Under pytest-xdist, each worker (and the processes its tests start) gets its share of
    the cores, so workers do not fight over them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        threads = max(1, (os.cpu_count() or 1) // int(workers))
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.fixture
def generate_cfg(tmp_path: Path):
    def make(*overrides: str, out: str = "gen") -> DictConfig:
        return compose_config("generate", [f"out_dir={tmp_path / out}", *TINY_SI, *overrides])

    return make


@pytest.fixture
def train_cfg(tmp_path: Path):
    """Training config with the run folder in tmp_path, as Hydra would set it."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config("train", ["logger=csv", *overrides])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    return make


@pytest.fixture(scope="session")
def chgnet():
    from defectnet.datagen.calculators.chgnet import CHGNetForceField

    return CHGNetForceField()


@pytest.fixture(scope="session")
def matgl():
    """The default potential (TensorNet-MatPES-r2SCAN, shipped with the package)."""
    from defectnet.datagen.calculators.matgl import MatGLForceField

    return MatGLForceField()


SMALL = [
    "model.model.d_model=32",
    "model.model.n_heads=2",
    "model.model.conv_channels=[16,32]",
    "model.model.head_hidden=32",
]


def _train_briefly(out: Path, *overrides: str) -> Path:
    from defectnet.training import train

    cfg = compose_config(
        "train",
        ["experiment=demo", "logger=none", "trainer.max_epochs=2", "test=false", *overrides],
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def ensemble(tmp_path_factory) -> list[Path]:
    """Two small DefectNets (seeds 0, 1; one split) from two short epochs on the demo set."""
    root = tmp_path_factory.mktemp("ensemble")
    return [_train_briefly(root / f"seed{s}", f"seed={s}", *SMALL) for s in (0, 1)]


@pytest.fixture(scope="session")
def pretrained(ensemble) -> Path:
    return ensemble[0]


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory) -> Path:
    """A small reference-informed DefectNet from two short epochs on the demo set."""
    return _train_briefly(
        tmp_path_factory.mktemp("reference"),
        "model=reference_defectnet",
        f"data.references={DEMO_REFERENCES}",
        *SMALL,
    )


@pytest.fixture(scope="session")
def mlp_checkpoint(tmp_path_factory) -> Path:
    return _train_briefly(tmp_path_factory.mktemp("mlp"), "model=mlp")
