"""phonons=superposed: defect patches summed onto pristine force constants, checked against
finite displacements of the whole cell."""

import shutil

import numpy as np
import pytest
from ase.build import bulk
from omegaconf import OmegaConf
from phonopy import Phonopy

from defectnet.datagen.defect_library import (
    DefectLibrary,
    Patch,
    library_seconds,
    load_library,
    outside_strain,
)
from defectnet.datagen.phonons import (
    FiniteDisplacement,
    SuperposedForceConstants,
    mesh_modes,
    to_phonopy_atoms,
)
from defectnet.datagen.recommender import Candidate
from defectnet.datagen.relax import relax
from defectnet.datagen.samples import expected_cost
from defectnet.datagen.supercell import choose_supercell
from defectnet.errors import UserError
from defectnet.spectra import EnergyGrid, agreement, modes_spectrum

EYE = np.eye(3, dtype=int)
GRID = EnergyGrid()


def spectrum(modes):
    return modes_spectrum(modes, GRID, 3.0)


@pytest.fixture(scope="module")
def si(matgl):
    """Relaxed Si (8-atom cubic cell) and its 16-atom supercell."""
    host = relax(bulk("Si", "diamond", a=5.42, cubic=True), matgl.calculator(), relax_cell=True)
    _, cell = choose_supercell(host.atoms, 16, 16)
    return host.atoms, cell


class Counting:
    """A force field that counts its calls and relaxations."""

    def __init__(self, forcefield):
        self.inner, self.calls, self.relaxations = forcefield, 0, 0
        self.version = forcefield.version

    def forces(self, structures):
        self.calls += len(structures)
        return self.inner.forces(structures)

    def calculator(self):
        return self.inner.calculator()

    def pressure(self, atoms):
        return self.inner.pressure(atoms)

    def relax(self, atoms, force_constants=None):
        self.relaxations += 1
        return relax(atoms, self.inner.calculator(), fmax=0.002, force_constants=force_constants)


def candidates(*dopants):
    return [Candidate(d, "Si", "n", "test", 1.0) for d in dopants]


def build(method, si, ff, store, *dopants):
    """The Si library of ``method`` for these dopants, relaxing and computing through ``ff``."""
    host, cell = si
    return method.host_reference(
        cell, ff, host=host, candidates=candidates(*dopants), store=store, relax=ff.relax
    )


def test_a_zero_patch_gives_the_masses_only_spectrum_and_no_dopant_the_pristine_one(si, matgl):
    host, cell = si
    full = FiniteDisplacement()
    phonon = full.phonopy(cell, EYE, matgl)
    library = DefectLibrary(
        cell, np.asarray(phonon.force_constants), 1, np.zeros(len(cell), int), [0], [np.eye(3)]
    )
    method = SuperposedForceConstants()
    pristine = spectrum(method.doped_modes(cell, library, matgl))
    assert agreement(pristine, spectrum(full.modes(cell, EYE, matgl)), GRID)["cosine"] > 0.99999
    zero = Patch(np.zeros((1, 3)), np.ones(1, bool), np.zeros((1, 1, 3, 3)), np.zeros((1, 3)), 0, 0)
    library.patches[("Ge", 0)] = zero
    doped = cell.copy()
    doped[3].symbol = "Ge"
    phonon.masses = doped.get_masses()  # pristine force constants, the dopant's mass
    expected = spectrum(mesh_modes(phonon, method.mesh, 0))
    got = spectrum(method.doped_modes(doped, library, matgl))
    assert agreement(got, expected, GRID)["cosine"] > 0.99999


