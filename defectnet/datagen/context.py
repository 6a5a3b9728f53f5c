"""What every sample of a generation run shares (force field, phonon method, grid, the hosts
and their references), and the compact forms a record keeps structures and spectra in."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from omegaconf import DictConfig, OmegaConf

from defectnet.datagen.calculators import ForceField
from defectnet.datagen.parents.base import Parent
from defectnet.datagen.recommender import recommend
from defectnet.datagen.records import Provenance
from defectnet.datagen.simulate import relax_with
from defectnet.datagen.supercell import choose_supercell
from defectnet.spectra import EnergyGrid, modes_spectrum


def atoms_to_dict(atoms: Atoms, decimals: int | None = None) -> dict:
    """A structure as plain lists; ``decimals`` rounds cell and positions (Å) to keep records
    compact (1e-5 Å is far below any displacement that changes a spectrum)."""
    cell, positions = atoms.cell[:], atoms.positions
    if decimals is not None:
        cell, positions = np.round(cell, decimals), np.round(positions, decimals)
    return {
        "numbers": atoms.numbers.tolist(),
        "cell": cell.tolist(),
        "positions": positions.tolist(),
    }


def compact(values) -> list[float]:
    """Six significant digits: a spectrum's record stays a third of full ``repr`` length, far
    below the float16 step the cache may store it in."""
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def atoms_from_dict(d: dict) -> Atoms:
    return Atoms(numbers=d["numbers"], cell=d["cell"], positions=d["positions"], pbc=True)


class HostSetup(NamedTuple):
    """A parent's relaxed host, its dopant candidates, and the supercell samples are cut from
    (with the integer matrix that makes it, which a library-built record keeps)."""

    host: Atoms
    candidates: list
    supercell: Atoms
    supercell_matrix: np.ndarray


@dataclass
class Context:
    """What every sample of a run shares."""

    cfg: DictConfig
    forcefield: ForceField
    phonons: object
    grid: EnergyGrid
    out_dir: Path
    settings_hash: str
    _hosts: dict = field(default_factory=dict)
    _references: dict = field(default_factory=dict)
    _pristine: dict = field(default_factory=dict)

    def provenance(self, parent: Parent, seed_key) -> Provenance:
        return Provenance(
            parent_id=parent.id,
            formula=parent.formula,
            calculator=self.forcefield.describe(),
            phonons=self.phonons.settings(),
            settings_hash=self.settings_hash,
            seed=list(seed_key),
            defectnet=package_version("defectnet"),
        )

    def host_setup(self, parent: Parent, parent_state: dict) -> HostSetup:
        """Relaxed host, its dopant candidates and its supercell: once per parent and run."""
        if parent.id not in self._hosts:
            cfg = self.cfg
            host = atoms_from_dict(parent_state["structure"])
            user = OmegaConf.to_container(cfg.candidates) if cfg.candidates is not None else None
            candidates = recommend(host, per_type=cfg.recommender.per_type, candidates=user)
            matrix, supercell = choose_supercell(
                host, cfg.supercell.min_atoms, cfg.supercell.max_atoms, where=parent.id
            )
            self._hosts[parent.id] = HostSetup(host, candidates, supercell, np.asarray(matrix))
        return self._hosts[parent.id]

    def host_reference(self, parent: Parent, host: Atoms, candidates, supercell: Atoms):
        """What the phonon method needs from the pristine supercell (embedded: its force
        constants; superposed: the parent's defect library, kept in ``library/<id>``),
        computed once per parent and run."""
        if parent.id not in self._references:
            self._references[parent.id] = self.phonons.host_reference(
                supercell,
                self.forcefield,
                host=host,
                candidates=candidates,
                store=self.out_dir / "library" / f"{parent.id}.safetensors",
                relax=lambda atoms, fc: self.relax(atoms, self.cfg.relax, fc),
                settings={
                    "calculator": self.forcefield.describe(),
                    "relax": OmegaConf.to_container(self.cfg.relax, resolve=True),
                },
            )
        return self._references[parent.id]

    def pristine_spectrum(self, parent: Parent, parent_state: dict, supercell: Atoms, reference):
        """The spectrum a sample's doped one is read against: the pristine supercell the
        samples are cut from, through the same phonon route as every sample (so an undoped
        sample's two spectra are equal and a difference spectrum holds the dopants alone). Data
        sets made with ``pristine_spectrum: parent_cell`` keep the parent's own pristine
        spectrum (its phonon supercell), as they were made."""
        if self.phonons.relaxes_samples and self.cfg.get("pristine_spectrum") == "parent_cell":
            return parent_state["pristine"]
        if parent.id not in self._pristine:
            modes = self.phonons.doped_modes(supercell, reference, self.forcefield)
            self._pristine[parent.id] = compact(self.spectrum(modes))
        return self._pristine[parent.id]

    def relax(self, atoms: Atoms, settings: DictConfig, force_constants=None):
        """Relax with this run's force field and one relaxation section of the config
        (``force_constants``: the pristine cell's, BFGS's first Hessian)."""
        return relax_with(self.forcefield, atoms, settings, force_constants)

    def relaxed_doped(self, doped: Atoms, reference) -> tuple[Atoms, dict]:
        """The doped cell relaxed with the force field, or, when the phonon method builds
        samples from a defect library, with the library's relaxation around each dopant."""
        if self.phonons.relaxes_samples:
            relaxed = self.relax(doped, self.cfg.relax)
            return relaxed.atoms, relaxed.summary()
        return reference.relaxed_estimate(doped), {"steps": 0, "from": "defect library"}

    def structure_record(self, structure: Atoms, supercell_matrix, sites: dict) -> dict:
        """The doped cell as a record keeps it: positions when the sample was relaxed; when it
        was assembled from the defect library, the substituted sites of the host supercell
        (``sample_structure`` rebuilds the cell from them), which is 30× smaller."""
        if self.phonons.relaxes_samples:
            return atoms_to_dict(structure, decimals=5)
        return {"supercell_matrix": np.asarray(supercell_matrix).tolist(), "sites": sites}

    def spectra_settings(self) -> dict:
        """How the record's spectra were made: grid, resolution, weighting (consolidate checks
        them against the run's config)."""
        return {
            "grid": self.grid.as_dict(),
            "fwhm_mev": float(self.cfg.spectra.fwhm_mev),
            "weighting": self.weighting,
        }

    def spectrum(self, modes) -> np.ndarray:
        return modes_spectrum(modes, self.grid, float(self.cfg.spectra.fwhm_mev), self.weighting)

    @property
    def weighting(self) -> str:
        return self.cfg.spectra.get("weighting", "total")
