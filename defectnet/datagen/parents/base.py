"""What a parent is, and the selection every parent source shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from defectnet.errors import UserError


@dataclass(frozen=True)
class Parent:
    """A host crystal: stable id, formula, prototype name, and an (unrelaxed) cell."""

    id: str
    formula: str
    prototype: str
    atoms: Atoms


class ParentSource:
    """A deterministic, ordered collection of parent crystals."""

    def parents(self) -> list[Parent]:
        raise NotImplementedError

    def select(
        self,
        num_parents: int | None,
        seed: int,
        include: Sequence[str] = (),
        balance_prototypes: bool = False,
    ) -> list[Parent]:
        """``include`` (ids or formulas) first, then a seeded random draw to ``num_parents``.

        ``balance_prototypes`` draws the prototypes in turn (each shuffled with the seed), so
        any prefix of the list, and hence a data set stopped part-way, spans every prototype
        instead of mirroring how many decorations each prototype has.
        """
        pool = self.parents()
        chosen: list[Parent] = []
        for key in include:
            match = [p for p in pool if key in (p.id, p.formula)]
            if not match:
                raise UserError(
                    f"parents.include: no parent has id or formula '{key}'; "
                    "list the available ones with `defectnet-generate stage=list_parents`."
                )
            if match[0] not in chosen:
                chosen.append(match[0])
        rest = [p for p in pool if p not in chosen]
        n_more = len(rest) if num_parents is None else max(0, num_parents - len(chosen))
        rng = np.random.default_rng(seed)
        if not balance_prototypes:
            order = rng.permutation(len(rest))
            return chosen + [rest[i] for i in sorted(order[:n_more])]
        groups: dict[str, list[Parent]] = {}
        for p in rest:
            groups.setdefault(p.prototype, []).append(p)
        queues = [[g[i] for i in rng.permutation(len(g))] for _, g in sorted(groups.items())]
        turn = [q[j] for j in range(max(map(len, queues), default=0)) for q in queues if j < len(q)]
        return chosen + turn[:n_more]


class LazyParent(Parent):
    """A parent whose cell is only built when first used (thousands are listed; a melt-quenched
    host costs minutes): ``build()`` makes it."""

    def __init__(self, id: str, formula: str, prototype: str, build: Callable[[], Atoms]):
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "formula", formula)
        object.__setattr__(self, "prototype", prototype)
        object.__setattr__(self, "_build", build)

    def __eq__(self, other):
        return isinstance(other, Parent) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    @property
    def atoms(self) -> Atoms:
        return self._build()
