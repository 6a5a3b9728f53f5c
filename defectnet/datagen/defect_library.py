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

A dilute cell is clamped: its lattice cannot grow or shrink around the dopant, so the whole host
is held at a uniform strain, which in a free crystal (zero pressure) relaxes away; that strain
changes every force constant of the cell by ε·dΦ/dε and is the largest part of a patch's
spectral signal (one dopant in 216 atoms of GaAs, InAs, ZnSe: the clamped cell's difference
spectrum has cosine −0.21 to −0.39 with the same cell at zero pressure, and the clamped one less
ε·dΦ/dε has 0.988–0.999; scripts/bench_uniform_strain.py). With ``uniform_strain="removed"``
each patch is stored without it: ε is the strain that changes the pristine dilute cell's
pressure as much as the dopant did (``StrainResponse``), dΦ/dε comes from the pristine dilute
cell strained once. With
``"sample"`` the patches are stored so too, and each sample gets back the uniform strain its own
clamped cell would hold: the sum of its dopants' (ε × dilute-cell atoms / sample atoms) times the
sample cell's dΦ/dε (the library's ``strain``): what `full` of a clamped sample cell computes.
With ``"free"`` the missing far field is carried: in a crystal at zero pressure the host beyond
the cutoff is not unstrained but expanded (Vegard), and that uniform strain, spread over every
atom, is much of a dilute dopant's signal (GaAs:Sb in 216 atoms: a 5 Å cut of the free cell's ΔΦ
has 0.48 of `full`'s norm, the cut plus the outside bonds' mean strain times dΦ/dε 0.90). Each
patch drops the strain its host holds outside the cutoff (σ, the mean change of the bonds
between atoms beyond it, ``outside_strain``) and carries σ − ε, the strain that host holds once
the cell is free; a sample gets the sum of its dopants' carried strains (× dilute-cell atoms /
sample atoms) times its own dΦ/dε.

Two dopants closer than ``pair_cutoff`` (``phonons.pair_reach`` × the host's nearest-neighbour
distance) are not independent: their patches overlap on the bonds between them and the sum
counts those twice. A pair patch is the correction a dilute cell with both dopants gives to that
sum (ΔΦ of the pair minus the two single patches, over the atoms within the cutoff of either).
Pair patches are computed the first time a sample holds such a pair, once per symmetry orbit of
the pair (the representative site's site-symmetry operations relate the pair vectors of one
orbit), and kept in the library like single patches.
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
from defectnet.datagen.relax import RelaxResult
from defectnet.errors import UserError

log = logging.getLogger(__name__)
LIBRARY_FORMAT = "2"
# settings of how samples are assembled from a library, not of the library itself
SAMPLE_SETTINGS = ("samples_at_gamma", "sum_rule", "patch_extent", "pair_reach")
# how far a placed patch reaches: the pairs within the cutoff, or every pair the dilute cell
# changed (its far tail)
PATCH_EXTENTS = ("cutoff", "touched")
PAIR_TOLERANCE = 0.05  # Å: two pair vectors closer than this are the same pair
# bonds: atoms closer than this × the host's nearest-neighbour distance (outside_strain)
BOND_REACH = 1.25


@dataclass
class Patch:
    """ΔΦ of one dopant on one kind of site, over the atoms it touches."""

    vectors: np.ndarray  # [K, 3] pristine positions relative to the dopant (Å)
    near: np.ndarray  # [K] displaced atoms (within the cutoff); ΔΦ is zero on other pairs
    delta: np.ndarray  # [K, K, 3, 3] eV/Å²
    relaxation: np.ndarray  # [K, 3] displacement of each atom on relaxation (Å)
    n_calls: int  # force calls of its displacements
    seconds: float
    strain: float = 0.0  # the uniform strain carried on (remove_uniform_strain)
    cell_atoms: int = 0  # atoms of that dilute cell (the strain is this dopant's over them)
    relax_steps: int = 0  # force calls of its relaxation (0 in libraries that did not count)

    def rotated(self, rotation: np.ndarray) -> Patch:
        """The same patch on a symmetry-equivalent site (Cartesian ``rotation``)."""
        return Patch(
            vectors=self.vectors @ rotation.T,
            near=self.near,
            delta=np.einsum("ab,ijbc,dc->ijad", rotation, self.delta, rotation),
            relaxation=self.relaxation @ rotation.T,
            n_calls=0,
            seconds=0.0,
            strain=self.strain,
            cell_atoms=self.cell_atoms,
        )


