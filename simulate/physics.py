"""abTEM multislice: the CBED patterns and the projected potential of one built specimen.

Conventions (shared with `SampleRecord`):
* abTEM grids are (x, y): `gpts`, `sampling_a`, `extent_a` and probe positions are (x, y).
* Stored images use the image convention (row = y, column = x): abTEM's (..., x, y) arrays are
  transposed to (..., y, x) as the last step, so `cbed[p]` is (ky, kx) and `potential[c]` is
  (y, x), and `imshow` shows them the right way round.

CBED: a probe (energy, semi-angle, defocus, C3 = Cs) is propagated through the potential for
every probe position (`abtem.CustomScan`), and the far-field intensity is taken with
`diffraction_patterns(max_angle=None)`, i.e. the whole grid, fftshifted so that zero frequency
sits at index n // 2. The stored pattern is the central `pattern_px * binning` pixels, exactly
as abTEM computed them (no interpolation), sum-pooled by `binning`; a pattern pixel is
λ / extent radians wide (times `binning`), zero frequency sits in pixel H // 2, and intensities
are fractions of the incident beam. With frozen phonons the intensities of the configurations are
averaged (incoherent sum), as is the projected potential.

The potential is built once (`Potential.build`) and used both for multislice and for the target,
so the target is exactly the potential the electrons saw.

Engines (`simulation.engine`): "stemdl" (default) propagates abTEM's transmission functions,
probe and propagator with stemdl's own loop (`simulate/multislice.py`, at the FFT floor);
"abtem" runs `Probe.multislice`, the reference the tests compare against. Both give the same
patterns to float32 rounding.

Mistilt (`ProbeSettings.tilt_mrad`): abTEM's small-angle tilt, a phase
exp(−2πi dz (kx tan θx + ky tan θy)) on every slice's Fresnel propagator, which moves the wave
laterally by dz·tan θ a slice relative to the specimen: the beam crosses the specimen at an
angle θ to the zone axis, so columns are seen obliquely. The "abtem" engine passes the tilt to
`abtem.Probe(tilt=...)`; the "stemdl" engine multiplies the same phase into its propagators
(`multislice.tilt_phase`). The target stays the projection along z.

Frozen phonons: abTEM's `FrozenPhonons` draws the displacements (its seeds, its generator),
and `specimen` then keeps every displaced atom inside the specimen's thickness (z clamped to
[0, thickness)) instead of letting abTEM's periodic wrap move an atom displaced above the
entrance face to the exit face, a jump of the whole thickness. With infinite projection an
atom's z matters only through its slice index, so the clamp puts it in the first or last
slice, next to where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from ase import Atoms

from stemdl.simulate.device import Device, to_numpy

if TYPE_CHECKING:  # abTEM is imported lazily: importing simulate/ must not pay for it
    from abtem import AtomsEnsemble
    from abtem.potentials.iam import PotentialArray


@dataclass(frozen=True)
class ProbeSettings:
    energy_ev: float
    semiangle_mrad: float
    defocus_a: float  # abTEM's `defocus` (= -C10)
    c30_a: float  # spherical aberration, abTEM's `Cs`
    tilt_mrad: tuple[float, float] = (0.0, 0.0)  # (x, y) mistilt: abTEM's `Probe(tilt=...)`


@dataclass(frozen=True)
class PotentialSettings:
    gpts: tuple[int, int]  # (x, y)
    slice_thicknesses_a: tuple[float, ...]
    parametrization: str
    projection: str
    num_phonon_configs: int
    phonon_sigma_a: float
    phonon_seed: int


# Largest z kept, as a margin below the thickness: abTEM snaps z within 1e-10 Å of the exit
# face to 0 (the entrance), which is the very wrap `keep_within_thickness` prevents.
_EXIT_FACE_MARGIN_A = 1e-6


def keep_within_thickness(atoms: Atoms) -> Atoms:
    """A copy of `atoms` with z clamped to [0, thickness): no atom wraps through the specimen."""
    clamped = atoms.copy()
    thickness = float(atoms.cell[2, 2])
    clamped.positions[:, 2] = np.clip(atoms.positions[:, 2], 0.0, thickness - _EXIT_FACE_MARGIN_A)
    return clamped


def specimen(atoms: Atoms, settings: PotentialSettings) -> Atoms | AtomsEnsemble:
    """The atoms as abTEM sees them: plain, or the frozen-phonon configurations of this sample.

    The displacements are abTEM's (`FrozenPhonons(...).to_atoms_ensemble()`, seeded per
    sample); each configuration is then kept within the thickness (see the module docstring).
    """
    if settings.num_phonon_configs == 1 and settings.phonon_sigma_a == 0:
        return atoms
    import abtem

    phonons = abtem.FrozenPhonons(
        atoms,
        num_configs=settings.num_phonon_configs,
        sigmas=settings.phonon_sigma_a,
        seed=settings.phonon_seed,
    )
    configurations = phonons.to_atoms_ensemble().trajectory
    return abtem.AtomsEnsemble([keep_within_thickness(c) for c in configurations])


def build_potential(atoms: Atoms, settings: PotentialSettings, device: Device) -> PotentialArray:
    """Build the sliced potential on `device` (an abTEM PotentialArray; ensemble axis first with phonons)."""
    import abtem

    potential = abtem.Potential(
        specimen(atoms, settings),
        gpts=settings.gpts,
        slice_thickness=settings.slice_thicknesses_a,
        parametrization=settings.parametrization,
        projection=settings.projection,
        device=device,
    )
    return potential.build(lazy=False)


def central_crop(n: int, m: int) -> slice:
    """Indices of the m central pixels of an fftshifted axis of n (zero frequency at n // 2)."""
    if m > n:
        raise ValueError(f"cannot crop {m} pixels from an axis of {n}")
    start = n // 2 - m // 2
    return slice(start, start + m)


def sum_pool(patterns: np.ndarray, binning: int) -> np.ndarray:
    """Sum-pool the last two axes by `binning` (their sizes must be multiples of it)."""
    if binning == 1:
        return patterns
    *lead, h, w = patterns.shape
    pooled = patterns.reshape(*lead, h // binning, binning, w // binning, binning)
    return pooled.sum(axis=(-3, -1))


Engine = Literal["stemdl", "abtem"]
# `SampleRecord.extra["engine_code"]`: the engine as a number (extra holds floats only).
ENGINE_CODES: dict[str, float] = {"abtem": 0.0, "stemdl": 1.0}


def cbed_patterns(
    potential_array: PotentialArray,
    probe: ProbeSettings,
    positions_xy_a: np.ndarray,
    pattern_px: tuple[int, int],
    binning: int,
    device: Device,
    engine: Engine = "stemdl",
    multislice_gpts: tuple[int, int] | None = None,
) -> np.ndarray:
    """(P, H, W) float32 CBED patterns, rows = ky, columns = kx (see module docstring).

    `multislice_gpts`: propagate on this coarser grid of the same extent (stemdl engine only;
    `simulation.reduced_grid_margin`); None: on the potential's grid.
    """
    import abtem

    abtem_probe = abtem.Probe(
        energy=probe.energy_ev,
        semiangle_cutoff=probe.semiangle_mrad,
        defocus=probe.defocus_a,
        Cs=probe.c30_a,
        # abTEM's tilt is metadata its Fresnel propagator applies; stemdl's engine applies the
        # same phase itself (`multislice.tilt_phase`), so its probe is built untilted.
        tilt=probe.tilt_mrad if engine == "abtem" else (0.0, 0.0),
        device=device,
    )
    height, width = pattern_px[0] * binning, pattern_px[1] * binning
    if multislice_gpts is not None and engine != "stemdl":
        raise ValueError("a reduced multislice grid (simulation.reduced_grid_margin) needs engine 'stemdl'")
    if engine == "stemdl":
        from stemdl.simulate.multislice import diffraction_window, probe_waves

        abtem_probe.grid.match(potential_array)
        if multislice_gpts is not None:
            abtem_probe.gpts = multislice_gpts  # same extent, coarser grid
        probes = probe_waves(abtem_probe, positions_xy_a, device)
        window = diffraction_window(probes, potential_array, (width, height), device,
                                    tilt_mrad=probe.tilt_mrad)
        array = np.asarray(to_numpy(window), dtype=np.float32)  # (P, kx, ky)
    elif engine == "abtem":
        scan = abtem.CustomScan(positions_xy_a)
        exit_waves = abtem_probe.multislice(potential_array, scan=scan)
        patterns = exit_waves.diffraction_patterns(max_angle=None)  # (..., P, kx, ky), fftshifted
        nx, ny = patterns.shape[-2:]
        cropped = patterns.array[..., central_crop(nx, width), central_crop(ny, height)]
        array = np.asarray(to_numpy(cropped.compute(scheduler="synchronous")), dtype=np.float32)
        if array.ndim == 4:  # frozen-phonon ensemble first: incoherent average
            array = array.mean(axis=0, dtype=np.float64).astype(np.float32)
    else:
        raise ValueError(f"simulation.engine must be 'stemdl' or 'abtem', got {engine!r}")
    array = sum_pool(np.swapaxes(array, -1, -2), binning)  # (P, ky, kx)
    return np.ascontiguousarray(array, dtype=np.float32)


def projected_potential_sections(
    potential_array: PotentialArray, depth_sections: int
) -> np.ndarray:
    """(C, y, x) float64: the slices summed in C contiguous, as-equal-as-possible depth groups.

    The sum over all slices is the projected potential (V·Å); with frozen phonons the
    configurations are averaged.
    """
    slices = np.asarray(to_numpy(potential_array.array), dtype=np.float64)
    if slices.ndim == 4:
        slices = slices.mean(axis=0)
    num_slices = slices.shape[0]
    if depth_sections > num_slices:
        raise ValueError(
            f"target.depth_sections={depth_sections} exceeds the {num_slices} slices of this "
            f"specimen; use fewer sections, thinner slices, or thicker specimens"
        )
    groups = np.array_split(np.arange(num_slices), depth_sections)
    sections = np.stack([slices[g].sum(axis=0) for g in groups])
    return np.swapaxes(sections, -1, -2)
