"""Orient a crystal along a zone axis [uvw] as an orthogonal, periodic base cell.

Multislice needs an orthogonal box with the beam along z that is periodic in x, y and z. The
base cell is a supercell of the crystal's lattice spanned by three integer lattice vectors:

* z = u·a + v·b + w·c, the zone axis itself (so the z period is exact);
* x, y = the shortest lattice vectors perpendicular to z and to each other.

When the lattice has vectors exactly perpendicular to [uvw] (cubic crystals, [001] of any
crystal with a ⊥ c and b ⊥ c), the box is exact. Otherwise (e.g. hexagonal [011]) the nearest
vectors are taken and the cell is sheared to a rectangle; the strain (largest eigenvalue of the
Green–Lagrange tensor) must stay below `max_strain`, and the cell must hold at most `max_atoms`
atoms, else `OrientationError` says why and the caller falls back to another axis.

Why not `ase.build.surface(..., periodic=True)`: it replaces the out-of-plane vector by its
projection on the normal, which breaks the periodicity along z for most (hkl). Why not
`abtem.atoms.orthogonalize_cell` directly: it picks, per axis, the lattice vector of smallest
angle among up to 5 repetitions, however long, and applies the residual strain silently; here
the strain and the atom count are checked and the choice is explained. The supercell itself is
built by `ase.build.make_supercell`, which enumerates lattice points exactly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import make_supercell

# Integer coefficients searched for the in-plane lattice vectors.
SEARCH_INDEX = 4
# Lattice vectors within this |cos| of perpendicular are exact (numerical noise only).
EXACT_COS = 1e-9
# How many of the shortest candidates are paired when no exact rectangle exists.
MAX_CANDIDATES = 60


class OrientationError(ValueError):
    """The crystal cannot be oriented along this axis within the strain and atom limits."""


@dataclass(frozen=True)
class OrientedCell:
    """An orthogonal base cell with the beam along +z: the unit that is repeated in the sample."""

    atoms: Atoms  # cell is diagonal (Lx, Ly, Lz), positions wrapped into it
    zone_axis: tuple[int, int, int]
    lattice_vectors: np.ndarray  # (3, 3) int: rows are the x, y, z vectors in lattice coordinates
    strain: float  # applied Green–Lagrange strain (0 for an exact orthogonal cell)

    @property
    def lengths_a(self) -> tuple[float, float, float]:
        diagonal = np.diag(self.atoms.cell.array)
        return (float(diagonal[0]), float(diagonal[1]), float(diagonal[2]))


def reduce_axis(axis: tuple[int, int, int]) -> tuple[int, int, int]:
    """[uvw] divided by the gcd of its components: [002] and [001] are the same direction."""
    divisor = math.gcd(*axis)
    if divisor == 0:
        raise OrientationError("zone axis [0 0 0] is not a direction")
    return (axis[0] // divisor, axis[1] // divisor, axis[2] // divisor)


def _lattice_candidates(cell: np.ndarray, beam_unit: np.ndarray, max_cos: float) -> np.ndarray:
    """Primitive integer vectors nearly perpendicular to the beam, exact ones first, then shortest."""
    span = np.arange(-SEARCH_INDEX, SEARCH_INDEX + 1)
    ints = np.array(list(itertools.product(span, span, span)))
    ints = ints[np.gcd.reduce(np.abs(ints), axis=1) == 1]  # drops 0 and multiples
    vectors = ints @ cell
    lengths = np.linalg.norm(vectors, axis=1)
    cos = np.abs(vectors @ beam_unit) / lengths
    keep = cos <= max_cos
    ints, lengths, inexact = ints[keep], np.round(lengths[keep], 9), cos[keep] > EXACT_COS
    # lexsort: last key first; ties in length broken by the integer components (deterministic)
    order = np.lexsort((*(-ints.T[::-1]), lengths, inexact))
    return ints[order][:MAX_CANDIDATES]


def _rectangle_strain(vectors: np.ndarray) -> np.ndarray:
    """Green–Lagrange strain of mapping rows x, y, z of each cell onto a box of the same lengths.

    The map is a pure deformation once z is put along ẑ and x in the xz plane; for lattice
    vectors already perpendicular it is the identity (strain 0). `vectors`: (..., 3, 3).
    """
    box = np.linalg.norm(vectors, axis=-1)
    metric = vectors @ np.swapaxes(vectors, -1, -2)  # rotation-invariant: G = C Cᵀ
    # F maps C to B = diag(box): F = B C⁻¹ in row convention; E = (Fᵀ F − 1)/2 has the same
    # eigenvalues as (B G⁻¹ B − 1)/2.
    scaled = box[..., :, None] * np.linalg.inv(metric) * box[..., None, :]
    green = 0.5 * (scaled - np.eye(3))
    return np.max(np.abs(np.linalg.eigvalsh(green)), axis=-1)


def _choose_in_plane(
    cell: np.ndarray, z_ints: np.ndarray, n_atoms: int, *, max_strain: float, max_atoms: int
) -> tuple[np.ndarray, float]:
    """Integer x, y (rows) that with z span the best rectangular supercell.

    Preference: an exact rectangle over a strained one, then the smallest strain, then the
    fewest atoms, then the shortest x and y.
    """
    z_vector = z_ints @ cell
    beam_unit = z_vector / np.linalg.norm(z_vector)
    candidates = _lattice_candidates(cell, beam_unit, max_cos=max(2 * max_strain, EXACT_COS))
    first, second = np.triu_indices(len(candidates), k=1)
    first, second = np.concatenate([first, second]), np.concatenate([second, first])
    ints = np.stack(
        [candidates[first], candidates[second], np.broadcast_to(z_ints, (len(first), 3))], axis=1
    )
    det = np.rint(np.linalg.det(ints)).astype(int)
    ints[:, 1] *= np.where(det < 0, -1, 1)[:, None]  # right-handed
    det = np.abs(det)
    usable = (det > 0) & (n_atoms * det <= max_atoms)
    if not np.any(usable):
        raise OrientationError(
            f"no orthogonal cell with ≤ {max_atoms} atoms among lattice vectors within "
            f"strain {max_strain:g} of perpendicular to the beam (components up to ±{SEARCH_INDEX})"
        )
    ints, det = ints[usable], det[usable]
    strain = _rectangle_strain(ints.astype(float) @ cell)
    strain = np.where(strain <= 1e-9, 0.0, strain)
    if not np.any(strain <= max_strain):
        raise OrientationError(
            f"no orthogonal cell with strain ≤ {max_strain:g} among those of ≤ {max_atoms} "
            f"atoms (least strain {strain.min():.3g}; lattice vectors up to ±{SEARCH_INDEX})"
        )
    lengths = np.linalg.norm(ints[:, :2].astype(float) @ cell, axis=-1)
    index = np.arange(len(ints))  # candidate order breaks the remaining ties
    order = np.lexsort(
        (
            index,
            np.round(lengths[:, 1], 9),
            np.round(lengths[:, 0], 9),
            det,
            np.round(strain, 9),
            strain > 0,
        )
    )
    best = next(i for i in order if strain[i] <= max_strain)
    return ints[best], float(strain[best])


def orient(
    atoms: Atoms, zone_axis: tuple[int, int, int], *, max_strain: float, max_atoms: int
) -> OrientedCell:
    """The orthogonal base cell of `atoms` with the beam along `zone_axis` (see module docstring)."""
    axis = reduce_axis(tuple(int(v) for v in zone_axis))  # type: ignore[arg-type]
    cell = np.asarray(atoms.cell.array, dtype=float)
    ints, strain = _choose_in_plane(
        cell, np.asarray(axis), len(atoms), max_strain=max_strain, max_atoms=max_atoms
    )
    supercell = make_supercell(atoms, ints, wrap=True)
    box = np.diag(np.linalg.norm(ints @ cell, axis=1))
    scaled = supercell.get_scaled_positions(wrap=True)
    scaled[np.abs(scaled - 1.0) < 1e-9] = 0.0  # an atom on the far face belongs to the near one
    oriented = Atoms(numbers=supercell.numbers, scaled_positions=scaled, cell=box, pbc=True)
    expected = len(atoms) * round(abs(float(np.linalg.det(ints))))
    if len(oriented) != expected:  # pragma: no cover - make_supercell guarantees this
        raise OrientationError(f"supercell has {len(oriented)} atoms, expected {expected}")
    return OrientedCell(oriented, axis, ints, strain)