@pytest.mark.slow
def test_one_dopant_in_the_patch_cell_reproduces_full_phonons(si, matgl, tmp_path):
    host, cell = si
    ff = Counting(matgl)
    method = SuperposedForceConstants(cutoff=20.0, patch_atoms=(16, 16))
    library = build(method, si, ff, tmp_path / "lib.safetensors", "Ge")
    doped = cell.copy()
    doped[0].symbol = "Ge"
    structure = library.relaxed_estimate(doped)
    reference = relax(doped, matgl.calculator(), fmax=0.01).atoms
    assert np.abs(structure.positions - reference.positions).max() < 1e-3
    # as generation does: the doped cell at the positions the patches' relaxation gives
    got = spectrum(method.doped_modes(structure, library, matgl))
    expected = spectrum(FiniteDisplacement().modes(reference, EYE, matgl))
    match = agreement(got, expected, GRID)
    assert match["cosine"] > 0.99999 and match["l1"] < 0.005, match


def test_superposed_force_constants_obey_the_sum_rule_and_index_symmetry(si, matgl, tmp_path):
    host, cell = si
    ff = Counting(matgl)
    method = SuperposedForceConstants(cutoff=3.0, patch_atoms=(16, 16))
    library = build(method, si, ff, tmp_path / "lib.safetensors", "Ge", "C")
    doped = cell.copy()
    doped[0].symbol, doped[5].symbol, doped[9].symbol = "Ge", "C", "Ge"
    fc = library.doped_force_constants(doped)
    assert np.abs(fc.sum(axis=1)).max() < 1e-6 and np.abs(fc.sum(axis=0)).max() < 1e-6
    assert np.allclose(fc, fc.transpose(1, 0, 3, 2), atol=1e-8)
    assert (fc != library.force_constants).any()
    modes = method.doped_modes(doped, library, matgl)
    assert modes.n_displacements == 0 and modes.min_energy > -1.0


def test_a_patch_reaches_its_cutoff_only_unless_its_tail_is_asked_for(si, matgl, tmp_path):
    host, cell = si
    method = SuperposedForceConstants(cutoff=3.0, patch_atoms=(16, 16))
    library = build(method, si, Counting(matgl), tmp_path / "lib.safetensors", "C")
    doped = cell.copy()
    doped[0].symbol = "C"
    far = doped.get_distances(0, np.arange(len(doped)), mic=True) > 3.0 + 1e-6
    far_pairs = np.ix_(far, far)
    cut = library.doped_force_constants(doped, extent="cutoff") - library.force_constants
    tail = library.doped_force_constants(doped, extent="touched") - library.force_constants
    # within the cutoff only: pairs of far atoms keep their pristine coupling (up to the small
    # spread of phonopy's symmetrisation), while the tail changes them
    assert np.abs(cut[far_pairs]).max() < 0.1 * np.abs(tail[far_pairs]).max()
    with pytest.raises(UserError, match="patch_extent"):
        library.doped_force_constants(doped, extent="everything")


def test_corrected_one_sided_steps_make_the_central_library(si, matgl):
    """``plusminus: corrected`` in a library: each patch as central steps make it, the pristine
    cell's one-sided errors computed for the first patch and reused by the next."""
    libraries = {
        steps: build(
            SuperposedForceConstants(cutoff=3.0, patch_atoms=(16, 16), plusminus=steps),
            si,
            Counting(matgl),
            None,
            "Ge",
            "C",
        )
        for steps in ("auto", "corrected")
    }
    for dopant in ("Ge", "C"):
        central = libraries["auto"].patches[(dopant, 0)].delta
        corrected = libraries["corrected"].patches[(dopant, 0)].delta
        assert np.linalg.norm(corrected - central) < 0.1 * np.linalg.norm(central), dopant
    patches = libraries["corrected"].patches
    assert patches[("Ge", 0)].n_calls > patches[("C", 0)].n_calls  # the first paid the errors


