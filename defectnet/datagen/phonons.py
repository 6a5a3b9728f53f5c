"""Phonon modes by finite displacements (phonopy), turned into spectra on the grid.

``FiniteDisplacement`` is the reference method: every symmetry-distinct displacement of the
given supercell is evaluated with the force field. It is the only place that knows how modes are
obtained, so a cheaper method for doped cells can replace it through the config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from defectnet.datagen.calculators import ForceField
from defectnet.spectra import THZ_TO_MEV


@dataclass
class Modes:
    """Phonon energies (meV) over a q-mesh with their weights, and what they cost."""

    energies_mev: np.ndarray  # [n_q * n_bands]
    weights: np.ndarray  # same length, sums to n_bands
    n_displacements: int
    n_atoms: int
    # per element, each mode's share of the eigenvector norm (for neutron weighting)
    element_projections: dict[str, np.ndarray] | None = None

    @property
    def min_energy(self) -> float:
        """Lowest mode energy; imaginary modes are negative."""
        return float(self.energies_mev.min())

    def imaginary_fraction(self, tolerance_mev: float) -> float:
        return float(self.weights[self.energies_mev < -tolerance_mev].sum() / self.weights.sum())


def to_phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell[:],
        scaled_positions=atoms.get_scaled_positions(),
        masses=atoms.get_masses(),
    )


def from_phonopy_atoms(patoms) -> Atoms:
    return Atoms(
        symbols=patoms.symbols, cell=patoms.cell, scaled_positions=patoms.scaled_positions, pbc=True
    )


class FiniteDisplacement:
    """Full finite-displacement phonons of ``unitcell`` in the supercell ``matrix``.

    ``mesh`` is phonopy's length-based q-mesh (Å): the same value samples a primitive cell and
    a 500-atom supercell to the same density in reciprocal space.
    """

    name = "full"

    def __init__(
        self,
        displacement: float = 0.01,
        plusminus: str | bool = "auto",
        mesh: float = 30.0,
        symprec: float = 1e-4,
        symmetrize_fc: bool = True,
    ):
        self.displacement = displacement
        self.plusminus = plusminus
        self.mesh = mesh
        self.symprec = symprec
        self.symmetrize_fc = symmetrize_fc

    def settings(self) -> dict:
        return {
            "method": self.name,
            "displacement": self.displacement,
            "plusminus": self.plusminus,
            "mesh": self.mesh,
            "symprec": self.symprec,
            "symmetrize_fc": self.symmetrize_fc,
        }

    def phonopy(self, unitcell: Atoms, matrix: np.ndarray, forcefield: ForceField):
        """A ``Phonopy`` object with force constants computed from displaced supercells."""
        from phonopy import Phonopy

        phonon = Phonopy(
            to_phonopy_atoms(unitcell),
            supercell_matrix=np.asarray(matrix),
            primitive_matrix=np.eye(3),
            symprec=self.symprec,
        )
        phonon.generate_displacements(distance=self.displacement, is_plusminus=self.plusminus)
        cells = [from_phonopy_atoms(c) for c in phonon.supercells_with_displacements]
        phonon.forces = np.array(forcefield.forces(cells))
        phonon.produce_force_constants()
        if self.symmetrize_fc:
            phonon.symmetrize_force_constants()  # acoustic sum rule + index symmetry
        return phonon

    def modes(self, unitcell: Atoms, matrix: np.ndarray, forcefield: ForceField) -> Modes:
        phonon = self.phonopy(unitcell, matrix, forcefield)
        return mesh_modes(phonon, self.mesh, n_displacements=len(phonon.displacements))


def mesh_modes(phonon, mesh: float, n_displacements: int, projections: bool = False) -> Modes:
    """Mode energies on phonopy's q-mesh, weighted by the q-point multiplicities; with
    ``projections``, also each element's share of every mode's eigenvector."""
    phonon.run_mesh(mesh, with_eigenvectors=projections, is_gamma_center=True)
    freqs = np.asarray(phonon.mesh.frequencies) * THZ_TO_MEV  # [n_q, n_bands]
    weights = np.repeat(
        np.asarray(phonon.mesh.weights, dtype=np.float64)[:, None], freqs.shape[1], axis=1
    )
    weights *= freqs.shape[1] / weights.sum()
    shares = None
    if projections:
        vectors = np.asarray(phonon.mesh.eigenvectors)  # [n_q, 3N, bands], columns are modes
        n_q, n_dof, n_bands = vectors.shape
        per_atom = (np.abs(vectors) ** 2).reshape(n_q, n_dof // 3, 3, n_bands).sum(axis=2)
        symbols = np.array(phonon.primitive.symbols)
        shares = {
            el: per_atom[:, symbols == el, :].sum(axis=1).ravel() for el in dict.fromkeys(symbols)
        }
    return Modes(freqs.ravel(), weights.ravel(), n_displacements, len(phonon.unitcell), shares)
