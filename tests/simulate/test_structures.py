"""Atomic models: prototype crystals, zone-axis orientation, kinematic crystallography, catalogue."""

from __future__ import annotations

import re

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list

from stemdl.configs.units import wavelength_a
from stemdl.simulate.catalogue import build_catalogue, make_catalogue
from stemdl.simulate.crystallography import (
    planes_per_period,
    ranked_reflections,
    strongest_zolz_reflection,
    strongest_zone_axes,
    structure_factors,
    touching_semiangle_mrad,
)
from stemdl.simulate.orientation import OrientationError, orient
from stemdl.simulate.prototypes import (
    COMPOUND_FAMILIES,
    ELEMENT_FAMILIES,
    build_prototype,
    family_compositions,
)
from stemdl.simulate.splits import assign_splits, split_counts
from stemdl.simulate.structure_checks import InvalidStructure, check_structure

# Measured room-temperature lattice constants (Å) of real members of each family.
MEASURED_A = {
    ("rocksalt", ("Na", "Cl")): 5.640,
    ("rocksalt", ("Mg", "O")): 4.212,
    ("zincblende", ("Ga", "As")): 5.653,
    ("wurtzite", ("Ga", "N")): 3.189,
    ("perovskite", ("Sr", "Ti", "O")): 3.905,
    ("fluorite", ("Ce", "O")): 5.411,
    ("fluorite", ("Ca", "F")): 5.463,
    ("rutile", ("Ti", "O")): 4.594,
    ("spinel", ("Mg", "Al", "O")): 8.083,
}
ATOMS_PER_CELL = {
    "rocksalt": 8,
    "zincblende": 8,
    "wurtzite": 4,
    "perovskite": 5,
    "fluorite": 12,
    "rutile": 6,
    "spinel": 56,
    "bcc": 2,
    "fcc": 4,
    "hcp": 2,
    "diamond": 8,
}


@pytest.mark.parametrize(("key", "measured"), MEASURED_A.items(), ids=lambda v: str(v))
def test_radius_sum_lattice_constants_are_close_to_measured(key: tuple, measured: float) -> None:
    family, composition = key
    crystal = build_prototype(family, composition, seed=0)
    assert crystal.atoms.cell.cellpar()[0] == pytest.approx(measured, rel=0.08)


def test_elements_keep_measured_lattice_constants() -> None:
    assert build_prototype("fcc", ("Cu",), 0).atoms.cell.cellpar()[0] == pytest.approx(3.61)
    assert build_prototype("bcc", ("Fe",), 0).atoms.cell.cellpar()[0] == pytest.approx(2.87)
    assert build_prototype("diamond", ("Si",), 0).atoms.cell.cellpar()[0] == pytest.approx(5.43)
    mg = build_prototype("hcp", ("Mg",), 0).atoms.cell.cellpar()
    assert mg[2] / mg[0] == pytest.approx(1.624)


@pytest.mark.parametrize("family", [*COMPOUND_FAMILIES, *ELEMENT_FAMILIES])
def test_every_prototype_is_a_valid_crystal(family: str) -> None:
    for composition in family_compositions(family):
        crystal = build_prototype(family, composition, seed=3)
        assert len(crystal.atoms) == ATOMS_PER_CELL[family], composition
        check_structure(crystal.atoms, min_distance_a=1.0, max_atoms=64)


def _first_shell(atoms: Atoms, cutoff: float = 3.2) -> list[tuple[int, tuple[float, ...]]]:
    """Per atom: (Z, sorted neighbour distances), sorted; equal for equal crystals."""
    i, d = neighbor_list("id", atoms, cutoff)
    shells = [
        (int(atoms.numbers[k]), tuple(np.round(np.sort(d[i == k]), 5))) for k in range(len(atoms))
    ]
    return sorted(set(shells))


@pytest.mark.parametrize("axis", [(0, 0, 1), (0, 1, 1), (1, 1, 1), (2, 1, 0)])
@pytest.mark.parametrize("family", ["rocksalt", "diamond", "fluorite"])
def test_oriented_cell_is_orthogonal_and_the_same_crystal(family: str, axis: tuple) -> None:
    crystal = build_prototype(family, family_compositions(family)[0], seed=0)
    oriented = orient(crystal.atoms, axis, max_strain=0.02, max_atoms=512)
    cell = oriented.atoms.cell.array
    assert np.allclose(cell, np.diag(np.diag(cell)))
    assert oriented.strain == 0.0
    # beam along the zone axis: the z period is |[uvw]| of the conventional cell
    assert cell[2, 2] == pytest.approx(np.linalg.norm(np.array(axis) @ crystal.atoms.cell.array))
    density = len(crystal.atoms) / crystal.atoms.cell.volume
    assert len(oriented.atoms) / oriented.atoms.cell.volume == pytest.approx(density)
    assert _first_shell(oriented.atoms) == _first_shell(crystal.atoms)