def test_gamma_modes_equal_phonopys_gamma_point(si, matgl):
    from defectnet.datagen.phonons import gamma_modes

    _, cell = si
    phonon = FiniteDisplacement().phonopy(cell, EYE, matgl)
    doped = cell.copy()
    doped[5].symbol = "Ge"  # unequal masses
    ph = Phonopy(to_phonopy_atoms(doped), np.eye(3, dtype=int), primitive_matrix=np.eye(3))
    ph.force_constants = phonon.force_constants
    expected = mesh_modes(ph, [1, 1, 1], 0, projections=True)
    got = gamma_modes(np.asarray(phonon.force_constants), doped, projections=True)
    np.testing.assert_allclose(np.sort(got.energies_mev), np.sort(expected.energies_mev), atol=1e-3)
    for el in ("Si", "Ge"):
        order_got = np.argsort(got.energies_mev)
        order_expected = np.argsort(expected.energies_mev)
        high = slice(10, None)  # past the (degenerate, arbitrary) acoustic triplet
        np.testing.assert_allclose(
            got.element_projections[el][order_got][high].sum(),
            expected.element_projections[el][order_expected][high].sum(),
            rtol=1e-4,
        )


def test_a_stopped_library_build_resumes_without_recomputing_patches(si, matgl, tmp_path, caplog):
    caplog.set_level("INFO", logger="defectnet.datagen.phonons")
    host, cell = si
    store = tmp_path / "lib.safetensors"
    method = SuperposedForceConstants(cutoff=3.0, patch_atoms=(16, 16))
    first = Counting(matgl)
    built = build(method, si, first, store, "Ge")
    # Si's two primitive-cell atoms are related by inversion: one patch per dopant
    assert first.relaxations == 1 and set(built.patches) == {("Ge", 0)}
    again = Counting(matgl)
    more = build(method, si, again, store, "Ge", "C")
    assert again.relaxations == 1  # only the C patch is new
    assert "patch C on site class 0" in caplog.text and "(1 of 1)" in caplog.text
    assert np.array_equal(more.patches[("Ge", 0)].delta, built.patches[("Ge", 0)].delta)
    assert set(load_library(store, {**method.settings()}).patches) == set(more.patches)
    quiet = Counting(matgl)
    build(method, si, quiet, store, "Ge", "C")
    assert quiet.calls == 0 and quiet.relaxations == 0
    # what the next host's library will cost is read from the stored ones
    seconds = sum(p.seconds for p in more.patches.values())
    assert library_seconds(store) == pytest.approx(seconds, abs=0.01)
    (tmp_path / "out" / "library").mkdir(parents=True)
    shutil.copy(store, tmp_path / "out" / "library" / "diamond-Si.safetensors")
    cfg = OmegaConf.create({"cost": {"minutes_per_sample": 0.5, "minutes_per_library": 30.0}})
    cfg.cost.measured_on = "the config"
    text = expected_cost(cfg, [], 10, libraries=2, out_dir=tmp_path / "out")
    assert "10 samples to do, ≈ 30 s each (the config), and 2 host libraries" in text
    assert "(median of 1 stored here)" in text
    text = expected_cost(cfg, [], 10, libraries=2, out_dir=tmp_path / "none")
    assert "2 host libraries to build, ≈ 30 min each (the config): ≈ 1.1 h" in text


@pytest.fixture(scope="module")
def gan(matgl):
    """Relaxed wurtzite GaN (4-atom primitive cell)."""
    host = relax(bulk("GaN", "wurtzite", a=3.19, c=5.19), matgl.calculator(), relax_cell=True)
    return host.atoms


def mg_on_ga(method, gan, matgl):
    """The GaN library of ``method`` for Mg on Ga."""
    return method.host_reference(
        gan,
        matgl,
        host=gan,
        candidates=[Candidate("Mg", "Ga", "p", "test", 1.0)],
        relax=lambda atoms, fc: relax(atoms, matgl.calculator(), fmax=0.01, force_constants=fc),
    )


