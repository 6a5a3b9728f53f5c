"""Embedded force constants against the full finite-displacement reference (CHGNet)."""

import numpy as np
import pytest
from ase.build import bulk

from defectnet.datagen.phonons import EmbeddedForceConstants, FiniteDisplacement
from defectnet.datagen.relax import relax

EYE = np.eye(3, dtype=int)
IMAGINARY_TOLERANCE_MEV = 0.5  # interpolation noise allowed below zero on the q-mesh


@pytest.fixture(scope="module")
def si64(chgnet):
    """Relaxed pristine Si, 64 atoms (2 × 2 × 2 conventional cells)."""
    prim = relax(bulk("Si", "diamond", a=5.46), chgnet.calculator(), fmax=0.002, relax_cell=True)
    a = prim.atoms.cell.lengths()[0] * np.sqrt(2)
    return bulk("Si", "diamond", a=a, cubic=True).repeat((2, 2, 2))


@pytest.fixture(scope="module")
def host(si64, chgnet):
    return EmbeddedForceConstants().host_reference(si64, chgnet)


@pytest.fixture(scope="module")
def si64_ge(si64, chgnet):
    doped = si64.copy()
    doped[0].symbol = "Ge"
    return relax(doped, chgnet.calculator(), fmax=0.01).atoms


def test_without_dopant_embedded_equals_full_at_no_cost(si64, host, chgnet):
    phonon, n_calls = EmbeddedForceConstants().phonopy_doped(si64, host, chgnet)
    full = FiniteDisplacement().phonopy(si64, EYE, chgnet).force_constants
    assert n_calls == 0
    assert np.abs(phonon.force_constants - full).max() < 1e-6


@pytest.mark.slow
def test_cutoff_spanning_the_cell_reproduces_full(si64_ge, host, chgnet):
    phonon, n_calls = EmbeddedForceConstants(cutoff=20.0).phonopy_doped(si64_ge, host, chgnet)
    full = FiniteDisplacement().phonopy(si64_ge, EYE, chgnet)
    # the Ge site's step has no ± partner (symmetry supplies it), so one more call on the
    # undisplaced cell removes the residual forces from its one-sided difference
    assert n_calls == len(full.displacements) + 1
    # CHGNet runs in float32: the same forces agree to ~1e-4 eV/Å² of ~10
    assert np.abs(phonon.force_constants - full.force_constants).max() < 1e-3


@pytest.mark.slow
def test_only_atoms_near_the_dopant_are_displaced(si64_ge, host, chgnet):
    method = EmbeddedForceConstants(cutoff=3.0)
    near = method.near_dopants(si64_ge, host)
    assert near.sum() == 5  # the Ge site and its four neighbours at 2.4 Å
    _, n_calls = method.phonopy_doped(si64_ge, host, chgnet)
    full = FiniteDisplacement().phonopy(si64_ge, EYE, chgnet)
    assert 1 < n_calls < len(full.displacements)


def test_embedded_force_constants_obey_sum_rule_and_index_symmetry(si64_ge, host, chgnet):
    phonon, _ = EmbeddedForceConstants(cutoff=4.5).phonopy_doped(si64_ge, host, chgnet)
    fc = phonon.force_constants
    assert np.abs(fc.sum(axis=1)).max() < 1e-8
    assert np.allclose(fc, fc.transpose(1, 0, 3, 2), atol=1e-8)


def test_relaxed_doped_cell_has_no_imaginary_modes(si64_ge, host, chgnet):
    modes = EmbeddedForceConstants(cutoff=4.5).doped_modes(si64_ge, host, chgnet)
    assert modes.min_energy > -IMAGINARY_TOLERANCE_MEV


def test_embedding_needs_the_same_supercell(si64, host, chgnet):
    with pytest.raises(ValueError, match="only substitutions"):
        EmbeddedForceConstants().doped_modes(si64[:-1], host, chgnet)
    with pytest.raises(ValueError, match="host_reference"):
        EmbeddedForceConstants().doped_modes(si64, None, chgnet)


@pytest.mark.slow
def test_one_sided_steps_with_the_residual_subtracted_match_plus_minus_pairs(matgl):
    """The default (one-sided) halves the calls of a P1 cell; with a potential whose force
    constants do not move with the step, the spectrum is that of ± pairs."""
    from defectnet.spectra import EnergyGrid, agreement, modes_spectrum

    cell = bulk("Si", "diamond", a=5.46, cubic=True)
    cell[3].symbol = "Ge"
    cell.rattle(0.03, seed=0)  # P1; relaxed loosely, as generation does, so forces remain
    cell = relax(cell, matgl.calculator(), fmax=0.01).atoms
    pairs = FiniteDisplacement(plusminus=True).modes(cell, EYE, matgl)
    one_sided = FiniteDisplacement(plusminus=False).modes(cell, EYE, matgl)
    assert pairs.n_displacements == 48 and one_sided.n_displacements == 25  # + undisplaced
    grid = EnergyGrid()
    match = agreement(modes_spectrum(one_sided, grid, 3.0), modes_spectrum(pairs, grid, 3.0), grid)
    assert match["cosine"] > 0.9999 and match["l1"] < 0.01, match


def test_a_stress_tolerance_does_not_throw_a_small_cell_apart():
    """The stress tolerance shrinks the cell filter's scale with the volume; in a 1-atom cell
    that scale would let one optimiser step strain the cell many times over (MIN_CELL_FACTOR)."""
    from ase.calculators.emt import EMT

    ref = relax(bulk("Cu", "fcc", a=3.6), EMT(), fmax=1e-4, relax_cell=True).atoms
    strained = ref.copy()
    strained.set_cell(ref.cell[:] * 1.02, scale_atoms=True)
    got = relax(strained, EMT(), fmax=0.01, relax_cell=True, stress_tolerance=1e-5)
    assert got.converged
    assert abs(got.atoms.get_volume() / ref.get_volume() - 1) < 0.01


def test_a_small_stress_in_a_large_cell_is_relaxed_when_a_stress_tolerance_is_set():
    """ASE scales the cell's generalised force by the volume per atom, so a stress that falls
    as 1 / atoms (one dilute dopant) passes fmax without a cell step; stress_tolerance makes
    the stress itself converge."""
    from ase.calculators.emt import EMT

    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(4)  # 256 atoms
    ref = relax(cell, EMT(), fmax=1e-4, relax_cell=True, stress_tolerance=1e-7).atoms
    strained = ref.copy()
    strained.set_cell(ref.cell[:] * 1.0002, scale_atoms=True)  # stress ≈ 5e-4 eV/Å³
    loose = relax(strained, EMT(), fmax=0.01, relax_cell=True)
    tight = relax(strained, EMT(), fmax=0.01, relax_cell=True, stress_tolerance=1e-5)
    assert loose.steps == 0 and abs(loose.volume_change) < 1e-9  # passed as it was
    assert tight.steps > 0
    assert abs(tight.atoms.get_volume() / ref.get_volume() - 1) < 6e-5  # strain 10 × smaller
    calc = EMT()
    tight.atoms.calc = calc
    assert np.abs(tight.atoms.get_stress()[:3]).max() < 1e-5
