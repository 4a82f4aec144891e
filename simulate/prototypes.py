"""Prototype crystal families: plausible compounds and elements built with `ase.spacegroup.crystal`.

Why prototypes: the paper drew its materials from CIF databases; a laptop or CI run has none, so
stemdl builds structurally real crystals (right space group, right Wyckoff sites) from a handful
of prototype families, with element choices that respect charge balance and lattice constants
from radius sums:

* ionic families (rocksalt, perovskite, fluorite, rutile, spinel): the shortest cation–anion
  distance equals the sum of Shannon ionic radii (coordination-appropriate values below);
* covalent families (zincblende, wurtzite): the bond length equals the sum of ASE's covalent
  radii (`ase.data.covalent_radii`, Cordero et al. 2008);
* elemental families (bcc, fcc, hcp, diamond): ASE's reference states (`ase.data.reference_states`,
  measured lattice constants), plus α-Sn for diamond.

Compound lattice constants get a small deterministic jitter (±2 %, drawn from the catalogue seed
and the composition) so different seeds give different, still plausible, crystals; elements keep
their measured constants. Radius sums are good to a few per cent (NaCl: 5.66 Å vs 5.64 Å
measured; SrTiO3: 4.01 Å vs 3.905 Å), which is what a plausible *synthetic* crystal needs.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states
from ase.spacegroup import crystal

LATTICE_JITTER = 0.02  # relative half-width of the compound lattice-constant jitter

# Shannon (1976) effective ionic radii in Å, six-fold coordination unless noted.
IONIC_RADII_A: dict[str, float] = {
    # cations
    "Li": 0.76,
    "Na": 1.02,
    "K": 1.38,
    "Rb": 1.52,
    "Cs": 1.67,
    "Ag": 1.15,
    "Mg": 0.72,
    "Ca": 1.00,
    "Sr": 1.18,
    "Ba": 1.35,
    "Mn": 0.83,
    "Fe": 0.78,
    "Co": 0.745,
    "Ni": 0.69,
    "Zn": 0.74,
    "Cd": 0.95,
    "Pb": 1.19,
    "Eu": 1.17,
    "Al": 0.535,
    "Ga": 0.62,
    "Cr": 0.615,
    "La": 1.032,
    "Ti": 0.605,
    "Zr": 0.72,
    "Hf": 0.71,
    "Sn": 0.69,
    "Ge": 0.53,
    "Ru": 0.62,
    "Ir": 0.625,
    "V": 0.58,
    "Nb": 0.64,
    "Ta": 0.64,
    # anions
    "F": 1.33,
    "Cl": 1.81,
    "Br": 1.96,
    "I": 2.20,
    "O": 1.40,
    "S": 1.84,
    "Se": 1.98,
    "Te": 2.21,
}
# Eight-fold cation and four-fold anion radii for the fluorite structure.
FLUORITE_RADII_A: dict[str, float] = {
    "Ca": 1.12,
    "Sr": 1.26,
    "Ba": 1.42,
    "Cd": 1.10,
    "Pb": 1.29,
    "Eu": 1.25,
    "Ce": 0.97,
    "Th": 1.05,
    "U": 1.00,
    "Zr": 0.84,
    "Hf": 0.83,
    "F": 1.31,
    "O": 1.38,
}
# Four-fold (tetrahedral) cation radii for the spinel A site.
TETRAHEDRAL_RADII_A: dict[str, float] = {
    "Mg": 0.57,
    "Zn": 0.60,
    "Fe": 0.63,
    "Co": 0.58,
    "Mn": 0.66,
    "Cd": 0.78,
    "Ni": 0.55,
}
EXTRA_ELEMENT_STATES: dict[str, dict[str, float | str]] = {
    "Sn": {"symmetry": "diamond", "a": 6.489}
}


@dataclass(frozen=True)
class PrototypeSpec:
    """One family: space group, Wyckoff sites, cell shape, and how its scale is set."""

    spacegroup: int
    setting: int
    basis: tuple[tuple[float, float, float], ...]  # one representative position per site
    c_over_a: float  # 1 for cubic
    hexagonal: bool
    bond_sites: tuple[int, int]  # the site pair whose shortest distance sets the scale
    radii: str  # "ionic", "fluorite", "covalent"
    compositions: tuple[tuple[str, ...], ...]  # one element per site, in site order
    formula_counts: tuple[int, ...]  # formula-unit multiplicity of each site


def _pairs(cations: str, anions: str) -> list[tuple[str, ...]]:
    return [(c, a) for c, a in itertools.product(cations.split(), anions.split())]


def _triples(a_sites: str, b_sites: str, x_sites: str) -> list[tuple[str, ...]]:
    combos = itertools.product(a_sites.split(), b_sites.split(), x_sites.split())
    return [c for c in combos if len(set(c)) == len(c)]  # one species per site


COMPOUND_FAMILIES: dict[str, PrototypeSpec] = {
    "rocksalt": PrototypeSpec(
        225,
        1,
        ((0, 0, 0), (0.5, 0.5, 0.5)),
        1.0,
        False,
        (0, 1),
        "ionic",
        tuple(
            _pairs("Li Na K Rb Ag", "F Cl Br I")
            + _pairs("Mg Ca Sr Ba Mn Fe Co Ni Cd Pb Eu", "O S Se Te")
        ),
        (1, 1),
    ),
    "zincblende": PrototypeSpec(
        216,
        1,
        ((0, 0, 0), (0.25, 0.25, 0.25)),
        1.0,
        False,
        (0, 1),
        "covalent",
        tuple(
            _pairs("B Al Ga In", "N P As Sb")
            + _pairs("Zn Cd Hg", "S Se Te")
            + [("Si", "C"), ("Cu", "Cl"), ("Cu", "Br"), ("Cu", "I"), ("Be", "S")]
        ),
        (1, 1),
    ),
    "wurtzite": PrototypeSpec(
        186,
        1,
        ((1 / 3, 2 / 3, 0.0), (1 / 3, 2 / 3, 0.375)),
        float(np.sqrt(8 / 3)),
        True,
        (0, 1),
        "covalent",
        tuple(
            _pairs("Al Ga In", "N")
            + _pairs("Zn Cd", "O S Se")
            + [("Be", "O"), ("Ag", "I"), ("Si", "C"), ("Mn", "S")]
        ),
        (1, 1),
    ),
    "perovskite": PrototypeSpec(
        221,
        1,
        ((0.5, 0.5, 0.5), (0, 0, 0), (0.5, 0, 0)),
        1.0,
        False,
        (1, 2),
        "ionic",
        tuple(
            _triples("Ca Sr Ba Pb", "Ti Zr Hf Sn", "O")
            + _triples("Na K", "Nb Ta", "O")
            + _triples("K Rb Cs", "Mg Zn Ni Mn Co Fe", "F")
            + _triples("La", "Al Ga Cr", "O")
        ),
        (1, 1, 3),
    ),
    "fluorite": PrototypeSpec(
        225,
        1,
        ((0, 0, 0), (0.25, 0.25, 0.25)),
        1.0,
        False,
        (0, 1),
        "fluorite",
        tuple(_pairs("Ca Sr Ba Cd Pb Eu", "F") + _pairs("Ce Th U Zr Hf", "O")),
        (1, 2),
    ),
    "rutile": PrototypeSpec(
        136,
        1,
        ((0, 0, 0), (0.305, 0.305, 0.0)),
        0.65,
        False,
        (0, 1),
        "ionic",
        tuple(_pairs("Ti Sn Ge Ru Ir V Mn Pb", "O") + _pairs("Mg Zn Fe Ni Co Mn", "F")),
        (1, 2),
    ),
    "spinel": PrototypeSpec(
        227,
        1,
        ((0, 0, 0), (0.625, 0.625, 0.625), (0.387, 0.387, 0.387)),
        1.0,
        False,
        (1, 2),
        "ionic",
        tuple(_triples("Mg Zn Fe Co Mn Ni Cd", "Al Ga Cr Fe", "O")),
        (1, 2, 4),
    ),
}
ELEMENT_FAMILIES: dict[str, tuple[int, int, tuple[float, float, float]]] = {
    # family: (space group, setting, basis position)
    "bcc": (229, 1, (0.0, 0.0, 0.0)),
    "fcc": (225, 1, (0.0, 0.0, 0.0)),
    "hcp": (194, 1, (1 / 3, 2 / 3, 0.25)),
    "diamond": (227, 1, (0.0, 0.0, 0.0)),
}
FAMILY_SPACEGROUPS: dict[str, int] = {
    **{name: spec.spacegroup for name, spec in COMPOUND_FAMILIES.items()},
    **{name: value[0] for name, value in ELEMENT_FAMILIES.items()},
}


@dataclass(frozen=True)
class PrototypeCrystal:
    """A built prototype: the conventional cell and what it is."""

    family: str
    formula: str
    spacegroup: int
    atoms: Atoms


def family_seed(
    seed: int, family: str, composition: tuple[str, ...] = ()
) -> np.random.SeedSequence:
    """A seed sequence that depends only on (seed, family, composition), not on Python's hash()."""
    words = [seed, zlib.crc32(family.encode())]
    words += [zlib.crc32("-".join(composition).encode())] if composition else []
    return np.random.SeedSequence(words)