@pytest.mark.slow
def test_a_patch_rotated_onto_an_equivalent_site_equals_one_computed_there(gan, matgl):
    """Wurtzite's two Ga atoms of the primitive cell are related by the 6₃ screw only: the
    library computes Mg@Ga once and rotates it onto the other site."""

    from defectnet.datagen.defect_library import host_site_of, make_patch, site_classes
    from defectnet.datagen.phonons import EmbeddedForceConstants, HostForceConstants

    host = gan
    classes = site_classes(host)
    ga = [i for i, s in enumerate(host.get_chemical_symbols()) if s == "Ga"]
    assert classes.representative[classes.of_atom[ga[1]]] == classes.of_atom[ga[0]]
    method = SuperposedForceConstants(cutoff=2.5, patch_atoms=(16, 16))
    library = mg_on_ga(method, gan, matgl)
    assert len(library.patches) == 1
    _, dilute = choose_supercell(host, 16, 16)
    phonon = method.phonopy(dilute, EYE, matgl)
    fc = HostForceConstants(dilute.numbers.copy(), np.asarray(phonon.force_constants), 1)
    embedded = EmbeddedForceConstants(2.5, **method.settings_kwargs())
    kind = int(classes.of_atom[ga[1]])
    site = int(np.flatnonzero(classes.of_atom[host_site_of(dilute, host)] == kind)[0])
    direct = make_patch(
        dilute,
        site,
        "Mg",
        fc,
        matgl,
        lambda atoms, fc: relax(atoms, matgl.calculator(), fmax=0.01, force_constants=fc),
        embedded,
    )
    rotated = library.patches[("Mg", int(classes.of_atom[ga[0]]))].rotated(classes.rotation[kind])
    # the dilute cell is small: match patch atoms up to its lattice vectors
    diff = (direct.vectors[:, None] - rotated.vectors[None]) @ np.linalg.inv(dilute.cell[:])
    dist = np.linalg.norm((diff - np.round(diff)) @ dilute.cell[:], axis=2)
    order = dist.argmin(axis=0)
    assert dist.min(axis=0).max() < 1e-3
    scale = np.abs(direct.delta).max()
    assert np.abs(direct.delta[np.ix_(order, order)] - rotated.delta).max() < 0.02 * scale
    assert np.allclose(direct.relaxation[order], rotated.relaxation, atol=2e-3)


@pytest.fixture(scope="module")
def si64(matgl):
    """Relaxed Si (8-atom cubic cell) and its 64-atom cubic supercell, which keeps every
    symmetry of the crystal (so a pair patch rotated onto an equivalent pair is exact)."""
    host = relax(bulk("Si", "diamond", a=5.42, cubic=True), matgl.calculator(), relax_cell=True)
    _, cell = choose_supercell(host.atoms, 64, 64)
    return host.atoms, cell


def test_the_starting_hessian_keeps_the_force_constants_and_stiffens_what_they_leave_free():
    """Bonds keep their curvature, soft modes get at least MIN_CURVATURE, and the rigid
    translations (zero in any force constants obeying the sum rule) ASE's uniform guess."""
    from defectnet.datagen.relax import MIN_CURVATURE, starting_hessian

    k = 5.0  # two atoms joined along x by a spring
    fc = np.zeros((2, 2, 3, 3))
    fc[0, 0, 0, 0] = fc[1, 1, 0, 0] = k
    fc[0, 1, 0, 0] = fc[1, 0, 0, 0] = -k
    h = starting_hessian(fc, alpha=70.0)
    assert np.allclose(h, h.T)
    stretch = np.array([1, 0, 0, -1, 0, 0]) / np.sqrt(2)
    assert np.isclose(stretch @ h @ stretch, 2 * k)
    for axis in range(3):
        shift = np.zeros(6)
        shift[axis::3] = 1 / np.sqrt(2)
        assert np.isclose(shift @ h @ shift, 70.0)
    sideways = np.array([0, 1, 0, 0, -1, 0]) / np.sqrt(2)  # no spring: the floor
    assert np.isclose(sideways @ h @ sideways, MIN_CURVATURE)