@dataclass
class StrainResponse:
    """How the pristine dilute cell answers a uniform strain ε (each length × (1 + ε)): what a
    patch needs to drop the strain its clamped cell holds the host at."""

    derivative: np.ndarray  # [N, N, 3, 3] dΦ/dε, eV/Å² per unit strain
    pressure: float  # eV/Å³ of the pristine cell
    stiffness: float  # dp/dε, eV/Å³ per unit strain (−3 × the bulk modulus)
    n_calls: int

    def strain_of(self, pressure: float) -> float:
        """The uniform strain that moves the pristine cell's pressure to ``pressure``."""
        return (pressure - self.pressure) / self.stiffness


def strain_response(cell: Atoms, force_constants: np.ndarray, method, forcefield, step=0.005):
    """``StrainResponse`` of the pristine ``cell`` (force constants ``force_constants``) from
    the same cell strained by ``step``: its force constants by ``method`` (a symmetric cell:
    few force calls) and both pressures."""
    strained = cell.copy()
    strained.set_cell(cell.cell[:] * (1 + step), scale_atoms=True)
    phonon = method.phonopy(strained, np.eye(3, dtype=int), forcefield)
    pressure = forcefield.pressure(cell)
    return StrainResponse(
        derivative=(np.asarray(phonon.force_constants) - force_constants) / step,
        pressure=pressure,
        stiffness=(forcefield.pressure(strained) - pressure) / step,
        n_calls=method.n_calls(phonon) + 2,
    )


def remove_uniform_strain(
    delta, relaxed: Atoms, pristine: Atoms, near, strain, forcefield, free: bool = False
) -> tuple:
    """``delta`` (ΔΦ of a clamped dilute cell, computed on the pairs that touch a ``near``
    atom) less a uniform strain on those pairs, and the strain the patch carries on.

    Without ``free``: the cell's uniform strain ε (from its pressure), removed and carried on.
    With ``free``: the strain the host holds away from the dopant, σ (``outside_strain``), is
    removed, and σ − ε carried on: in the same cell at zero pressure the lattice grows by −ε
    and the host beyond the cutoff is strained by σ − ε, this dopant's share of the uniform
    strain a free sample's host holds (over the dilute cell's atoms)."""
    eps = strain.strain_of(forcefield.pressure(relaxed))
    removed, carried = eps, eps
    if free:
        sigma = outside_strain(relaxed, pristine, near)
        removed, carried = sigma, sigma - eps
    pairs = (near[:, None] | near[None, :])[:, :, None, None]
    return delta - removed * strain.derivative * pairs, carried


def has_far_bonds(cell: Atoms, cutoff: float) -> bool:
    """Whether around every atom of ``cell`` some nearest-neighbour bond joins two atoms beyond
    ``cutoff`` of it: what ``outside_strain`` measures, wherever the dopant sits."""
    distances = cell.get_all_distances(mic=True)
    bonds = (distances > 0) & (distances < BOND_REACH * nearest_neighbour_distance(cell))
    for row in distances:
        outside = row > cutoff
        if not bonds[np.ix_(outside, outside)].any():
            return False
    return True


def outside_strain(relaxed: Atoms, pristine: Atoms, near: np.ndarray) -> float:
    """Mean relative change of the nearest-neighbour bonds between atoms outside ``near``
    (``relaxed`` against ``pristine``, the same cell): the uniform part of the strain the host
    holds away from the dopant (the dopant's shear field averages out over the bonds)."""
    outside = np.flatnonzero(~near)
    before = pristine.get_all_distances(mic=True)[np.ix_(outside, outside)]
    after = relaxed.get_all_distances(mic=True)[np.ix_(outside, outside)]
    bonds = (before > 0) & (before < BOND_REACH * nearest_neighbour_distance(pristine))
    if not bonds.any():
        raise UserError(
            f"phonons.uniform_strain=free: no bond of the {len(pristine)}-atom dilute cell lies "
            "beyond the cutoff; raise phonons.patch_atoms or lower phonons.cutoff."
        )
    return float(np.mean(after[bonds] / before[bonds] - 1))


