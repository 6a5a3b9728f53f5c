from collections import Counter

import pytest
from ase.build import bulk
from ase.formula import Formula
from ase.io import write

from defectnet.datagen.parents.builtin import PROTOTYPES, BuiltinParents
from defectnet.datagen.parents.files import FileParents


def test_builtin_generator_offers_2000_distinct_parents_binary_to_pentanary():
    parents = BuiltinParents().parents()
    ids = [p.id for p in parents]
    assert len(set(ids)) == len(ids) >= 2000
    orders = Counter(len(Formula(p.formula).count()) for p in parents)
    assert all(orders[n] > 0 for n in (2, 3, 4, 5))
    assert [p.id for p in BuiltinParents().parents()] == ids  # deterministic


@pytest.mark.parametrize("proto", [p.name for p in PROTOTYPES])
def test_each_prototype_builds_a_cell_with_its_formula(proto):
    parent = BuiltinParents(prototypes=[proto]).parents()[0]
    atoms = parent.atoms
    assert Formula(atoms.get_chemical_formula()).reduce()[0] == Formula(parent.formula).reduce()[0]
    assert atoms.get_volume() / len(atoms) > 5  # radii guesses give sensible densities


def test_selection_is_seeded_and_honours_include():
    src = BuiltinParents()
    a = src.select(5, seed=1, include=["GaAs"])
    assert a[0].id == "zincblende-GaAs" and len(a) == 5
    assert [p.id for p in a] == [p.id for p in src.select(5, seed=1, include=["GaAs"])]
    with pytest.raises(ValueError, match="no parent has id or formula 'Unobtainium'"):
        src.select(5, seed=1, include=["Unobtainium"])


def test_balanced_selection_spans_every_prototype_in_any_prefix():
    src = BuiltinParents()
    n_protos = len(PROTOTYPES)
    chosen = src.select(2 * n_protos, seed=0, balance_prototypes=True)
    assert len({p.prototype for p in chosen[:n_protos]}) == n_protos
    assert len({p.id for p in chosen}) == 2 * n_protos
    assert [p.id for p in chosen] == [
        p.id for p in src.select(2 * n_protos, seed=0, balance_prototypes=True)
    ]
    orders = {len(set(p.atoms.get_chemical_symbols())) for p in chosen}
    assert orders == {1, 2, 3, 4, 5}  # elemental to pentanary


def test_file_parents_read_structures_and_name_bad_files(tmp_path):
    write(tmp_path / "GaAs.cif", bulk("GaAs", "zincblende", a=5.65))
    write(tmp_path / "POSCAR_Si", bulk("Si", "diamond", a=5.43), format="vasp")
    parents = FileParents(str(tmp_path)).parents()
    assert {p.id for p in parents} == {"GaAs", "POSCAR_Si"}
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 5.0\nloop_\n_atom_site_label\n")
    with pytest.raises(ValueError, match="broken.cif: could not be read"):
        FileParents(str(tmp_path)).parents()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        FileParents(str(tmp_path / "nope")).parents()