def test_a_dopant_relaxes_in_fewer_steps_from_the_pristine_hessian(si64, matgl):
    """BFGS started from the pristine cell's force constants (what a patch's relaxation is
    given) reaches the same structure as from ASE's uniform guess, in fewer steps."""
    _, cell = si64
    fc = np.asarray(FiniteDisplacement().phonopy(cell, EYE, matgl).force_constants)
    doped = cell.copy()
    doped[0].symbol = "Sn"
    plain = relax(doped, matgl.calculator(), fmax=0.005)
    started = relax(doped, matgl.calculator(), fmax=0.005, force_constants=fc)
    assert plain.converged and started.converged
    assert started.steps < plain.steps / 2
    moved = started.atoms.positions - plain.atoms.positions
    assert np.abs(moved - moved.mean(axis=0)).max() < 0.01


def nearest_neighbour(cell, site: int, direction) -> int:
    """The atom next to ``site`` along ``direction`` (a bond of the diamond lattice)."""
    vectors = cell.get_distances(site, np.arange(len(cell)), mic=True, vector=True)
    lengths = np.linalg.norm(vectors, axis=1)
    bonded = np.flatnonzero((lengths > 0.1) & (lengths < 2.6))
    return int(bonded[np.argmax(vectors[bonded] @ np.asarray(direction, float))])


@pytest.mark.slow
def test_a_pair_patch_makes_two_bonded_dopants_exact_and_serves_every_equivalent_pair(
    si64, matgl, tmp_path
):
    host, cell = si64
    ff = Counting(matgl)
    store = tmp_path / "lib.safetensors"
    method = SuperposedForceConstants(cutoff=20.0, patch_atoms=(64, 64), pair_reach=1.2)
    library = build(method, si64, ff, store, "Ge", "C")
    assert ff.relaxations == 2 and not library.pairs  # two single patches, no pair yet
    doped = cell.copy()
    doped[0].symbol = "Ge"
    doped[nearest_neighbour(cell, 0, (1, 1, 1))].symbol = "C"
    structure = library.relaxed_estimate(doped)
    reference = relax(doped, matgl.calculator(), fmax=0.002).atoms
    assert np.abs(structure.positions - reference.positions).max() < 2e-3
    expected = spectrum(FiniteDisplacement().modes(reference, EYE, matgl))
    paired = spectrum(method.doped_modes(structure, library, matgl))
    got = agreement(paired, expected, GRID)
    plain = Phonopy(to_phonopy_atoms(structure), EYE, primitive_matrix=np.eye(3))
    plain.force_constants = library.doped_force_constants(structure, pairs=False)
    summed = agreement(spectrum(mesh_modes(plain, method.mesh, 0)), expected, GRID)  # no pair
    assert got["cosine"] > 0.99999 and got["l1"] < 0.005, got
    assert summed["l1"] > 5 * got["l1"], (summed, got)
    # the same pair on another bond, read from the other dopant: the stored patch, rotated
    other = cell.copy()
    other[8].symbol = "C"
    other[nearest_neighbour(cell, 8, (-1, 1, -1))].symbol = "Ge"
    moved = spectrum(method.doped_modes(library.relaxed_estimate(other), library, matgl))
    assert agreement(moved, paired, GRID)["cosine"] > 0.99999
    assert ff.relaxations == 3 and sum(len(v) for v in library.pairs.values()) == 1
    quiet = Counting(matgl)
    reloaded = build(method, si64, quiet, store, "Ge", "C")
    assert sum(len(v) for v in reloaded.pairs.values()) == 1
    doped = cell.copy()
    doped[0].symbol, doped[nearest_neighbour(cell, 0, (1, -1, -1))].symbol = "Ge", "C"
    reloaded.doped_force_constants(doped)
    assert quiet.calls == 0 and quiet.relaxations == 0
    with pytest.raises(UserError, match="pair_reach"):
        SuperposedForceConstants(pair_reach=-1.0)


