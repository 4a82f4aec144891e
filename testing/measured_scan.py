""""Measured-like" 4D-STEM data for the predict tests, made honestly with the project's physics.

`simulate_large_scan` simulates one material of a config's catalogue as a microscope would
record it: a scan of rows × cols probes (more than a model's window) at a given step, over a
supercell `repeat` times wider than the training samples of that material, so that a pattern
pixel is λ / extent = 1/`repeat` of the training pixel of that material (finer, like a real
detector is), recorded on a larger detector than the model's pattern. The same abTEM potential
gives the true projected potential of the scanned area on the model's target pixel
(`simulate.target.resample_region`, the same definition and smoothing as the training targets).
`poisson_counts` turns the patterns into detector counts at a dose.
`write_mib` writes a Merlin .mib (+ .hdr) by hand, because rosettasciio reads .mib but cannot
write it (its QuantumDetector plugin has `writes: False`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stemdl.configs import SimulationConfig
from stemdl.configs.units import wavelength_a
from stemdl.simulate.catalogue import build_catalogue
from stemdl.simulate.geometry import (
    depth_repetitions,
    fast_fft_size,
    lateral_repetitions,
    scan_grid,
    slicing,
    specimen_atoms,
)
from stemdl.simulate.physics import (
    PotentialSettings,
    ProbeSettings,
    build_potential,
    cbed_patterns,
    projected_potential_sections,
)
from stemdl.simulate.target import resample_region


@dataclass(frozen=True)
class LargeScan:
    patterns: np.ndarray  # (rows, cols, H, W) float32, fraction of the beam per pixel
    potential: np.ndarray  # (C, rows·f, cols·f) true projected potential of the scanned area
    angular_sampling_mrad: tuple[float, float]  # (ky, kx)
    reciprocal_sampling_inv_a: tuple[float, float]
    step_a: float
    energy_ev: float
    semiangle_mrad: float
    material_id: str


def simulate_large_scan(sim: SimulationConfig, material_id: str, zone_axis: tuple[int, int, int],
                        *, repeat: int, scan_gpts: tuple[int, int], step_a: float,
                        pattern_px: int, target_px_per_probe: int, energy_ev: float,
                        semiangle_mrad: float, defocus_a: float, thickness_a: float,
                        corner_a: tuple[float, float] | None = None) -> LargeScan:
    """The scan (module docstring); its square starts at `corner_a` (x, y) Å in the
    supercell, or is centred in it (None)."""
    catalogue = build_catalogue(sim)
    material = catalogue.by_id(material_id)
    base = next(o for o in material.orientations if o.zone_axis == zone_axis)
    lx, ly, period = base.lengths_a
    reps = (repeat * lateral_repetitions(lx, sim.cell_xy_a),
            repeat * lateral_repetitions(ly, sim.cell_xy_a), depth_repetitions(period, thickness_a))
    extent = (reps[0] * lx, reps[1] * ly)
    gpts = tuple(fast_fft_size(math.ceil(e / sim.sampling_a - 1e-9)) for e in extent)
    thickness = reps[2] * period
    slice_a, num_slices = slicing(thickness, period, sim.slice_thickness_a, 1)
    rows, cols = scan_gpts
    assert rows == cols, "a square scan (scan_grid scans a square)"
    positions, region = scan_grid(extent, rows * step_a, scan_gpts)
    if corner_a is not None:
        positions = positions - np.array(region[:2]) + np.array(corner_a)
        x0, y0 = corner_a
        region = (x0, y0, x0 + rows * step_a, y0 + rows * step_a)
    atoms = specimen_atoms(np.array(base.atoms.cell.array), np.array(base.atoms.numbers),
                           np.array(base.atoms.positions), reps)
    settings = PotentialSettings(gpts=gpts, slice_thicknesses_a=(slice_a,) * num_slices,  # type: ignore[arg-type]
                                 parametrization=sim.parametrization, projection=sim.projection,
                                 num_phonon_configs=1, phonon_sigma_a=0.0, phonon_seed=0)
    potential = build_potential(atoms, settings, "cpu")
    probe = ProbeSettings(energy_ev, semiangle_mrad, defocus_a, 0.0)
    cbed = cbed_patterns(potential, probe, positions, (pattern_px, pattern_px), 1, "cpu",
                         sim.engine)
    sampling = (extent[0] / gpts[0], extent[1] / gpts[1])
    target = resample_region(projected_potential_sections(potential, 1), sampling, region,
                             (rows * target_px_per_probe, cols * target_px_per_probe),
                             sim.target.smoothing_px)
    reciprocal = (1 / extent[1], 1 / extent[0])  # (ky, kx)
    lam = wavelength_a(energy_ev)
    return LargeScan(cbed.reshape(rows, cols, pattern_px, pattern_px), target.astype(np.float32),
                     (1e3 * lam * reciprocal[0], 1e3 * lam * reciprocal[1]), reciprocal,
                     step_a, energy_ev, semiangle_mrad, material_id)


def training_phase_corner_a(sim: SimulationConfig, material_id: str,
                            zone_axis: tuple[int, int, int], repeat: int) -> tuple[float, float]:
    """A scan corner (x, y) Å with the same position relative to the lattice as the scanned
    square of every training sample of this material: the training square is centred in a
    cell of `reps` base cells, at (reps·L − side)/2; one `(repeat − 1)/2` training cells further
    (whole base cells for an odd `repeat`) is equivalent, and centred in the wider supercell."""
    assert repeat % 2 == 1, "an odd repeat keeps the shift a whole number of base cells"
    base = next(o for o in build_catalogue(sim).by_id(material_id).orientations
                if o.zone_axis == zone_axis)
    side = sim.scan.side_a(sim.cell_xy_a)
    corner = []
    for length in base.lengths_a[:2]:
        extent = lateral_repetitions(length, sim.cell_xy_a) * length
        corner.append((extent - side) / 2 + (repeat - 1) / 2 * extent)
    return corner[0], corner[1]


def poisson_counts(patterns: np.ndarray, electrons_per_pattern: float, seed: int) -> np.ndarray:
    """Detector counts: Poisson(electrons · fraction of the beam) per pixel, as uint16."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(np.clip(patterns, 0, None).astype(np.float64) * electrons_per_pattern)
    assert counts.max() < 2**16, "counts overflow a 16-bit Merlin frame"
    return counts.astype(np.uint16)


