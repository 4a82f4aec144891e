"""Sanity checks that every crystal must pass before it enters the catalogue.

Why: CIFs are untrusted input. A file can parse and still describe something no multislice run
should see — overlapping atoms from a disordered site, an empty or flat cell, a cell far too
large for the configured atom budget, or a species the potential parametrization does not know.
Each check raises `InvalidStructure` with a reason a person can act on; the catalogue logs the
reason and skips the source, so one bad file never stops a run.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list


class InvalidStructure(ValueError):
    """A structure that cannot be simulated; the message says why."""


def check_cell(atoms: Atoms) -> None:
    """The cell must be three-dimensional, periodic, finite and of non-negligible volume."""
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.all(np.isfinite(cell)):
        raise InvalidStructure("the cell has non-finite lattice vectors")
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths < 0.5):
        raise InvalidStructure(
            f"empty or degenerate cell: lattice vector lengths {lengths.round(3)} Å"
        )
    volume = abs(float(np.linalg.det(cell)))
    if volume < 1.0:
        raise InvalidStructure(f"zero-volume cell ({volume:.3g} Å³)")
    if not np.all(atoms.pbc):
        raise InvalidStructure(f"the structure is not periodic in all directions (pbc={atoms.pbc})")


def check_atoms(atoms: Atoms, *, max_atoms: int) -> None:
    """At least one real atom, finite positions, and no more atoms than the budget."""
    if len(atoms) == 0:
        raise InvalidStructure("the structure has no atoms")
    if len(atoms) > max_atoms:
        raise InvalidStructure(
            f"{len(atoms)} atoms in the unit cell exceed max_base_atoms={max_atoms}"
        )
    numbers = atoms.numbers
    if np.any(numbers <= 0) or np.any(numbers > 103):
        bad = sorted({int(z) for z in numbers if z <= 0 or z > 103})
        raise InvalidStructure(f"atomic numbers {bad} are not elements 1–103")
    if not np.all(np.isfinite(atoms.positions)):
        raise InvalidStructure("some atom positions are not finite")


def check_min_distance(atoms: Atoms, *, min_distance_a: float) -> None:
    """No two atoms (periodic images included) closer than `min_distance_a`."""
    i, j, d = neighbor_list("ijd", atoms, cutoff=min_distance_a, self_interaction=False)
    if len(d):
        k = int(np.argmin(d))
        raise InvalidStructure(
            f"overlapping atoms: {atoms[i[k]].symbol}#{i[k]} and {atoms[j[k]].symbol}#{j[k]} are "
            f"{d[k]:.3f} Å apart (< min_interatomic_distance_a={min_distance_a})"
        )


# The data file behind each of abTEM's named parametrizations (the default `parameters` of its
# Kirkland, Lobato and Peng classes). tests/test_structures.py checks that the species listed
# there are exactly those abTEM's own `scattering_factor` accepts.
PARAMETRIZATION_FILES = {"kirkland": "kirkland.json", "lobato": "lobato.json",
                         "peng": "peng_high.json"}


@functools.lru_cache(maxsize=8)
def species_with_scattering_factors(parametrization: str) -> frozenset[str]:
    """The element symbols that `parametrization` has a scattering factor for.

    Read from abTEM's parameter file without importing abTEM: that import takes seconds
    (numba compiles kernels), and the client that builds the catalogue to plan a store never
    simulates. When the file is not where abTEM 1.0 keeps it, abTEM is asked directly.
    """
    spec = importlib.util.find_spec("abtem")
    name = PARAMETRIZATION_FILES.get(parametrization)
    if spec is not None and spec.origin is not None and name is not None:
        path = Path(spec.origin).parent / "parametrizations" / "data" / name
        if path.is_file():
            return frozenset(json.loads(path.read_text()))
    from abtem.parametrizations import validate_parametrization

    known = validate_parametrization(parametrization)
    found = set()
    for symbol in chemical_symbols[1:]:
        try:
            known.scattering_factor(symbol)(np.zeros(1))
        except Exception:  # parametrizations raise KeyError, ValueError, RuntimeError
            continue
        found.add(symbol)
    return frozenset(found)


def check_species(atoms: Atoms, parametrization: str) -> None:
    """Every species must have a scattering factor in the potential parametrization."""
    known = species_with_scattering_factors(parametrization)
    for symbol in sorted(set(atoms.get_chemical_symbols())):
        if symbol not in known:
            raise InvalidStructure(
                f"the {parametrization} parametrization has no scattering factor for {symbol}"
            )


def check_structure(
    atoms: Atoms, *, min_distance_a: float, max_atoms: int, parametrization: str = "kirkland"
) -> None:
    """All checks, cheapest first; raises `InvalidStructure` on the first failure."""
    check_cell(atoms)
    check_atoms(atoms, max_atoms=max_atoms)
    check_min_distance(atoms, min_distance_a=min_distance_a)
    check_species(atoms, parametrization)