def test_non_orthogonalizable_axis_is_refused_then_strained_within_limit() -> None:
    mg = build_prototype("hcp", ("Mg",), 0).atoms
    with pytest.raises(OrientationError, match="strain"):
        orient(mg, (0, 1, 1), max_strain=0.02, max_atoms=256)
    strained = orient(mg, (0, 1, 1), max_strain=0.05, max_atoms=256)
    assert 0 < strained.strain <= 0.05
    cell = strained.atoms.cell.array
    assert np.allclose(cell, np.diag(np.diag(cell)))


def test_atom_budget_is_respected() -> None:
    spinel = build_prototype("spinel", ("Mg", "Al", "O"), 0).atoms
    with pytest.raises(OrientationError, match="atoms"):
        orient(spinel, (0, 1, 1), max_strain=0.02, max_atoms=100)
    assert len(orient(spinel, (0, 1, 1), max_strain=0.02, max_atoms=112).atoms) == 112


def test_structure_factors_match_hand_values() -> None:
    from abtem.parametrizations import KirklandParametrization

    si = bulk("Si", "diamond", a=5.43, cubic=True)
    f = KirklandParametrization().scattering_factor("Si")
    g2_111 = 3 / 5.43**2
    f111, f200 = structure_factors(si, [[1, 1, 1], [2, 0, 0]])
    assert abs(f111) == pytest.approx(4 * np.sqrt(2) * f(np.array([g2_111]))[0], rel=1e-9)
    assert abs(f200) < 1e-9  # diamond glide: (200) is kinematically forbidden
    assert all(r.hkl != (0, 0, 2) for r in ranked_reflections(si))


@pytest.mark.parametrize(
    ("family", "composition", "planes"),
    [
        ("diamond", ("Si",), 4),
        ("rocksalt", ("Mg", "O"), 2),
        ("perovskite", ("Sr", "Ti", "O"), 1),
        ("fcc", ("Al",), 2),
        ("bcc", ("Fe",), 2),
        ("wurtzite", ("Ga", "N"), 2),
    ],
)
def test_d_hkl_planes_per_period(family: str, composition: tuple, planes: int) -> None:
    atoms = orient(
        build_prototype(family, composition, 0).atoms, (0, 0, 1), max_strain=0.02, max_atoms=64
    ).atoms
    assert planes_per_period(atoms, "kirkland") == planes


@pytest.mark.parametrize(
    ("family", "composition", "axis"),
    [
        ("fcc", ("Al",), (1, 1, 1)),
        ("rocksalt", ("Mg", "O"), (0, 0, 1)),
        ("bcc", ("Fe",), (0, 1, 1)),
        ("hcp", ("Mg",), (0, 0, 1)),
    ],
)
def test_strongest_reflection_zone_axis(family: str, composition: tuple, axis: tuple) -> None:
    atoms = build_prototype(family, composition, 0).atoms
    assert strongest_zone_axes(atoms)[0][0] == axis


def test_touching_semiangle_of_rocksalt_001_is_lambda_over_a() -> None:
    mgo = build_prototype("rocksalt", ("Mg", "O"), 0).atoms
    oriented = orient(mgo, (0, 0, 1), max_strain=0.02, max_atoms=64).atoms
    reflection = strongest_zolz_reflection(oriented, "kirkland", max_g_inv_a=2.0)
    a = mgo.cell.cellpar()[0]
    assert reflection.g_inv_a == pytest.approx(2 / a)  # {200}
    wavelength = wavelength_a(100e3)
    assert touching_semiangle_mrad(reflection.g_inv_a, wavelength) == pytest.approx(
        1e3 * wavelength / a
    )


def test_catalogue_is_deterministic_and_ids_are_readable(simulation_config) -> None:
    config = simulation_config("small", structures__materials_per_family=3)
    first = make_catalogue(config.structures, config.seed)
    second = make_catalogue(config.structures, config.seed)
    assert [m.material_id for m in first] == [m.material_id for m in second]
    assert len(first) == 3 * len(config.structures.families)
    for a, b in zip(first, second, strict=True):
        for ca, cb in zip(a.orientations, b.orientations, strict=True):
            assert np.array_equal(ca.atoms.positions, cb.atoms.positions)
    assert all(re.fullmatch(r"[a-z]+-[A-Za-z0-9]+-[0-9a-f]{8}", m.material_id) for m in first)
    other_seed = make_catalogue(config.structures, config.seed + 1)
    assert {m.material_id for m in other_seed} != {m.material_id for m in first}
    assert build_catalogue(config) is build_catalogue(config)  # cached per process


def test_configured_axis_falls_back_with_a_reason(simulation_config) -> None:
    config = simulation_config(
        "tiny", structures__families=["hcp"], structures__zone_axes=[[0, 1, 1]]
    )
    catalogue = make_catalogue(config.structures, config.seed)
    for material in catalogue:
        assert material.orientations[0].zone_axis == (0, 0, 1)
        assert "fell back to [0 0 1]" in material.orientation_notes[0]
        assert "strain" in material.orientation_notes[0]


