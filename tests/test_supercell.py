import numpy as np
import pytest
from ase.build import bulk

from defectnet.datagen.phonons import near_displacement_count
from defectnet.datagen.recommender import Candidate
from defectnet.datagen.supercell import (
    SupercellRangeError,
    choose_supercell,
    image_distance,
    substitute,
    symmetric_supercell,
)


def test_adaptive_supercell_meets_the_paper_range():
    for atoms in (bulk("Si", "diamond", a=5.43), bulk("ZnO", "wurtzite", a=3.25, c=5.2)):
        _, sc = choose_supercell(atoms, 433, 500)
        assert 433 <= len(sc) <= 500
        assert 1 / len(sc) == pytest.approx(0.002, rel=0.2)


def test_impossible_range_is_a_clear_error():
    with pytest.raises(SupercellRangeError, match="widen supercell.min_atoms"):
        choose_supercell(bulk("Si", "diamond", a=5.43), 9, 9)


def test_substitution_counts_concentrations_and_distractors():
    _, sc = choose_supercell(bulk("GaAs", "zincblende", a=5.65), 60, 70)
    cands = [
        Candidate("Zn", "Ga", "p", "t"),
        Candidate("Se", "As", "n", "t"),
        Candidate("In", "Ga", "iso", "t"),
        Candidate("Sb", "As", "iso", "t"),
    ]
    for seed in range(10):
        s = substitute(
            sc, cands, np.random.default_rng(seed), n_dopants=(1, 2), n_distractors=(1, 2)
        )
        symbols = s.atoms.get_chemical_symbols()
        for el, n in s.counts.items():
            assert symbols.count(el) == n and s.concentrations[el] == n / len(sc)
            assert n / len(sc) <= 0.25 + 1e-9
        assert not set(s.distractors) & set(s.counts)
        assert set(s.distractors) <= {c.dopant for c in s.candidates}
        # dopants sit only on the sublattice they replace
        for el, idx in s.sites.items():
            host = {c.replaces for c in cands if c.dopant == el}
            assert {sc[i].symbol for i in idx} == host
    a = substitute(sc, cands, np.random.default_rng(3))
    b = substitute(sc, cands, np.random.default_rng(3))
    assert a.sites == b.sites


def test_an_already_repeated_cell_is_its_own_supercell():
    """A 64-atom diamond cell's conventional cell (8 atoms) is smaller, not a base for it."""
    cell = bulk("Si", "diamond", a=5.46, cubic=True).repeat(2)
    matrix, sc = choose_supercell(cell, 64, 64)
    assert (matrix == np.eye(3, dtype=int)).all() and len(sc) == 64


def test_uniform_site_counts_spread_over_the_range_and_bad_names_fail():
    cell = bulk("Si", "diamond", a=5.46, cubic=True).repeat(2)
    cands = [Candidate("Ge", "Si", "user", "user")]
    draw = lambda mode, seed: substitute(  # noqa: E731
        cell, cands, np.random.default_rng(seed), (1, 1), (0.0, 0.25), (0, 0), 0.25, mode
    ).counts["Ge"]
    uniform = [draw("uniform", s) for s in range(200)]
    log_uniform = [draw("log_uniform", s) for s in range(200)]
    assert min(uniform) == 1 and max(uniform) == 16
    assert np.mean(uniform) == pytest.approx(8.5, abs=1.0)
    assert np.mean(uniform) > np.mean(log_uniform) + 2
    with pytest.raises(ValueError, match="sampling.site_counts='gaussian'"):
        draw("gaussian", 0)


def site_symmetry_order(cell, site: int) -> int:
    """Point operations of ``cell`` with one atom marked at ``site``."""
    return near_displacement_count(cell, site, 0.0)[1]


def test_a_dilute_cell_can_keep_the_dopants_site_symmetry():
    """Wurtzite's most compact 200–260-atom cell breaks the hexagonal axis, so a dopant there
    has no symmetry and every near atom must be displaced three ways; the smallest cell that
    keeps the point group (and its images as far apart) gives the O site back its 3m."""
    zno = bulk("ZnO", "wurtzite", a=3.25, c=5.21)
    _, compact = choose_supercell(zno, 200, 260)
    assert site_symmetry_order(compact, 1) == 1
    matrix, symmetric = symmetric_supercell(zno, 200, 340, image_distance(compact))
    assert 200 <= len(symmetric) <= 340
    assert image_distance(symmetric) >= image_distance(compact) - 1e-6
    assert site_symmetry_order(symmetric, 1) == 6
    # a cubic crystal's most compact cell keeps its symmetry already: the same cell comes back
    gaas = bulk("GaAs", "zincblende", a=5.65)
    compact_matrix, compact = choose_supercell(gaas, 200, 260)
    matrix, symmetric = symmetric_supercell(gaas, 200, 340, image_distance(compact))
    assert np.array_equal(matrix, compact_matrix)
    assert site_symmetry_order(symmetric, 0) == 24
    # none when the range holds no such cell
    assert symmetric_supercell(zno, 200, 210, image_distance(compact)) is None