def _radius(element: str, site: int, spec: PrototypeSpec, family: str) -> float:
    if spec.radii == "covalent":
        return float(covalent_radii[atomic_numbers[element]])
    if spec.radii == "fluorite":
        return FLUORITE_RADII_A[element]
    if family == "spinel" and site == 0:
        return TETRAHEDRAL_RADII_A[element]
    return IONIC_RADII_A[element]


def _build(spec: PrototypeSpec, elements: tuple[str, ...], a: float) -> Atoms:
    angles = [90.0, 90.0, 120.0] if spec.hexagonal else [90.0, 90.0, 90.0]
    return crystal(
        list(elements),
        basis=[tuple(p) for p in spec.basis],
        spacegroup=spec.spacegroup,
        setting=spec.setting,
        cellpar=[a, a, a * spec.c_over_a, *angles],
        primitive_cell=False,
        onduplicates="error",
    )


def _shortest_distance(atoms: Atoms, site_a: str, site_b: str) -> float:
    """Shortest periodic distance between atoms of two species (minimum image over ±1 cells)."""
    symbols = np.array(atoms.get_chemical_symbols())
    first, second = atoms.positions[symbols == site_a], atoms.positions[symbols == site_b]
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) @ atoms.cell.array
    diff = first[:, None, None, :] - second[None, :, None, :] + shifts[None, None, :, :]
    distances = np.linalg.norm(diff, axis=-1)
    return float(distances[distances > 1e-8].min())


