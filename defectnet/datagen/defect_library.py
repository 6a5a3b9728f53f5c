"""A per-host library of defect force-constant patches, superposed into doped cells of any size.

A substituted dopant changes the force constants only near itself, and that change is the same
in every sample that holds the dopant on that kind of site. So it is computed once per (host,
dopant, site): a dilute cell with one substitution is relaxed, the atoms within ``cutoff`` of
the dopant are displaced (symmetry-reduced; the other rows come from the pristine dilute cell,
as ``phonons=embedded`` does), and the patch keeps ΔΦ = doped − pristine on every pair that
involves a displaced atom, keyed by the atoms' positions relative to the dopant, together with
the relaxation displacements around it. A doped cell is then assembled without any force call:
the pristine force constants of that cell plus one patch on every substituted site, then the
acoustic sum rule and index symmetry restored.

Sites are told apart by their atom of the primitive cell (``mapping_to_primitive``). Patches are
computed once per symmetry orbit of those atoms (a Wyckoff position): the patch of any other
atom of the orbit is the representative's, rotated by the space-group operation that carries
the one onto the other (vectors and relaxation by R, ΔΦ by R·ΔΦ·Rᵀ).
The library of one parent is one safetensors file, rewritten atomically after every patch, so a
killed build resumes without recomputing what it finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from defectnet.atomic import atomic_path
from defectnet.datagen.calculators import ForceField
from defectnet.errors import UserError

log = logging.getLogger(__name__)
LIBRARY_FORMAT = "2"
# settings of how samples are assembled from a library, not of the library itself
SAMPLE_SETTINGS = ("samples_at_gamma", "sum_rule", "patch_extent")
# how far a placed patch reaches: the pairs within the cutoff, or every pair the dilute cell
# changed (its far tail)
PATCH_EXTENTS = ("cutoff", "touched")


@dataclass
class Patch:
    """ΔΦ of one dopant on one kind of site, over the atoms it touches."""

    vectors: np.ndarray  # [K, 3] pristine positions relative to the dopant (Å)
    near: np.ndarray  # [K] displaced atoms (within the cutoff); ΔΦ is zero on other pairs
    delta: np.ndarray  # [K, K, 3, 3] eV/Å²
    relaxation: np.ndarray  # [K, 3] displacement of each atom on relaxation (Å)
    n_calls: int
    seconds: float

    def rotated(self, rotation: np.ndarray) -> Patch:
        """The same patch on a symmetry-equivalent site (Cartesian ``rotation``)."""
        return Patch(
            vectors=self.vectors @ rotation.T,
            near=self.near,
            delta=np.einsum("ab,ijbc,dc->ijad", rotation, self.delta, rotation),
            relaxation=self.relaxation @ rotation.T,
            n_calls=0,
            seconds=0.0,
        )


@dataclass
class SiteClasses:
    """The host's kinds of site: each atom's primitive-cell atom (``of_atom``), and for each of
    those its orbit's representative and the Cartesian rotation carrying the representative's
    surroundings onto its own."""

    of_atom: np.ndarray  # [n_host] primitive-cell atom of each host atom
    representative: np.ndarray  # [n_classes]
    rotation: np.ndarray  # [n_classes, 3, 3]


def site_classes(host: Atoms, symprec: float = 1e-3) -> SiteClasses:
    """Classify the host's sites with spglib: translations share a class, rotations relate
    classes of one orbit."""
    import spglib

    cell = (host.cell[:], host.get_scaled_positions(), host.numbers)
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        n = len(host)
        return SiteClasses(np.arange(n), np.arange(n), np.tile(np.eye(3), (n, 1, 1)))
    of_atom = np.asarray(data.mapping_to_primitive)
    n_classes = int(of_atom.max()) + 1
    representative = np.arange(n_classes)
    rotation = np.tile(np.eye(3), (n_classes, 1, 1))
    frac = host.get_scaled_positions()
    lattice = host.cell[:].T  # columns: lattice vectors, so r_cart = lattice @ r_frac
    for atom in range(len(host)):
        k, rep_atom = of_atom[atom], int(data.equivalent_atoms[atom])
        if of_atom[rep_atom] == k or representative[k] != k:
            continue
        for rot, trans in zip(data.rotations, data.translations):
            diff = rot @ frac[rep_atom] + trans - frac[atom]
            if np.abs(diff - np.round(diff)).max() < 10 * symprec:
                representative[k] = of_atom[rep_atom]
                rotation[k] = lattice @ rot @ np.linalg.inv(lattice)
                break
    return SiteClasses(of_atom, representative, rotation)


def host_site_of(atoms: Atoms, host: Atoms) -> np.ndarray:
    """For each atom of a supercell of ``host`` (pristine positions), its atom of ``host``."""
    frac = atoms.positions @ np.linalg.inv(host.cell[:])
    diff = frac[:, None, :] - host.get_scaled_positions()[None, :, :]
    diff -= np.round(diff)
    dist = np.linalg.norm(diff @ host.cell[:], axis=2)
    site = dist.argmin(axis=1)
    if dist[np.arange(len(atoms)), site].max() > 0.05:
        raise ValueError("the supercell's atoms do not sit on the host cell's sites")
    return site


def wrap_to_atoms(atoms: Atoms, origin: int, vectors: np.ndarray, tol: float = 0.2) -> np.ndarray:
    """Index of the atom at ``positions[origin] + vector`` (periodic images folded) for each
    vector, or -1 where no atom is there."""
    cell = atoms.cell[:]
    target = atoms.positions[origin] + vectors
    diff = (target @ np.linalg.inv(cell))[:, None, :] - atoms.get_scaled_positions()[None]
    diff -= np.round(diff)
    dist = np.linalg.norm(diff @ cell, axis=2)
    index = dist.argmin(axis=1)
    return np.where(dist[np.arange(len(vectors)), index] < tol, index, -1)


@dataclass
class DefectLibrary:
    """The pristine force constants of the doped supercell and the patches of one parent."""

    pristine: Atoms  # the doped samples' pristine supercell
    force_constants: np.ndarray  # [N, N, 3, 3] of ``pristine``
    n_displacements: int  # force calls for ``force_constants``
    site_class: np.ndarray  # [N] primitive-cell atom of each site of ``pristine``
    representative: np.ndarray  # [n_classes] each class's orbit representative
    rotation: np.ndarray  # [n_classes, 3, 3] representative's surroundings → the class's
    patches: dict[tuple[str, int], Patch] = field(default_factory=dict)  # by representative
    _rotated: dict[tuple[str, int], Patch] = field(default_factory=dict, repr=False)

    @property
    def library_calls(self) -> int:
        return self.n_displacements + sum(p.n_calls for p in self.patches.values())

    def patch_at(self, dopant: str, site: int) -> Patch:
        kind = int(self.site_class[site])
        key = (dopant, int(self.representative[kind]))
        if key not in self.patches:
            known = sorted({d for d, _ in self.patches})
            raise UserError(
                f"phonons=superposed: no patch for {dopant} on site class {key[1]} of this host "
                f"(library holds {known}); a sample may only use the host's candidates."
            )
        if key[1] == kind:
            return self.patches[key]
        if (dopant, kind) not in self._rotated:
            self._rotated[(dopant, kind)] = self.patches[key].rotated(self.rotation[kind])
        return self._rotated[(dopant, kind)]

    def placed(self, doped: Atoms, within_cutoff: bool = False):
        """Each substituted site's patch with the cell atom of each patch atom (those that fall
        on no atom of the cell left out, and with ``within_cutoff`` those beyond the patch's
        cutoff): (patch, kept patch atoms, their cell atoms)."""
        for site in np.flatnonzero(doped.numbers != self.pristine.numbers):
            patch = self.patch_at(doped[site].symbol, site)
            index = wrap_to_atoms(self.pristine, site, patch.vectors)
            keep = (index >= 0) & (patch.near if within_cutoff else True)
            yield patch, keep, index[keep]

    def doped_force_constants(
        self, doped: Atoms, sum_rule: str = "local", extent: str = "cutoff"
    ) -> np.ndarray:
        """Pristine force constants plus one patch on every substituted site; acoustic sum
        rule and index symmetry restored.

        ``extent="cutoff"`` adds each patch's ΔΦ on the pairs of atoms within its cutoff only;
        ``"touched"`` also adds its far tail (pairs reaching atoms beyond the cutoff whose
        coupling changed in the dilute cell). Against ``full`` on 128-atom cells of Si, GaAs,
        GaN and CuInSe₂ at 1–25 % the tails of many overlapping patches add up wrongly (GaN at
        12 %: L1 0.394 with them, 0.096 without); without them every cell beats the
        dopant-masses-only spectrum (``scripts/bench_phonons.py``).

        A patch is cut off at its own atoms, so its rows miss a little of the sum rule.
        ``sum_rule="local"`` gives that back to the self terms of the rows it came from (then
        phonopy's symmetrisation removes the small rest exactly); ``"phonopy"`` lets phonopy
        spread all of it over every pair of the cell. Against ``full`` on 64-atom Si cells with
        2–6 C / Ge / Sn, local lowers L1 by 15–23 % (e.g. 0.181 → 0.147 with six dopants).
        """
        from phonopy.harmonic.force_constants import symmetrize_force_constants

        if sum_rule not in ("local", "phonopy"):
            raise UserError(f"phonons.sum_rule='{sum_rule}': choose local or phonopy.")
        if extent not in PATCH_EXTENTS:
            raise UserError(
                f"phonons.patch_extent='{extent}': choose one of {', '.join(PATCH_EXTENTS)}."
            )
        fc = np.array(self.force_constants, dtype=np.float64)
        for patch, keep, idx in self.placed(doped, within_cutoff=extent == "cutoff"):
            np.add.at(fc, (idx[:, None], idx[None, :]), patch.delta[np.ix_(keep, keep)])
        if sum_rule == "local":
            fc = 0.5 * (fc + fc.transpose(1, 0, 3, 2))
            diag = np.arange(len(fc))
            off = fc.sum(axis=1) - fc[diag, diag]
            fc[diag, diag] = -0.5 * (off + off.transpose(0, 2, 1))
        symmetrize_force_constants(fc, level=2)
        return fc

    def relaxed_estimate(self, doped: Atoms) -> Atoms:
        """The doped cell with every patch's relaxation displacements added (no force call)."""
        out = doped.copy()
        for patch, keep, idx in self.placed(doped):
            np.add.at(out.positions, idx, patch.relaxation[keep])
        return out


def make_patch(
    dilute: Atoms,
    site: int,
    dopant: str,
    pristine_fc,
    forcefield: ForceField,
    relax: Callable[[Atoms], Atoms],
    embedded,
    threshold: float = 1e-4,
) -> Patch:
    """One dopant on ``site`` of the pristine ``dilute`` cell: relax, recompute the rows of the
    atoms within the cutoff, keep ΔΦ on the pairs they touch."""
    t0 = time.perf_counter()
    doped = dilute.copy()
    doped[site].symbol = dopant
    relaxed = relax(doped)
    phonon, n_calls = embedded.phonopy_doped(relaxed, pristine_fc, forcefield)
    delta = np.asarray(phonon.force_constants) - pristine_fc.force_constants
    near = dilute.get_distances(site, np.arange(len(dilute)), mic=True) <= embedded.cutoff
    touched = near | (np.abs(delta[near]).max(axis=(0, 2, 3)) > threshold)
    pairs = near[touched][:, None] | near[touched][None, :]
    sub = delta[np.ix_(touched, touched)] * pairs[:, :, None, None]
    vectors = dilute.get_distances(site, np.flatnonzero(touched), mic=True, vector=True)
    moved = relaxed.positions - dilute.positions
    frac = moved @ np.linalg.inv(dilute.cell[:])
    moved = (frac - np.round(frac)) @ dilute.cell[:]
    return Patch(
        vectors=np.asarray(vectors),
        near=near[touched],
        delta=sub,
        relaxation=moved[touched],
        n_calls=n_calls,
        seconds=time.perf_counter() - t0,
    )


def save_library(path: Path, library: DefectLibrary, settings: dict) -> None:
    """One safetensors file (no pickle), written whole or not at all."""
    from safetensors.numpy import save_file

    tensors = {
        "pristine_numbers": library.pristine.numbers.astype(np.int64),
        "pristine_cell": np.asarray(library.pristine.cell[:], dtype=np.float64),
        "pristine_positions": library.pristine.positions.astype(np.float64),
        "force_constants": library.force_constants.astype(np.float64),
        "site_class": library.site_class.astype(np.int64),
        "representative": library.representative.astype(np.int64),
        "rotation": library.rotation.astype(np.float64),
    }
    patches = {}
    for (dopant, site), patch in library.patches.items():
        key = f"{dopant}@{site}"
        tensors[f"{key}/vectors"] = patch.vectors.astype(np.float64)
        tensors[f"{key}/near"] = patch.near.astype(np.int8)
        tensors[f"{key}/delta"] = patch.delta.astype(np.float64)
        tensors[f"{key}/relaxation"] = patch.relaxation.astype(np.float64)
        patches[key] = {"n_calls": patch.n_calls, "seconds": round(patch.seconds, 3)}
    meta = {
        "format_version": LIBRARY_FORMAT,
        "settings": json.dumps(settings, sort_keys=True),
        "n_displacements": str(library.n_displacements),
        "patches": json.dumps(patches),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_library(path: Path, settings: dict) -> DefectLibrary | None:
    """A stored library made with the same settings, else None (then it is rebuilt)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if not path.is_file():
        return None
    with safe_open(str(path), framework="numpy") as fh:
        meta = fh.metadata() or {}
    if meta.get("format_version") != LIBRARY_FORMAT:
        return None
    stored = json.loads(meta.get("settings", "{}"))
    wanted = json.loads(json.dumps(settings, sort_keys=True))
    for key in SAMPLE_SETTINGS:
        stored.pop(key, None), wanted.pop(key, None)
    if stored != wanted:
        raise UserError(
            f"{path}: a defect library made with other settings; delete it to rebuild it, or "
            "restore the phonons.* settings it was made with."
        )
    t = load_file(str(path))
    pristine = Atoms(
        numbers=t["pristine_numbers"],
        cell=t["pristine_cell"],
        positions=t["pristine_positions"],
        pbc=True,
    )
    library = DefectLibrary(
        pristine,
        t["force_constants"],
        int(meta["n_displacements"]),
        t["site_class"],
        t["representative"],
        t["rotation"],
    )
    for key, info in json.loads(meta["patches"]).items():
        dopant, site = key.split("@")
        library.patches[(dopant, int(site))] = Patch(
            vectors=t[f"{key}/vectors"],
            near=t[f"{key}/near"].astype(bool),
            delta=t[f"{key}/delta"],
            relaxation=t[f"{key}/relaxation"],
            n_calls=int(info["n_calls"]),
            seconds=float(info["seconds"]),
        )
    return library