@pytest.mark.slow
def test_a_patch_without_its_clamped_cells_strain_gives_the_free_crystals_difference(
    si, matgl, tmp_path
):
    """A dilute cell relaxed in the pristine lattice holds the whole host at a uniform strain
    that a free crystal relaxes away. With uniform_strain=removed the patch drops it, and the
    superposed difference spectrum matches `full` of the cell relaxed at zero pressure; with
    sample, the sample gets its own clamped cell's back and matches `full` of the clamped cell."""
    from defectnet.difference import agreement as difference_agreement

    host, cell = si
    ff = Counting(matgl)
    kept = SuperposedForceConstants(cutoff=20.0, patch_atoms=(16, 16))
    removed = SuperposedForceConstants(cutoff=20.0, patch_atoms=(16, 16), uniform_strain="removed")
    sample = SuperposedForceConstants(cutoff=20.0, patch_atoms=(16, 16), uniform_strain="sample")
    methods = {"kept": kept, "removed": removed, "sample": sample}
    libraries = {
        name: build(method, si, ff, tmp_path / f"{name}.safetensors", "Ge")
        for name, method in methods.items()
    }
    (patch,) = libraries["removed"].patches.values()
    assert patch.strain < -1e-3  # Ge is larger than Si: the clamped cell squeezes the host
    assert next(iter(libraries["kept"].patches.values())).strain == 0.0
    doped = cell.copy()
    doped[0].symbol = "Ge"
    free = relax(doped, matgl.calculator(), fmax=0.005, relax_cell=True).atoms
    assert free.get_volume() > cell.get_volume()
    full = FiniteDisplacement()
    pristine = spectrum(full.modes(cell, EYE, matgl))
    clamped = relax(doped, matgl.calculator(), fmax=0.005).atoms
    truth = {
        cell: spectrum(full.modes(atoms, EYE, matgl)) - pristine
        for cell, atoms in (("free", free), ("clamped", clamped))
    }
    got = {
        (name, cell): difference_agreement(
            spectrum(method.doped_modes(doped, libraries[name], matgl)) - pristine, truth[cell]
        )
        for name, method in methods.items()
        for cell in truth
    }
    for name, cell in (("removed", "free"), ("sample", "clamped")):
        assert got[name, cell]["cosine"] > 0.95, got
        assert 0.8 < got[name, cell]["norm_ratio"] < 1.25, got
    assert got["kept", "free"]["cosine"] < got["removed", "free"]["cosine"] - 0.15, got
    # what was removed is kept in the library, and a sample library keeps its cell's response
    reloaded = load_library(tmp_path / "removed.safetensors", removed.settings())
    assert next(iter(reloaded.patches.values())).strain == patch.strain
    reloaded = load_library(tmp_path / "sample.safetensors", sample.settings())
    assert np.array_equal(reloaded.strain.derivative, libraries["sample"].strain.derivative)


def test_the_outside_strain_is_the_mean_bond_strain_beyond_the_cutoff(si):
    """A cell grown uniformly by 0.1 % holds 0.1 % on every bond outside the cutoff; a cutoff
    that leaves no bond outside is refused with the settings to change."""
    _, cell = si
    grown = cell.copy()
    grown.set_cell(cell.cell[:] * 1.001, scale_atoms=True)
    near = cell.get_distances(0, np.arange(len(cell)), mic=True) <= 2.5
    assert outside_strain(grown, cell, near) == pytest.approx(1e-3, rel=1e-6)
    with pytest.raises(UserError, match="phonons.patch_atoms"):
        outside_strain(grown, cell, np.ones(len(cell), bool))