@dataclass
class PairPatch:
    """The correction of two nearby dopants to the sum of their patches, with dopant ``a`` on
    its class's representative site and dopant ``b`` at ``vector`` from it."""

    vector: np.ndarray  # [3] Å, in the representative's frame
    patch: Patch  # vectors relative to dopant a, ΔΦ and relaxation beyond the two single patches


# (dopant a, representative class of its site, dopant b) → the pair patches of that kind
PairKey = tuple[str, int, str]


@dataclass
class SiteClasses:
    """The host's kinds of site: each atom's primitive-cell atom (``of_atom``), and for each of
    those its orbit's representative and the Cartesian rotation carrying the representative's
    surroundings onto its own."""

    of_atom: np.ndarray  # [n_host] primitive-cell atom of each host atom
    representative: np.ndarray  # [n_classes]
    rotation: np.ndarray  # [n_classes, 3, 3]
    # per representative, the Cartesian rotations of its site-symmetry group
    site_ops: dict[int, np.ndarray] = field(default_factory=dict)


def site_classes(host: Atoms, symprec: float = 1e-3) -> SiteClasses:
    """Classify the host's sites with spglib: translations share a class, rotations relate
    classes of one orbit."""
    import spglib

    cell = (host.cell[:], host.get_scaled_positions(), host.numbers)
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        n = len(host)
        identity = np.tile(np.eye(3), (n, 1, 1))
        return SiteClasses(np.arange(n), np.arange(n), identity, dict(enumerate(identity[:, None])))
    of_atom = np.asarray(data.mapping_to_primitive)
    n_classes = int(of_atom.max()) + 1
    representative = np.arange(n_classes)
    rotation = np.tile(np.eye(3), (n_classes, 1, 1))
    frac = host.get_scaled_positions()
    lattice = host.cell[:].T  # columns: lattice vectors, so r_cart = lattice @ r_frac
    to_cart = [lattice @ rot @ np.linalg.inv(lattice) for rot in data.rotations]
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
    site_ops = {}
    for k in sorted(set(representative.tolist())):
        atom = int(np.flatnonzero(of_atom == k)[0])
        diff = np.einsum("oab,b->oa", data.rotations, frac[atom]) + data.translations - frac[atom]
        fixes = np.abs(diff - np.round(diff)).max(axis=1) < 10 * symprec
        site_ops[k] = np.array([to_cart[o] for o in np.flatnonzero(fixes)])
    return SiteClasses(of_atom, representative, rotation, site_ops)


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


def nearest_neighbour_distance(atoms: Atoms) -> float:
    """The shortest distance between two atoms of a periodic cell (Å)."""
    distances = atoms.get_all_distances(mic=True)
    return float(distances[~np.eye(len(atoms), dtype=bool)].min())


