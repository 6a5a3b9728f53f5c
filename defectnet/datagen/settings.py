"""What defines a data set: the settings hash (records and caches are checked against it) and
the energy grid of a generation config."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from defectnet.spectra import EnergyGrid

# Keys that only say how or where to run (and what the folder is called), not what the data
# set is.
RUNTIME_KEYS = (
    "name",
    "shard",
    "num_shards",
    "shard_by",
    "stage",
    "out_dir",
    "cache",
    "force",
    "progress",
    "cost",
)


# Settings added after data sets were made with their implied value: at that value they stay
# out of the hash, so those data sets still resume.
IMPLIED = {
    ("spectra", "weighting"): "total",
    ("sampling", "site_counts"): "log_uniform",
    ("sampling", "undoped_fraction"): 0.0,
    ("phonons", "pair_reach"): 0.0,
}
# ``pristine_spectrum``: data sets made before it had the parent's own pristine spectrum
# (``parent_cell``) when every sample was relaxed; that value stays out of the hash (below).
TOP_IMPLIED = {
    "balance_prototypes": False,
    "sample_stability": {"imaginary_tolerance_mev": 3.0, "max_imaginary_fraction": None},
    "reference_cells": {"high_fraction": 0.1},
}


# Parent sources that moved after data sets were made: hashed under the class path they had
# then, so those data sets keep their hash.
HASHED_AS = {
    "defectnet.datagen.parents.builtin.BuiltinParents": "defectnet.datagen.parents.BuiltinParents",
    "defectnet.datagen.parents.files.FileParents": "defectnet.datagen.parents.FileParents",
    "defectnet.datagen.parents.materials_project.MaterialsProjectParents": (
        "defectnet.datagen.parents.MaterialsProjectParents"
    ),
    "defectnet.datagen.parents.melt_quench.MeltQuenchParents": (
        "defectnet.finetune.sige.MeltQuenchParents"
    ),
    "defectnet.datagen.parents.mgb2.MgB2Parents": "defectnet.finetune.mgb2.MgB2Parents",
    "defectnet.datagen.parents.ncrystal.NCrystalParents": (
        "defectnet.datagen.reference_dos.NCrystalParents"
    ),
}


def settings_hash(cfg: DictConfig) -> str:
    """Hash of everything that defines the data set (not how it is run)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data = {k: v for k, v in data.items() if k not in RUNTIME_KEYS and k != "hydra"}
    for (section, key), value in IMPLIED.items():
        if data.get(section, {}).get(key, value) == value:
            data.get(section, {}).pop(key, None)
    for key, value in TOP_IMPLIED.items():
        if data.get(key, value) == value:
            data.pop(key, None)
    if data.get("pristine_spectrum", "parent_cell") == "parent_cell" or not relaxes_samples(data):
        data.pop("pristine_spectrum", None)  # superposed samples always had the sample's cell
    source = data.get("parents", {})
    if source.get("_target_") in HASHED_AS:
        source["_target_"] = HASHED_AS[source["_target_"]]
    for forcefield in (data.get("calculator", {}), data.get("parents", {}).get("forcefield", {})):
        forcefield.pop("device", None)  # where a potential runs does not change the data
        forcefield.pop("batch_size", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def relaxes_samples(data: dict) -> bool:
    """Whether the configured phonon method relaxes and computes every sample (``full``,
    ``embedded``) rather than assembling it from a defect library."""
    return not data.get("phonons", {}).get("_target_", "").endswith("SuperposedForceConstants")


def grid_from_config(cfg: DictConfig) -> EnergyGrid:
    s = cfg.spectra
    return EnergyGrid(float(s.e_min), float(s.e_max), int(s.n_points))


def made_like(cfg: DictConfig) -> dict:
    """How a generation config makes its records (settings hash, grid, resolution, weighting):
    what ``data.cache.consolidate`` checks every record against."""
    return {
        "settings_hash": settings_hash(cfg),
        "grid": grid_from_config(cfg),
        "fwhm_mev": float(cfg.spectra.fwhm_mev),
        "weighting": cfg.spectra.get("weighting", "total"),
    }
