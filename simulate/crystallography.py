"""Kinematic electron diffraction of a crystal: structure factors and what the paper derived from them.

The paper set three things from the strongest reflection: the zone axis (the beam along the
normal of the strongest low-index reflection), the slice thickness (d_hkl, the interplanar
spacing along the beam) and the convergence semi-angle (disks of the strongest reflection just
touch, α = λ|g|/2). All three come from the kinematic structure factor

    F(g) = Σ_j f_j(|g|) exp(2πi h·s_j),   g = h · B,   B = (cell⁻¹)ᵀ,

with f_j the electron scattering factor of atom j (abTEM's parametrization, argument |g|² in
Å⁻²) and s_j its fractional coordinates. Equal strengths are broken by a fixed order (shorter g
first, then the reflection whose last non-zero index is largest), so every choice is
deterministic.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms

if TYPE_CHECKING:
    from abtem.parametrizations import Parametrization

# A reflection whose |F| is below this fraction of Σ_j f_j(|g|) is treated as forbidden.
FORBIDDEN_FRACTION = 1e-3


@lru_cache(maxsize=8)
def _parametrization(name: str) -> Parametrization:
    from abtem.parametrizations import validate_parametrization

    return validate_parametrization(name)


def reciprocal_cell(cell: np.ndarray) -> np.ndarray:
    """Rows are reciprocal lattice vectors b_i with a_i · b_j = δ_ij (no 2π), Å⁻¹."""
    return np.linalg.inv(np.asarray(cell, dtype=float)).T


def structure_factors(
    atoms: Atoms, hkl: np.ndarray, parametrization: str = "kirkland"
) -> np.ndarray:
    """Kinematic structure factors F(hkl) (Å) of the atoms' cell for integer rows `hkl`."""
    hkl = np.atleast_2d(np.asarray(hkl, dtype=float))
    g = hkl @ reciprocal_cell(atoms.cell.array)
    g2 = np.sum(g * g, axis=1)
    phases = np.exp(2j * np.pi * hkl @ atoms.get_scaled_positions(wrap=False).T)  # (n_hkl, n_atoms)
    params = _parametrization(parametrization)
    result = np.zeros(len(hkl), dtype=complex)
    symbols = np.array(atoms.get_chemical_symbols())
    for symbol in sorted(set(symbols)):
        f = np.asarray(params.scattering_factor(symbol)(g2), dtype=float)
        result += f * phases[:, symbols == symbol].sum(axis=1)
    return result


def _total_scattering(atoms: Atoms, g2: np.ndarray, parametrization: str) -> np.ndarray:
    """Σ_j f_j(|g|): the largest |F| can be, used to decide what counts as forbidden."""
    params = _parametrization(parametrization)
    total = np.zeros(len(g2))
    for symbol, count in zip(
        *np.unique(atoms.get_chemical_symbols(), return_counts=True), strict=True
    ):
        total += count * np.asarray(params.scattering_factor(str(symbol))(g2), dtype=float)
    return total


def _canonical(hkl: tuple[int, ...]) -> tuple[int, ...]:
    """The Friedel mate whose last non-zero index is positive (F(-h) = F(h)* for real f)."""
    last = next(v for v in reversed(hkl) if v != 0)
    return hkl if last > 0 else tuple(-v for v in hkl)


def _tie_key(strength: float, g_len: float, hkl: tuple[int, ...]) -> tuple:
    """Strongest first; equal strengths (to 1e-6 relative): shorter g, then larger l, k, h."""
    log_strength = round(math.log(max(strength, 1e-300)), 6)
    return (-log_strength, round(g_len, 9), tuple(-v for v in reversed(hkl)))


@dataclass(frozen=True)
class Reflection:
    hkl: tuple[int, ...]
    g_inv_a: float  # |g| in Å⁻¹
    strength_a: float  # |F| in Å


def ranked_reflections(
    atoms: Atoms, max_index: int = 2, parametrization: str = "kirkland"
) -> list[Reflection]:
    """All allowed reflections with |h|,|k|,|l| ≤ max_index, strongest first (one per Friedel pair)."""
    candidates = sorted(
        {
            _canonical(h)
            for h in itertools.product(range(-max_index, max_index + 1), repeat=3)
            if any(h)
        }
    )
    hkl = np.array(candidates, dtype=float)
    g = hkl @ reciprocal_cell(atoms.cell.array)
    g_len = np.linalg.norm(g, axis=1)
    strength = np.abs(structure_factors(atoms, hkl, parametrization))
    allowed = strength > FORBIDDEN_FRACTION * _total_scattering(atoms, g_len**2, parametrization)
    found = [
        Reflection(c, float(gl), float(s))
        for c, gl, s, ok in zip(candidates, g_len, strength, allowed, strict=True)
        if ok
    ]
    return sorted(found, key=lambda r: _tie_key(r.strength_a, r.g_inv_a, r.hkl))