def atoms_near(atoms: Atoms, sites, cutoff: float) -> np.ndarray:
    """Mask of the atoms within ``cutoff`` Å of any of ``sites`` (the sites included)."""
    near = np.zeros(len(atoms), dtype=bool)
    for site in np.atleast_1d(sites):
        near |= atoms.get_distances(site, np.arange(len(atoms)), mic=True) <= cutoff
    return near


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
    pairs: dict[PairKey, list[PairPatch]] = field(default_factory=dict)
    # how the pristine force constants strain: a dilute cell's (its patches drop their uniform
    # strain), or, with uniform_strain="sample" or "free", the sample cell's (each sample gets
    # its own)
    strain: StrainResponse | None = field(default=None, repr=False)
    # set by the phonon method for this run: dopants closer than pair_cutoff (Å) get a pair
    # patch, computed and added by pair_builder(key, vector) the first time a sample needs it
    pair_cutoff: float = 0.0
    site_ops: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    pair_builder: Callable[[PairKey, np.ndarray], Patch] | None = field(default=None, repr=False)
    _rotated: dict[tuple[str, int], Patch] = field(default_factory=dict, repr=False)

    @property
    def library_calls(self) -> int:
        """Force calls the library took: its cells' displacements and its patches'
        displacements and relaxations."""
        patches = [*self.patches.values(), *(p.patch for kind in self.pairs.values() for p in kind)]
        return self.n_displacements + sum(p.n_calls + p.relax_steps for p in patches)

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

    def placed(self, doped: Atoms, within_cutoff: bool = False, pairs: bool = True):
        """Each substituted site's patch with the cell atom of each patch atom (those that fall
        on no atom of the cell left out, and with ``within_cutoff`` those beyond the patch's
        cutoff): (patch, kept patch atoms, their cell atoms); then, with ``pairs``, the pair
        patch of every two dopants within ``pair_cutoff``."""
        sites = np.flatnonzero(doped.numbers != self.pristine.numbers)
        for site in sites:
            patch = self.patch_at(doped[site].symbol, site)
            index = wrap_to_atoms(self.pristine, site, patch.vectors)
            keep = (index >= 0) & (patch.near if within_cutoff else True)
            yield patch, keep, index[keep]
        if not pairs or self.pair_cutoff <= 0:
            return
        for n, i in enumerate(sites[:-1]):
            near = self.pristine.get_distances(i, sites[n + 1 :], mic=True) <= self.pair_cutoff
            for j in sites[n + 1 :][near]:
                patch, origin = self.pair_at(doped, int(i), int(j))
                index = wrap_to_atoms(self.pristine, origin, patch.vectors)
                keep = index >= 0
                yield patch, keep, index[keep]

    def pair_at(self, doped: Atoms, i: int, j: int) -> tuple[Patch, int]:
        """The pair patch of the dopants on sites ``i`` and ``j``, placed on this pair, and the
        site its vectors start from; computed (``pair_builder``) when the library lacks it."""
        vector = self.pristine.get_distance(i, j, mic=True, vector=True)
        orientations = []
        for a, b, v in ((i, j, vector), (j, i, -vector)):
            kind = int(self.site_class[a])
            rep = int(self.representative[kind])
            ops = self.site_ops[rep]
            images = ops @ (self.rotation[kind].T @ v)  # the pair's vector in the rep's frame
            key = (doped[a].symbol, rep, doped[b].symbol)
            for stored in self.pairs.get(key, []):
                hit = np.flatnonzero(
                    np.linalg.norm(images - stored.vector, axis=1) < PAIR_TOLERANCE
                )
                if hit.size:
                    return stored.patch.rotated(self.rotation[kind] @ ops[hit[0]].T), a
            orientations.append((key, images, kind, a))
        if self.pair_builder is None:
            raise UserError(
                f"phonons.pair_reach: no pair patch for {orientations[0][0]} in this library "
                "and no force field to compute it."
            )
        key, images, kind, a = orientations[0]
        pick = int(np.lexsort(np.round(images, 3).T[::-1])[-1])  # a fixed member of the orbit
        patch = self.pair_builder(key, images[pick])
        ops = self.site_ops[key[1]]
        return patch.rotated(self.rotation[kind] @ ops[pick].T), a

    def doped_force_constants(
        self, doped: Atoms, sum_rule: str = "local", extent: str = "cutoff", pairs: bool = True
    ) -> np.ndarray:
        """Pristine force constants plus one patch on every substituted site (and, with
        ``pairs``, a pair patch on every two within ``pair_cutoff``); acoustic sum rule and
        index symmetry restored.

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
        eps = 0.0
        for patch, keep, idx in self.placed(doped, extent == "cutoff", pairs):
            np.add.at(fc, (idx[:, None], idx[None, :]), patch.delta[np.ix_(keep, keep)])
            eps += patch.strain * patch.cell_atoms / len(fc)
        if self.strain is not None:  # uniform_strain="sample" or "free": the sample's own
            fc += eps * self.strain.derivative
        if sum_rule == "local":
            fc = local_sum_rule(fc)
        symmetrize_force_constants(fc, level=2)
        return fc

    def relaxed_estimate(self, doped: Atoms) -> Atoms:
        """The doped cell with every patch's relaxation displacements added (no force call)."""
        out = doped.copy()
        for patch, keep, idx in self.placed(doped):
            np.add.at(out.positions, idx, patch.relaxation[keep])
        return out


