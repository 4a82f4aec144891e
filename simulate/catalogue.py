"""The catalogue: every crystal a run may simulate, oriented, validated and assigned to a split.

In: a `StructureConfig`, the run seed and the potential parametrization. Out: a `Catalogue`
of `Material`s, each with a stable, readable `material_id` (`rocksalt-MgO-1a2b3c4d`,
`cif-quartz-5e6f7a8b`; the suffix is a hash of the cell and atoms), its oriented base cells (one
per configured zone-axis option) and its split; plus `skipped`, the (source, reason) of every
candidate that was left out. The catalogue is a pure function of its inputs (and of the CIF
files' contents): two builds give the same materials, ids, orientations and splits.

Zone axes: with a list of axes, each material gets one oriented cell per listed axis; an axis
that cannot be made orthogonal (strain or atom budget) falls back to the next listed axis, then
to [001], [010], [100], and the reason is logged and kept. With `zone_axes: strongest`, the beam
goes along the normal of the strongest low-index reflection (kinematic structure factor,
`crystallography`), falling back through weaker reflections, then the same cell axes. A material
with no usable axis (e.g. a triclinic cell) is skipped.

`build_catalogue(config)` caches the result per process (keyed on the config and the CIF
directory's file names, sizes and modification times), so a Dask worker builds it once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from ase import Atoms

from stemdl.configs import StemdlError
from stemdl.configs.simulation import SimulationConfig, StructureConfig
from stemdl.simulate.cif_source import list_cifs, read_cif
from stemdl.simulate.crystallography import strongest_zone_axes
from stemdl.simulate.orientation import OrientationError, OrientedCell, orient, reduce_axis
from stemdl.simulate.prototypes import build_prototype, family_compositions, family_seed
from stemdl.simulate.sample import SPLITS
from stemdl.simulate.splits import assign_splits
from stemdl.simulate.structure_checks import InvalidStructure, check_structure

log = logging.getLogger(__name__)

Axis = tuple[int, int, int]
STRONGEST_MAX_INDEX = 2  # "low-index" reflections: |h|, |k|, |l| ≤ 2
# Tried, in order, after the configured axes: [001], then the other two cell axes (a monoclinic
# crystal is exactly orthogonal only along its unique axis, usually b = [010]).
FALLBACK_AXES: tuple[Axis, ...] = ((0, 0, 1), (0, 1, 0), (1, 0, 0))


class CatalogueError(StemdlError, ValueError):
    """No usable material: the message lists why every candidate was skipped."""


@dataclass(frozen=True, eq=False)
class Material:
    """One crystal of the catalogue. Treat `atoms` and the oriented cells as read-only."""

    material_id: str
    formula: str
    family: str  # a prototype family, or "cif"
    spacegroup: int  # international number; 0 when unknown
    source: str  # "prototype" or the CIF path
    atoms: Atoms  # conventional cell, as built or read
    orientations: tuple[OrientedCell, ...]  # one per zone-axis option of the config
    orientation_notes: tuple[str, ...]  # why an option fell back ("" when it did not)


@dataclass(frozen=True, eq=False)
class Catalogue:
    """The materials of a run, the skipped candidates, and the split of every material."""

    materials: tuple[Material, ...]
    skipped: tuple[tuple[str, str], ...]
    splits: Mapping[str, str]  # material_id -> "train" | "validation" | "test"

    def __len__(self) -> int:
        return len(self.materials)

    def __iter__(self) -> Iterator[Material]:
        return iter(self.materials)

    def __getitem__(self, index: int) -> Material:
        return self.materials[index]

    def split_of(self, material_id: str) -> str:
        return self.splits[material_id]

    def material_splits(self) -> tuple[str, ...]:
        """The split of each material, in catalogue order."""
        return tuple(self.splits[m.material_id] for m in self.materials)

    def materials_in(self, split: str) -> tuple[Material, ...]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return tuple(m for m in self.materials if self.splits[m.material_id] == split)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Picklable (the read-only split view is not): generation builds the catalogue once
        in the client and sends it to every Dask worker instead of each rebuilding it."""
        return _catalogue_from_parts, (self.materials, self.skipped, dict(self.splits))

    def by_id(self, material_id: str) -> Material:
        for material in self.materials:
            if material.material_id == material_id:
                return material
        raise KeyError(f"no material {material_id!r} in the catalogue")