@lru_cache(maxsize=4)
def _primitive_integer_vectors(max_index: int) -> np.ndarray:
    """All integer vectors with components in [-max_index, max_index] and gcd 1, shortest-index first."""
    span = np.arange(-max_index, max_index + 1)
    ints = np.array(list(itertools.product(span, span, span)))
    return ints[np.gcd.reduce(np.abs(ints), axis=1) == 1]


def lattice_direction(
    cell: np.ndarray, direction: np.ndarray, max_index: int = 6
) -> tuple[int, int, int] | None:
    """The shortest integer [uvw] parallel to the Cartesian `direction`, or None if there is none.

    The normal of a lattice plane (hkl) is a lattice direction only when the metric makes it
    rational (always in cubic crystals, along c in hexagonal ones); otherwise no periodic cell
    has its z axis along the normal, and None is returned.
    """
    unit = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    ints = _primitive_integer_vectors(max_index)
    vectors = ints @ np.asarray(cell, dtype=float)
    lengths = np.linalg.norm(vectors, axis=1)
    parallel = vectors @ unit > lengths * (1 - 1e-10)
    if not np.any(parallel):
        return None
    best = ints[parallel][np.argmin(lengths[parallel])]
    return (int(best[0]), int(best[1]), int(best[2]))


def strongest_zone_axes(
    atoms: Atoms, max_index: int = 2, parametrization: str = "kirkland"
) -> list[tuple[tuple[int, int, int], Reflection]]:
    """Zone axes [uvw] along the normals of the strongest reflections, strongest first.

    Reflections whose normal is not a lattice direction are left out (see `lattice_direction`);
    repeated axes keep their first (strongest) reflection.
    """
    cell = atoms.cell.array
    axes: list[tuple[tuple[int, int, int], Reflection]] = []
    seen: set[tuple[int, int, int]] = set()
    for reflection in ranked_reflections(atoms, max_index, parametrization):
        normal = np.asarray(reflection.hkl, dtype=float) @ reciprocal_cell(cell)
        uvw = lattice_direction(cell, normal)
        if uvw is not None and uvw not in seen:
            seen.add(uvw)
            axes.append((uvw, reflection))
    return axes


def strongest_zolz_reflection(
    atoms: Atoms, parametrization: str, max_g_inv_a: float, max_index: int = 8
) -> Reflection:
    """Strongest reflection perpendicular to the beam (z) of an orthogonal cell: (h, k, 0).

    These are the zero-order Laue zone disks seen in a zone-axis CBED pattern; only reflections
    with |g| ≤ max_g_inv_a are considered (beyond that the disks leave the pattern).
    """
    candidates = sorted(
        {
            _canonical((h, k, 0))
            for h, k in itertools.product(range(-max_index, max_index + 1), repeat=2)
            if h or k
        }
    )
    hkl = np.array(candidates, dtype=float)
    g_len = np.linalg.norm(hkl @ reciprocal_cell(atoms.cell.array), axis=1)
    strength = np.abs(structure_factors(atoms, hkl, parametrization))
    allowed = strength > FORBIDDEN_FRACTION * _total_scattering(atoms, g_len**2, parametrization)
    allowed &= g_len <= max_g_inv_a
    if not np.any(allowed):
        raise ValueError(
            f"no allowed reflection perpendicular to the beam with |g| ≤ {max_g_inv_a:.3f} Å⁻¹"
        )
    found = [
        Reflection(c, float(gl), float(s))
        for c, gl, s, ok in zip(candidates, g_len, strength, allowed, strict=True)
        if ok
    ]
    return min(found, key=lambda r: _tie_key(r.strength_a, r.g_inv_a, r.hkl))


def planes_per_period(atoms: Atoms, parametrization: str, max_order: int = 16) -> int:
    """The order l* of the first allowed reflection (0, 0, l) along the beam of an orthogonal cell.

    The interplanar spacing along the beam, d_hkl, is then cell_z / l*: e.g. a/2 for rocksalt
    [001], a/4 for diamond [001], c/2 for wurtzite [001], a for perovskite [001].
    """
    orders = np.arange(1, max_order + 1)
    hkl = np.stack([np.zeros_like(orders), np.zeros_like(orders), orders], axis=1)
    g_len = orders / atoms.cell.array[2, 2]
    strength = np.abs(structure_factors(atoms, hkl, parametrization))
    allowed = strength > FORBIDDEN_FRACTION * _total_scattering(atoms, g_len**2, parametrization)
    return int(orders[np.argmax(allowed)]) if np.any(allowed) else 1


def touching_semiangle_mrad(g_inv_a: float, wavelength_a: float) -> float:
    """Semi-angle at which neighbouring disks separated by |g| just touch: α = λ|g|/2."""
    return 1e3 * wavelength_a * g_inv_a / 2