def test_splits_are_disjoint_cover_everything_and_hold_out_at_least_one(simulation_config) -> None:
    config = simulation_config("small")
    catalogue = build_catalogue(config)
    parts = [
        set(m.material_id for m in catalogue.materials_in(s))
        for s in ("train", "validation", "test")
    ]
    assert sum(len(p) for p in parts) == len(catalogue)
    assert set().union(*parts) == {m.material_id for m in catalogue}
    assert all(len(p) >= 1 for p in parts)
    ids = [m.material_id for m in catalogue]
    assert assign_splits(ids, (0.8, 0.1, 0.1)) == assign_splits(ids[::-1], (0.8, 0.1, 0.1))


@pytest.mark.parametrize(
    ("n", "fractions", "counts"),
    [
        (3, (0.8, 0.1, 0.1), (1, 1, 1)),
        (2, (0.8, 0.1, 0.1), (2, 0, 0)),
        (10, (1.0, 0.0, 0.0), (10, 0, 0)),
        (100, (0.8, 0.1, 0.1), (80, 10, 10)),
        (4, (0.1, 0.45, 0.45), (1, 1, 2)),
        (3, (0.5, 0.5, 0.0), (2, 1, 0)),
    ],
)
def test_split_counts(n: int, fractions: tuple, counts: tuple) -> None:
    assert split_counts(n, fractions) == counts


def test_structure_checks_name_the_problem() -> None:
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    crowded = si.copy()
    crowded.positions[1] = crowded.positions[0] + [0.2, 0, 0]
    with pytest.raises(InvalidStructure, match=r"overlapping atoms: .* 0\.200 Å apart"):
        check_structure(crowded, min_distance_a=0.7, max_atoms=64)
    with pytest.raises(InvalidStructure, match="exceed max_base_atoms=4"):
        check_structure(si, min_distance_a=0.7, max_atoms=4)
    flat = si.copy()
    flat.cell[2] = [0, 0, 0]
    with pytest.raises(InvalidStructure, match="degenerate cell"):
        check_structure(flat, min_distance_a=0.7, max_atoms=64)
    with pytest.raises(InvalidStructure, match="no atoms"):
        check_structure(si[:0], min_distance_a=0.7, max_atoms=64)


def test_polymorphs_share_a_split() -> None:
    """Zincblende and wurtzite of one compound (e.g. CdS) are one composition: never split."""
    from stemdl.configs.simulation import StructureConfig
    from stemdl.simulate.splits import composition_key

    structures = StructureConfig(families=["zincblende", "wurtzite"], materials_per_family=40,
                                 zone_axes=[(0, 0, 1)])
    catalogue = make_catalogue(structures, seed=3)
    by_key: dict[str, set[str]] = {}
    for material in catalogue:
        by_key.setdefault(composition_key(material.formula), set()).add(
            catalogue.split_of(material.material_id))
    shared = [k for k in by_key
              if sum(composition_key(m.formula) == k for m in catalogue) > 1]
    assert shared, "the catalogue should hold at least one compound in both families"
    assert all(len(splits) == 1 for splits in by_key.values()), by_key
    assert composition_key("Cd2S2") == composition_key("CdS") == "CdS"
    ids = ["a", "b", "c", "d"]
    grouped = assign_splits(ids, (0.5, 0.25, 0.25), formulas=["NaCl", "Na2Cl2", "MgO", "CdS"])
    assert grouped["a"] == grouped["b"]


@pytest.mark.parametrize("parametrization", ["kirkland", "lobato", "peng"])
def test_species_list_is_what_abtem_accepts(parametrization: str) -> None:
    """The species check reads abTEM's parameter file instead of importing abTEM; the set it
    reads must be exactly the elements abTEM's own scattering_factor accepts."""
    from abtem.parametrizations import validate_parametrization
    from ase.data import chemical_symbols

    from stemdl.simulate.structure_checks import species_with_scattering_factors

    known = validate_parametrization(parametrization)
    accepted = set()
    for symbol in chemical_symbols[1:]:
        try:
            known.scattering_factor(symbol)(np.zeros(1))
        except Exception:
            continue
        accepted.add(symbol)
    assert species_with_scattering_factors(parametrization) == accepted
    assert len(accepted) > 90
    missing = sorted(set(chemical_symbols[1:104]) - accepted)  # elements the checks allow
    for symbol in missing[:2]:  # (peng lacks a few heavy ones; kirkland and lobato have all)
        with pytest.raises(InvalidStructure, match=f"{parametrization} parametrization has no "
                           f"scattering factor for {symbol}"):
            check_structure(Atoms(symbol, cell=[4, 4, 4], pbc=True), min_distance_a=0.7,
                            max_atoms=64, parametrization=parametrization)