def _catalogue_from_parts(materials: tuple[Material, ...], skipped: tuple[tuple[str, str], ...],
                          splits: dict[str, str]) -> Catalogue:
    return Catalogue(materials, skipped, MappingProxyType(splits))


def content_hash(atoms: Atoms) -> str:
    """8 hex digits of SHA-256 over the cell parameters, species and fractional positions."""
    cellpar = np.round(atoms.cell.cellpar(), 4) + 0.0  # + 0.0 turns -0.0 into 0.0
    scaled = np.round(np.mod(atoms.get_scaled_positions(wrap=False), 1.0), 4) % 1.0 + 0.0
    rows = sorted(zip(atoms.numbers.tolist(), map(tuple, scaled.tolist()), strict=True))
    text = json.dumps({"cell": cellpar.tolist(), "atoms": rows})
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _safe_stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", path.stem) or "unnamed"


def _axis_text(axis: Axis) -> str:
    return "[" + " ".join(str(v) for v in axis) + "]"


class _Orienter:
    """Orients one crystal, remembering each axis' result so fallbacks do not repeat work."""

    def __init__(self, atoms: Atoms, structures: StructureConfig) -> None:
        self.atoms = atoms
        self.structures = structures
        self.results: dict[Axis, OrientedCell | str] = {}

    def try_axis(self, axis: Axis) -> OrientedCell | str:
        axis = reduce_axis(axis)
        if axis not in self.results:
            try:
                self.results[axis] = orient(
                    self.atoms,
                    axis,
                    max_strain=self.structures.max_orientation_strain,
                    max_atoms=self.structures.max_base_atoms,
                )
            except OrientationError as error:
                self.results[axis] = str(error)
        return self.results[axis]

    def first_working(self, axes: list[Axis], label: str) -> tuple[OrientedCell, str]:
        reasons: list[str] = []
        for axis in dict.fromkeys(reduce_axis(a) for a in [*axes, *FALLBACK_AXES]):
            result = self.try_axis(axis)
            if isinstance(result, OrientedCell):
                note = (
                    ""
                    if not reasons
                    else f"{label}: fell back to {_axis_text(result.zone_axis)} ("
                    + "; ".join(reasons)
                    + ")"
                )
                return result, note
            reasons.append(f"{_axis_text(axis)} {result}")
        raise InvalidStructure("no zone axis can be oriented: " + "; ".join(reasons))


def _orientations(
    atoms: Atoms, structures: StructureConfig
) -> tuple[tuple[OrientedCell, ...], tuple[str, ...]]:
    orienter = _Orienter(atoms, structures)
    if structures.zone_axes == "strongest":
        axes = [axis for axis, _ in strongest_zone_axes(atoms, STRONGEST_MAX_INDEX)]
        cell, note = orienter.first_working(axes, "strongest reflection")
        return (cell,), (note,)
    configured = [reduce_axis(tuple(a)) for a in structures.zone_axes]  # type: ignore[arg-type]
    cells, notes = [], []
    for i, axis in enumerate(configured):
        order = [axis, *configured[:i], *configured[i + 1 :]]
        cell, note = orienter.first_working(order, _axis_text(axis))
        cells.append(cell)
        notes.append(note)
    return tuple(cells), tuple(notes)


def _make_material(
    atoms: Atoms,
    *,
    material_id: str,
    formula: str,
    family: str,
    spacegroup: int,
    source: str,
    structures: StructureConfig,
    parametrization: str,
) -> Material:
    check_structure(
        atoms,
        min_distance_a=structures.min_interatomic_distance_a,
        max_atoms=structures.max_base_atoms,
        parametrization=parametrization,
    )
    orientations, notes = _orientations(atoms, structures)
    for note in notes:
        if note:
            log.info("%s: %s", material_id, note)
    return Material(material_id, formula, family, spacegroup, source, atoms, orientations, notes)


