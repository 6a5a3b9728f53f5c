import numpy as np
import pytest

from defectnet.elements import (
    DOPANTS,
    PROPOSABLE,
    UnknownElementError,
    candidate_vector,
    composition_vector,
    dopant_index,
    formula_composition,
)


def test_vocabulary_is_h_to_ba_in_z_order():
    assert len(DOPANTS) == 56 and DOPANTS[0] == "H" and DOPANTS[-1] == "Ba"
    assert DOPANTS.index("Si") == 13
    assert not {"He", "Ne", "Ar", "Kr", "Xe"} & set(PROPOSABLE)


def test_candidate_vector_and_errors():
    v = candidate_vector(["Ge", "C"])
    assert v.sum() == 2 and v[31] == 1 and v[5] == 1
    with pytest.raises(UnknownElementError, match="noble gas"):
        dopant_index("Ar")
    with pytest.raises(UnknownElementError, match="outside the dopant vocabulary"):
        dopant_index("Pb")
    with pytest.raises(UnknownElementError, match="'Xx' is not a chemical element"):
        candidate_vector(["Xx"], where="my.cif")


def test_composition_vector():
    v = composition_vector(["Ga", "As", "Ga", "As"])
    assert v.shape == (100,) and np.isclose(v.sum(), 1) and v[30] == 0.5 and v[32] == 0.5
    assert np.isclose(formula_composition("Cu2ZnSnS4")[28], 0.25)
    with pytest.raises(UnknownElementError):
        formula_composition("Qq2O")