def write_mib(path: Path, counts: np.ndarray) -> Path:
    """A Merlin .mib of (rows, cols, H, W) uint16 frames and the .hdr beside it.

    The format (Quantum Detectors Merlin manual, "MQ1" frame header): every frame is a
    384-byte ASCII header of comma-separated fields (MQ1, sequence number, header size 00384,
    chips 01, width, height, pixel type U16, chip layout, chip select, date, shutter time,
    ..., ISO timestamp, exposure in ns, bit depth), padded, then the pixels as big-endian
    uint16, row by row. The .hdr lists the acquisition as `key:\\tvalue` lines between `HDR,`
    and `End`; rosettasciio takes the scan shape from its frame counts. rosettasciio flips
    every frame vertically when it reads (Merlin's row order), so frames are written flipped
    and read back as they are here.
    """
    rows, cols, height, width = counts.shape
    frames = np.flip(counts, axis=-2).reshape(rows * cols, height, width).astype(">u2")
    with open(path, "wb") as handle:
        for index, frame in enumerate(frames, start=1):
            stamp = f"2026-11-30T12:00:{index * 1e-3:09.6f}Z"  # one frame a ms
            fields = ["MQ1", f"{index:06d}", "00384", "01", f"{width:04d}", f"{height:04d}",
                      "U16", "   1x1", "01", "2026-11-30 12:00:00.000000", "0.001000",
                      "0", "0", "0", "1.200000E+2", "5.110000E+2", *["0.000000E+0"] * 6,
                      "3RX", *["000"] * 24, "1.0e+2", "mdiff", stamp, "1000000ns", "16"]
            header = (",".join(fields) + ",").encode("ascii")
            assert len(header) <= 384, len(header)
            handle.write(header.ljust(384, b" "))
            handle.write(frame.tobytes())
    hdr = ["HDR,\t", f"Frames in Acquisition (Number):\t{rows * cols}",
           f"Frames per Trigger (Number):\t{cols}", "Counter Depth (number):\t12", "End\t"]
    path.with_suffix(".hdr").write_text("\n".join(hdr) + "\n")
    return path