def _prototype_materials(
    structures: StructureConfig, seed: int, parametrization: str, skipped: list[tuple[str, str]]
) -> list[Material]:
    materials = []
    for family in dict.fromkeys(structures.families):
        compositions = family_compositions(family)
        wanted = structures.materials_per_family
        if wanted > len(compositions):
            log.info(
                "family %s has %d compositions; using all of them, not %d",
                family,
                len(compositions),
                wanted,
            )
        order = np.random.default_rng(family_seed(seed, family)).permutation(len(compositions))
        for index in order[:wanted]:
            composition = compositions[int(index)]
            source = f"prototype:{family}:{'-'.join(composition)}"
            try:
                crystal = build_prototype(family, composition, seed)
                material_id = f"{family}-{crystal.formula}-{content_hash(crystal.atoms)}"
                materials.append(
                    _make_material(
                        crystal.atoms,
                        material_id=material_id,
                        formula=crystal.formula,
                        family=family,
                        spacegroup=crystal.spacegroup,
                        source="prototype",
                        structures=structures,
                        parametrization=parametrization,
                    )
                )
            except (InvalidStructure, ValueError) as error:
                skipped.append((source, str(error)))
    return materials


def _cif_materials(
    structures: StructureConfig, parametrization: str, skipped: list[tuple[str, str]]
) -> list[Material]:
    if structures.cif_dir is None:
        return []
    paths, problems = list_cifs(Path(structures.cif_dir))
    skipped.extend(problems)
    materials = []
    for path in paths:
        try:
            crystal = read_cif(path)
            material_id = f"cif-{_safe_stem(path)}-{content_hash(crystal.atoms)}"
            materials.append(
                _make_material(
                    crystal.atoms,
                    material_id=material_id,
                    formula=crystal.formula,
                    family="cif",
                    spacegroup=crystal.spacegroup,
                    source=str(path),
                    structures=structures,
                    parametrization=parametrization,
                )
            )
        except (InvalidStructure, ValueError) as error:
            skipped.append((str(path), str(error)))
        except Exception as error:  # untrusted input: whatever goes wrong, skip, never crash
            skipped.append((str(path), f"{type(error).__name__}: {error}"))
    return materials


def make_catalogue(
    structures: StructureConfig, seed: int, parametrization: str = "kirkland"
) -> Catalogue:
    """Build the catalogue (uncached; see `build_catalogue`). Raises CatalogueError if empty."""
    skipped: list[tuple[str, str]] = []
    candidates = _prototype_materials(structures, seed, parametrization, skipped)
    candidates += _cif_materials(structures, parametrization, skipped)
    materials: list[Material] = []
    seen: set[str] = set()
    for material in candidates:
        if material.material_id in seen:
            skipped.append((material.source, f"duplicate material_id {material.material_id}"))
            continue
        seen.add(material.material_id)
        materials.append(material)
    for source, reason in skipped:
        log.warning("skipped %s: %s", source, reason)
    if not materials:
        details = "; ".join(f"{s}: {r}" for s, r in skipped[:10]) or "no sources configured"
        raise CatalogueError(
            f"the catalogue has no usable material ({len(skipped)} skipped: {details})"
        )
    splits = assign_splits([m.material_id for m in materials], structures.split_fractions,
                           formulas=[m.formula for m in materials])
    return Catalogue(tuple(materials), tuple(skipped), MappingProxyType(splits))


def _cif_fingerprint(cif_dir: Path | None) -> list[tuple[str, int, int]]:
    if cif_dir is None or not Path(cif_dir).is_dir():
        return []
    return [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(Path(cif_dir).iterdir())
        if p.is_file()
    ]


@functools.lru_cache(maxsize=8)
def _cached(key: str) -> Catalogue:
    data = json.loads(key)
    structures = StructureConfig.model_validate(data["structures"])
    return make_catalogue(structures, data["seed"], data["parametrization"])


def build_catalogue(config: SimulationConfig) -> Catalogue:
    """The catalogue of `config` (cached per process; see the module docstring)."""
    key = json.dumps(
        {
            "structures": config.structures.model_dump(mode="json"),
            "seed": config.seed,
            "parametrization": config.parametrization,
            "cif_files": _cif_fingerprint(config.structures.cif_dir),
        },
        sort_keys=True,
    )
    return _cached(key)
