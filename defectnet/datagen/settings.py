"""What defines a data set: the settings hash (records and caches are checked against it) and
the energy grid of a generation config."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from importlib import resources

from omegaconf import DictConfig, OmegaConf

from defectnet.spectra import EnergyGrid

# Keys that only say how or where to run (and what the folder is called) or which records the
# cache takes, not how the records are made.
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
    "cache_stability",
    "cache_parents",
    "compile_potential",
    "force_workers",
    "also_accepts",
    "reference_cells",  # which reference cells stage=references adds; each entry keeps its own c
)


# Settings added after data sets were made with their implied value: at that value they stay
# out of the hash, so those data sets still resume.
IMPLIED = {
    ("spectra", "weighting"): "total",
    ("sampling", "site_counts"): "log_uniform",
    ("sampling", "undoped_fraction"): 0.0,
    ("phonons", "pair_reach"): 0.0,
    ("phonons", "uniform_strain"): "kept",
    ("phonons", "patch_symmetric_atoms"): 0,
    ("relax", "stress_tolerance"): None,
}
# ``pristine_spectrum``: data sets made before it had the parent's own pristine spectrum
# (``parent_cell``) when every sample was relaxed; that value stays out of the hash (below).
TOP_IMPLIED = {
    "balance_prototypes": False,
    "sample_stability": {"imaginary_tolerance_mev": 3.0, "max_imaginary_fraction": None},
}


# The hash names each component (potential, phonon method, parent source) by its config file,
# ``conf/<group>/<name>.yaml``, not by its class path, so a class can move without changing any
# data set's hash. Data sets made before that were hashed under the class paths their
# components had then: ``legacy_settings_hash`` still gives that hash, and every check accepts
# both (``accepted_hashes``).
COMPONENT_GROUPS = ("calculator", "phonons", "parents")
HASHED_AS = {
    "defectnet.datagen.calculators.chgnet.CHGNetForceField": (
        "defectnet.datagen.calculators.CHGNetForceField"
    ),
    "defectnet.datagen.calculators.mace_mp.MACEForceField": (
        "defectnet.datagen.calculators.MACEForceField"
    ),
    "defectnet.datagen.calculators.matgl.MatGLForceField": (
        "defectnet.datagen.calculators.MatGLForceField"
    ),
    "defectnet.datagen.calculators.sevenn.SevenNetForceField": (
        "defectnet.datagen.calculators.SevenNetForceField"
    ),
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


@cache
def registered_names(group: str) -> dict[str, str]:
    """Class path → ``<group>/<name>`` for every component ``conf/<group>/`` offers."""
    names: dict[str, str] = {}
    for path in sorted((resources.files("defectnet.conf") / group).iterdir(), key=str):
        if path.name.endswith(".yaml"):
            target = OmegaConf.load(str(path)).get("_target_")
            if target and target not in names:
                names[target] = f"{group}/{path.name.removesuffix('.yaml')}"
    return names


def settings_hash(cfg: DictConfig) -> str:
    """Hash of everything that defines the data set (not how it is run); components by name."""
    return _hash(cfg, lambda group, target: registered_names(group).get(target, target))


def legacy_settings_hash(cfg: DictConfig) -> str:
    """The hash data sets made before components were hashed by name carry."""
    return _hash(cfg, lambda group, target: HASHED_AS.get(target, target))


def accepted_hashes(cfg: DictConfig) -> tuple[str, ...]:
    """The hashes of records this config may resume or consolidate: its own, the legacy, and
    those of the config with each change of ``also_accepts`` (a set that went on with a cheaper
    way of making the same records, e.g. ``phonons.plusminus``, keeps what it made before)."""
    variants = [
        settings_hash(OmegaConf.merge(cfg, change)) for change in cfg.get("also_accepts") or ()
    ]
    return (settings_hash(cfg), legacy_settings_hash(cfg), *variants)


def _hash(cfg: DictConfig, component: Callable[[str, str], str]) -> str:
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
    melt_quench = data.get("parents", {}).get("forcefield")  # a potential inside a source
    for group, section in [
        *((g, data.get(g)) for g in COMPONENT_GROUPS),
        ("calculator", melt_quench),
    ]:
        if isinstance(section, dict) and "_target_" in section:
            section["_target_"] = component(group, section["_target_"])
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
    what ``data.cache.consolidate`` checks every record against, the most imaginary modes a
    sample may have to enter the cache, and the parents it caches (None: all)."""
    return {
        "settings_hash": settings_hash(cfg),
        "accepted_hashes": accepted_hashes(cfg),
        "grid": grid_from_config(cfg),
        "fwhm_mev": float(cfg.spectra.fwhm_mev),
        "weighting": cfg.spectra.get("weighting", "total"),
        "max_imaginary_fraction": cfg.get("cache_stability", {}).get("max_imaginary_fraction"),
        "parents": cfg.get("cache_parents"),
    }