def local_sum_rule(fc: np.ndarray) -> np.ndarray:
    """Force constants made index-symmetric, each row's sum-rule error given back to its own
    self term (what a cut ΔΦ breaks)."""
    fc = 0.5 * (fc + fc.transpose(1, 0, 3, 2))
    diag = np.arange(len(fc))
    off = fc.sum(axis=1) - fc[diag, diag]
    fc[diag, diag] = -0.5 * (off + off.transpose(0, 2, 1))
    return fc


def make_patch(
    dilute: Atoms,
    site: int,
    dopant: str,
    pristine_fc,
    forcefield: ForceField,
    relax: Callable[[Atoms, np.ndarray], RelaxResult],
    embedded,
    threshold: float = 1e-4,
    strain: StrainResponse | None = None,
    free: bool = False,
) -> Patch:
    """One dopant on ``site`` of the pristine ``dilute`` cell: relax (``relax(atoms,
    force_constants)``, BFGS started from the pristine cell's Hessian), recompute the rows of the
    atoms within the cutoff, keep ΔΦ on the pairs they touch (with ``strain``, less a uniform
    strain: ``remove_uniform_strain``)."""
    t0 = time.perf_counter()
    doped = dilute.copy()
    doped[site].symbol = dopant
    result = relax(doped, pristine_fc.force_constants)
    relaxed = result.atoms
    phonon, n_calls = embedded.phonopy_doped(relaxed, pristine_fc, forcefield)
    delta = np.asarray(phonon.force_constants) - pristine_fc.force_constants
    near = atoms_near(dilute, site, embedded.cutoff)
    eps = 0.0
    if strain is not None:
        delta, eps = remove_uniform_strain(delta, relaxed, dilute, near, strain, forcefield, free)
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
        strain=eps,
        cell_atoms=len(dilute) if strain is not None else 0,
        relax_steps=result.steps,
    )


