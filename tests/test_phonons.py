"""Embedded force constants against the full finite-displacement reference (CHGNet)."""

import numpy as np
import pytest
from ase.build import bulk
from phonopy import Phonopy

from defectnet.datagen.phonons import (
    EmbeddedForceConstants,
    FiniteDisplacement,
    HostForceConstants,
    near_displacement_count,
    to_phonopy_atoms,
)
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


def test_an_embedded_calculation_is_costed_before_a_force_call():
    """One dopant keeps diamond's Td site (one displacement of its own); a second one 3.8 Å
    away leaves a mirror, so the pair's near atoms cost more than two single dopants'."""
    cell = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))
    second = cell.get_distances(0, np.arange(len(cell)), mic=True)
    j = int(np.flatnonzero(np.isclose(second, 5.43 / np.sqrt(2)))[0])
    assert near_displacement_count(cell, 0, 0.0) == (1, 24)
    single, _ = near_displacement_count(cell, 0, 3.0)
    pair, order = near_displacement_count(cell, [0, j], 3.0)
    assert order == 2 and pair > 2 * single
    # a cutoff beyond the cell: every displacement phonopy asks of the doped cell
    whole, _ = near_displacement_count(cell, 0, 20.0)
    doped = cell.copy()
    doped[0].symbol = "Ge"
    phonon = Phonopy(to_phonopy_atoms(doped), np.eye(3, dtype=int), primitive_matrix=np.eye(3))
    phonon.generate_displacements(distance=0.03, is_plusminus=False)
    assert whole == len(phonon.displacements)


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


def _loose_p1_cell(matgl):
    """Si with one Ge, rattled to P1 and relaxed loosely, as generation does: forces remain."""
    cell = bulk("Si", "diamond", a=5.46, cubic=True)
    cell[3].symbol = "Ge"
    cell.rattle(0.03, seed=0)
    return relax(cell, matgl.calculator(), fmax=0.01).atoms


def test_one_sided_steps_with_the_residual_subtracted_match_plus_minus_pairs(matgl):
    """On the total spectrum one-sided steps (half the calls of a P1 cell) look like ± pairs;
    the difference spectrum is where they fail (the slow test below)."""
    from defectnet.spectra import EnergyGrid, agreement, modes_spectrum

    cell = _loose_p1_cell(matgl)
    pairs = FiniteDisplacement(plusminus=True).modes(cell, EYE, matgl)
    one_sided = FiniteDisplacement(plusminus=False).modes(cell, EYE, matgl)
    assert pairs.n_displacements == 48 and one_sided.n_displacements == 25  # + undisplaced
    grid = EnergyGrid()
    match = agreement(modes_spectrum(one_sided, grid, 3.0), modes_spectrum(pairs, grid, 3.0), grid)
    assert match["cosine"] > 0.9999 and match["l1"] < 0.01, match


def test_the_default_steps_are_central_differences(matgl):
    """``full``'s default (``plusminus: auto``) gives the force constants of ± pairs, not the
    one-sided ones whose error is the potential's third derivative times the step."""
    from hydra.utils import instantiate

    from .conftest import compose_config

    default = instantiate(compose_config("generate", ["phonons=full"]).phonons)
    cell = _loose_p1_cell(matgl)
    fc = {
        name: method.phonopy(cell, EYE, matgl).force_constants
        for name, method in (
            ("default", default),
            ("pairs", FiniteDisplacement(plusminus=True)),
            ("one-sided", FiniteDisplacement(plusminus=False)),
        )
    }
    central_error = np.abs(fc["default"] - fc["pairs"]).max()
    one_sided_error = np.abs(fc["one-sided"] - fc["pairs"]).max()
    assert central_error < 1e-3 < one_sided_error / 10, (central_error, one_sided_error)