def build_compound(family: str, elements: tuple[str, ...], seed: int) -> PrototypeCrystal:
    """A compound of `family` with one element per Wyckoff site, scaled by its radius sum."""
    spec = COMPOUND_FAMILIES[family]
    if len(set(elements)) != len(elements):
        raise ValueError(f"{family}: a site element repeats in {elements}")
    i, j = spec.bond_sites
    bond_a = _radius(elements[i], i, spec, family) + _radius(elements[j], j, spec, family)
    unit = _build(spec, elements, 1.0)
    a = bond_a / _shortest_distance(unit, elements[i], elements[j])
    jitter = np.random.default_rng(family_seed(seed, family, elements)).uniform(-1, 1)
    a *= 1.0 + LATTICE_JITTER * jitter
    formula = "".join(
        f"{e}{n if n > 1 else ''}" for e, n in zip(elements, spec.formula_counts, strict=True)
    )
    return PrototypeCrystal(family, formula, spec.spacegroup, _build(spec, elements, a))


def element_candidates(family: str) -> list[str]:
    """Elements whose measured ground state is `family` (ASE reference states, plus α-Sn)."""
    found = [
        chemical_symbols[z]
        for z, state in enumerate(reference_states)
        if state and state.get("symmetry") == family
    ]
    found += [s for s, state in EXTRA_ELEMENT_STATES.items() if state["symmetry"] == family]
    return found


def _element_state(symbol: str) -> dict[str, float | str]:
    return EXTRA_ELEMENT_STATES.get(symbol) or reference_states[atomic_numbers[symbol]]


def build_element(family: str, symbol: str) -> PrototypeCrystal:
    """An element in its measured ground-state structure and lattice constant."""
    spacegroup, setting, position = ELEMENT_FAMILIES[family]
    state = _element_state(symbol)
    if state.get("symmetry") != family:
        raise ValueError(f"{symbol} is not {family} in ASE's reference states")
    a = float(state["a"])
    if family == "hcp":
        cellpar = [a, a, a * float(state["c/a"]), 90.0, 90.0, 120.0]
    else:
        cellpar = [a, a, a, 90.0, 90.0, 90.0]
    atoms = crystal(
        symbol,
        basis=[position],
        spacegroup=spacegroup,
        setting=setting,
        cellpar=cellpar,
        primitive_cell=False,
    )
    return PrototypeCrystal(family, symbol, spacegroup, atoms)


def family_compositions(family: str) -> list[tuple[str, ...]]:
    """Every composition the catalogue may draw for `family`, in a fixed order."""
    if family in COMPOUND_FAMILIES:
        return list(COMPOUND_FAMILIES[family].compositions)
    if family in ELEMENT_FAMILIES:
        return [(symbol,) for symbol in element_candidates(family)]
    raise ValueError(f"unknown prototype family {family!r}")


def build_prototype(family: str, composition: tuple[str, ...], seed: int) -> PrototypeCrystal:
    """Build one member of a family (compound or element)."""
    if family in ELEMENT_FAMILIES:
        return build_element(family, composition[0])
    return build_compound(family, composition, seed)