def test_a_dilute_cell_that_keeps_the_site_symmetry_needs_fewer_force_calls(gan, matgl):
    """Wurtzite's most compact 24–30-atom cell breaks the hexagonal axis, so a Ga site there
    has no symmetry left and each near atom is displaced three ways; with
    ``patch_symmetric_atoms`` the patch comes from the 32-atom cell that keeps 3m, its periodic
    images no closer, at a fraction of the calls, and the dopant relaxes as its site allows
    (three equal basal bonds; the compact cell's lopsided images pull them apart)."""

    from defectnet.datagen.supercell import image_distance

    patches = {}
    for symmetric_atoms in (0, 40):
        method = SuperposedForceConstants(
            cutoff=2.5, patch_atoms=(24, 30), patch_symmetric_atoms=symmetric_atoms
        )
        library = mg_on_ga(method, gan, matgl)
        patches[symmetric_atoms] = (method.dilute_supercell(gan), *library.patches.values())
    (compact, plain), (symmetric, kept) = patches[0], patches[40]
    assert (len(compact), len(symmetric)) == (24, 32)
    assert image_distance(symmetric) >= image_distance(compact)
    assert kept.n_calls * 2 < plain.n_calls
    lopsided, even = (
        np.sort(np.linalg.norm(p.vectors + p.relaxation, axis=1))[1:5] for p in (plain, kept)
    )
    assert np.ptp(even[:3]) < 1e-3 < 0.01 < np.ptp(lopsided)
    assert abs(lopsided.mean() - even.mean()) < 0.02


def test_a_free_patch_grows_its_dilute_cell_until_bonds_lie_beyond_the_cutoff():
    """64 atoms of diamond leave no bond beyond 5 Å of a site, so `free` cuts its patches from
    the next cell up (216 atoms); the other modes, and hosts whose 64-atom cell has such bonds,
    keep the cell they had."""
    diamond = bulk("C", "diamond", a=3.567)
    assert len(SuperposedForceConstants(uniform_strain="free").dilute_supercell(diamond)) == 216
    assert len(SuperposedForceConstants(uniform_strain="kept").dilute_supercell(diamond)) == 64
    silicon = bulk("Si", "diamond", a=5.43)
    assert len(SuperposedForceConstants(uniform_strain="free").dilute_supercell(silicon)) == 64


@pytest.mark.slow
def test_a_free_patch_and_its_samples_uniform_strain_give_the_free_crystals_signal(
    si, matgl, tmp_path
):
    """Beyond a patch's cutoff a free crystal's host is strained too: the sample's lattice grows
    (Vegard), and that uniform strain, spread over every atom, is much of a dilute dopant's
    signal. With uniform_strain=free each patch carries the strain its host holds beyond the
    cutoff once free, and each sample gets it back over its whole cell: one Ge in 64 atoms of
    Si, 5 Å patches, against `full` of the cell relaxed at zero pressure. (The gain shows in
    larger cells, where a 5 Å cut misses more: docs/benchmarks/dilute_series.md.)"""
    from defectnet.difference import agreement as difference_agreement

    host, _ = si
    _, cell = choose_supercell(host, 64, 64)
    method = SuperposedForceConstants(cutoff=5.0, patch_atoms=(64, 64), uniform_strain="free")
    library = method.host_reference(
        cell,
        matgl,
        host=host,
        candidates=candidates("Ge"),
        store=tmp_path / "free.safetensors",
        relax=lambda atoms, fc: relax(atoms, matgl.calculator(), fmax=0.005, force_constants=fc),
    )
    doped = cell.copy()
    doped[0].symbol = "Ge"
    free = relax(doped, matgl.calculator(), fmax=0.002, relax_cell=True, stress_tolerance=1e-5)
    expansion = np.cbrt(free.atoms.get_volume() / cell.get_volume()) - 1
    (patch,) = library.patches.values()
    # the host beyond the cutoff holds part of the cell's expansion around the larger Ge
    assert 0 < patch.strain < expansion
    full = FiniteDisplacement()
    pristine = spectrum(full.modes(cell, EYE, matgl))
    truth = spectrum(full.modes(free.atoms, EYE, matgl)) - pristine
    got = difference_agreement(
        spectrum(method.doped_modes(doped, library, matgl)) - pristine, truth
    )
    assert got["cosine"] > 0.95, got
    assert 0.9 < got["norm_ratio"] < 1.1, got
    reloaded = load_library(tmp_path / "free.safetensors", method.settings())
    assert next(iter(reloaded.patches.values())).strain == patch.strain