def test_corrected_one_sided_steps_give_the_central_patch(matgl):
    """Ge in diamond Si (no inversion at the site): one-sided steps put the potential's third
    derivative × the step into ΔΦ; less the pristine crystal's one-sided error of each step
    (one call per translation orbit and direction, once per reference) they give central's."""
    prim = relax(bulk("Si", "diamond", a=5.45), matgl.calculator(), fmax=0.002, relax_cell=True)
    pristine = bulk("Si", "diamond", a=prim.atoms.cell.lengths()[0] * np.sqrt(2), cubic=True)
    pristine = pristine.repeat((2, 2, 2))
    fc0 = np.asarray(FiniteDisplacement().phonopy(pristine, EYE, matgl).force_constants)
    doped = pristine.copy()
    doped[0].symbol = "Ge"
    doped = relax(doped, matgl.calculator(), fmax=0.005, force_constants=fc0).atoms
    reference = HostForceConstants(pristine.numbers.copy(), fc0, 0, pristine=pristine)
    delta, calls = {}, {}
    for plusminus in ("auto", False, "corrected"):
        method = EmbeddedForceConstants(cutoff=4.0, plusminus=plusminus)
        phonon, calls[plusminus] = method.phonopy_doped(doped, reference, matgl)
        delta[plusminus] = (phonon.force_constants - fc0)[method.near_dopants(doped, reference)]
    error = {
        k: np.linalg.norm(delta[k] - delta["auto"]) / np.linalg.norm(delta["auto"])
        for k in (False, "corrected")
    }
    assert error["corrected"] < 0.1 and error["corrected"] < error[False] / 3, error
    # the pristine errors: one call per orbit and step (+ the undisplaced cell), then kept
    assert calls["corrected"] > calls[False]
    again = EmbeddedForceConstants(cutoff=4.0, plusminus="corrected")
    assert again.phonopy_doped(doped, reference, matgl)[1] == calls[False]


def test_corrected_steps_need_a_pristine_crystal():
    from defectnet.errors import UserError

    with pytest.raises(UserError, match="embedded or superposed"):
        FiniteDisplacement(plusminus="corrected")
    with pytest.raises(UserError, match="choose auto"):
        EmbeddedForceConstants(plusminus="both")


@pytest.mark.slow
def test_one_dopants_difference_spectrum_does_not_depend_on_the_cells_shape(matgl):
    """One S in InAs: per unit concentration, (doped − pristine) × N of a 64-atom cubic cell
    and a 128-atom fcc-shaped one agree with central differences; one-sided steps put a
    host-wide error into the fcc-shaped cell's difference (2.7× the signal, cosine 0.72)."""
    from ase.build import make_supercell

    from defectnet.cli import ROOT_DIR
    from defectnet.difference import agreement as difference_agreement
    from defectnet.io import read_structure
    from defectnet.spectra import EnergyGrid, modes_spectrum

    prim = read_structure(ROOT_DIR / "data" / "realism" / "structures" / "zincblende-InAs.cif")
    prim = relax(prim, matgl.calculator(), fmax=0.002, relax_cell=True).atoms
    grid = EnergyGrid()
    to_cubic = np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]])

    def per_unit(matrix, plusminus):
        method = FiniteDisplacement(plusminus=plusminus, symprec=1e-3)
        pristine = make_supercell(prim, matrix)
        doped = pristine.copy()
        doped[[a.symbol for a in doped].index("As")].symbol = "S"
        doped = relax(
            doped, matgl.calculator(), fmax=0.001, relax_cell=True, stress_tolerance=1e-6
        ).atoms
        spectra = [
            modes_spectrum(method.modes(c, EYE, matgl), grid, 3.0) for c in (doped, pristine)
        ]
        return (spectra[0] - spectra[1]) * len(pristine)

    cubic = per_unit(2 * to_cubic, "auto")
    central = difference_agreement(per_unit(4 * EYE, "auto"), cubic)
    one_sided = difference_agreement(per_unit(4 * EYE, False), cubic)
    assert central["cosine"] > 0.95 and 0.8 < central["norm_ratio"] < 1.25, central
    assert one_sided["norm_ratio"] > 2 or one_sided["cosine"] < 0.8, one_sided


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
