import pytest
from ase.build import bulk

from defectnet.datagen.recommender import recommend
from defectnet.elements import DOPANTS, NOBLE_GASES


def _valid(cands, host):
    return all(
        c.dopant in DOPANTS
        and c.dopant not in NOBLE_GASES
        and c.dopant not in host
        and c.replaces in host
        for c in cands
    )


def test_substitution_probabilities_for_a_sulfide():
    cands = recommend(bulk("ZnS", "zincblende", a=5.4))
    assert cands and {c.source for c in cands} == {"pymatgen-substitution-probability"}
    assert {c.kind for c in cands} == {"n", "p"}
    assert _valid(cands, {"Zn", "S"})


def test_anions_are_never_put_on_cation_sites():
    """pymatgen's p-type list for K2O ranks Br-, I-, S2- on K+; a substitution keeps the sign
    of the ion it replaces."""
    from defectnet.datagen.parents.builtin import BuiltinParents

    (k2o,) = [
        p for p in BuiltinParents(prototypes=["antifluorite"]).parents() if p.id.endswith("-OK2")
    ]
    cands = recommend(k2o.atoms)
    anions = {"F", "Cl", "Br", "I", "O", "S", "Se", "Te", "N", "P", "As"}
    assert cands and all((c.dopant in anions) == (c.replaces == "O") for c in cands), cands


def test_elemental_host_falls_back_to_periodic_neighbours():
    cands = recommend(bulk("Si", "diamond", a=5.43))
    names = {c.dopant for c in cands}
    assert {"B", "P", "Ge", "C"} <= names and _valid(cands, {"Si"})
    assert {c.source for c in cands} == {"periodic-neighbours"}


def test_user_candidates_override():
    cands = recommend(bulk("GaAs", "zincblende", a=5.65), candidates={"Zn": "Ga", "Se": "As"})
    assert [(c.dopant, c.replaces, c.source) for c in cands] == [
        ("Zn", "Ga", "user"),
        ("Se", "As", "user"),
    ]
    with pytest.raises(ValueError, match="not in the host"):
        recommend(bulk("GaAs", "zincblende", a=5.65), candidates={"Zn": "Si"})