def make_pair_patch(
    dilute: DefectLibrary,
    pristine_fc,
    key: PairKey,
    vector: np.ndarray,
    forcefield: ForceField,
    relax: Callable[[Atoms, np.ndarray], RelaxResult],
    embedded,
    free: bool = False,
) -> Patch:
    """Dopant ``key[0]`` on the first site of class ``key[1]`` of the dilute cell (``dilute``: its
    pristine force constants, ``pristine_fc`` as the embedding reads them, and the single
    patches) and ``key[2]`` at ``vector`` from it: relax, recompute the rows within the cutoff
    of either, keep what the two single patches placed there do not give (with the dilute
    cell's ``strain``, both the pair's and the singles' uniform strain removed)."""
    t0 = time.perf_counter()
    cell = dilute.pristine
    a = int(np.flatnonzero(dilute.site_class == key[1])[0])
    b = int(wrap_to_atoms(cell, a, np.asarray(vector)[None])[0])
    if b < 0 or b == a:
        raise UserError(
            f"phonons.pair_reach: the dilute cell of {len(cell)} atoms cannot hold a pair "
            f"{np.linalg.norm(vector):.2f} Å apart; lower phonons.pair_reach or raise "
            "phonons.patch_atoms."
        )
    doped = cell.copy()
    doped[a].symbol, doped[b].symbol = key[0], key[2]
    # from the two patches' relaxation and the pristine Hessian: fewer steps
    result = relax(dilute.relaxed_estimate(doped), dilute.force_constants)
    relaxed = result.atoms
    phonon, n_calls = embedded.phonopy_doped(relaxed, pristine_fc, forcefield)
    rest = np.asarray(phonon.force_constants) - dilute.force_constants
    near = atoms_near(cell, [a, b], embedded.cutoff)
    eps = 0.0
    if dilute.strain is not None:
        rest, eps = remove_uniform_strain(
            rest, relaxed, cell, near, dilute.strain, forcefield, free
        )
    moved = relaxed.positions - cell.positions
    frac = moved @ np.linalg.inv(cell.cell[:])
    moved = (frac - np.round(frac)) @ cell.cell[:]
    for patch, keep, idx in dilute.placed(doped, within_cutoff=True, pairs=False):
        np.subtract.at(rest, (idx[:, None], idx[None, :]), patch.delta[np.ix_(keep, keep)])
        np.subtract.at(moved, idx, patch.relaxation[keep])
        eps -= patch.strain  # the pair's strain beyond its two dopants' own
    atoms = np.flatnonzero(near)
    return Patch(
        vectors=np.asarray(cell.get_distances(a, atoms, mic=True, vector=True)),
        near=np.ones(len(atoms), bool),
        delta=rest[np.ix_(atoms, atoms)],
        relaxation=moved[atoms],
        n_calls=n_calls,
        seconds=time.perf_counter() - t0,
        strain=eps,
        cell_atoms=len(cell) if dilute.strain is not None else 0,
        relax_steps=result.steps,
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
        patches[key] = {
            "n_calls": patch.n_calls,
            "seconds": round(patch.seconds, 3),
            "strain": patch.strain,
            "cell_atoms": patch.cell_atoms,
            "relax_steps": patch.relax_steps,
        }
    pairs = []
    for (dopant_a, site, dopant_b), kind in library.pairs.items():
        for pair in kind:
            key = f"pair{len(pairs)}"
            tensors[f"{key}/vectors"] = pair.patch.vectors.astype(np.float64)
            tensors[f"{key}/delta"] = pair.patch.delta.astype(np.float64)
            tensors[f"{key}/relaxation"] = pair.patch.relaxation.astype(np.float64)
            pairs.append(
                {
                    "key": [dopant_a, site, dopant_b],
                    "vector": pair.vector.tolist(),
                    "n_calls": pair.patch.n_calls,
                    "seconds": round(pair.patch.seconds, 3),
                    "strain": pair.patch.strain,
                    "cell_atoms": pair.patch.cell_atoms,
                    "relax_steps": pair.patch.relax_steps,
                }
            )
    if library.strain is not None:
        tensors["strain_derivative"] = library.strain.derivative.astype(np.float64)
    meta = {
        "format_version": LIBRARY_FORMAT,
        "settings": json.dumps(settings, sort_keys=True),
        "n_displacements": str(library.n_displacements),
        "patches": json.dumps(patches),
        "pairs": json.dumps(pairs),
    }
    if library.strain is not None:
        meta["strain"] = json.dumps(
            {
                "pressure": library.strain.pressure,
                "stiffness": library.strain.stiffness,
                "n_calls": library.strain.n_calls,
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def library_header(path: Path) -> dict:
    """A stored library's metadata (settings, patches' calls and seconds), without its arrays."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:
        return fh.metadata() or {}


def library_seconds(path: Path) -> float:
    """How long a stored library's patches took to build, summed (read from its header only):
    what the next host's library will cost, roughly."""
    meta = library_header(path)
    patches = json.loads(meta.get("patches", "{}")).values()
    pairs = json.loads(meta.get("pairs", "[]"))
    return float(sum(p["seconds"] for p in [*patches, *pairs]))


def load_library(path: Path, settings: dict) -> DefectLibrary | None:
    """A stored library made with the same settings, else None (then it is rebuilt)."""
    from safetensors.numpy import load_file

    if not path.is_file():
        return None
    meta = library_header(path)
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
            strain=float(info.get("strain", 0.0)),
            cell_atoms=int(info.get("cell_atoms", 0)),
            relax_steps=int(info.get("relax_steps", 0)),
        )
    if "strain" in meta:
        library.strain = StrainResponse(t["strain_derivative"], **json.loads(meta["strain"]))
    for n, info in enumerate(json.loads(meta.get("pairs", "[]"))):
        vectors = t[f"pair{n}/vectors"]
        patch = Patch(
            vectors=vectors,
            near=np.ones(len(vectors), bool),
            delta=t[f"pair{n}/delta"],
            relaxation=t[f"pair{n}/relaxation"],
            n_calls=int(info["n_calls"]),
            seconds=float(info["seconds"]),
            strain=float(info.get("strain", 0.0)),
            cell_atoms=int(info.get("cell_atoms", 0)),
            relax_steps=int(info.get("relax_steps", 0)),
        )
        dopant_a, site, dopant_b = info["key"]
        pair = PairPatch(np.asarray(info["vector"]), patch)
        library.pairs.setdefault((dopant_a, int(site), dopant_b), []).append(pair)
    return library
