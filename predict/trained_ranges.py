"""What a checkpoint's model saw in training, worked out from its stored config alone.

Why here: the range of angular pixel sizes the training patterns had depends on the extent of
every training material's base cell (a pattern pixel is 1e3·λ·binning / extent mrad, and the
extent is whole base cells), so it needs the config's (deterministic) catalogue, which
datasets/ may build and train/ may not. `predict.calibration` checks a scan against these ranges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stemdl.configs import StemdlConfig
from stemdl.configs.units import wavelength_a
from stemdl.predict.pattern_resampling import pattern_centre_px
from stemdl.simulate.catalogue import build_catalogue
from stemdl.simulate.geometry import lateral_repetitions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedRanges:
    """What a checkpoint's model saw in training (from its stored config)."""

    energy_ev: tuple[float, float]
    semiangle_mrad: tuple[float, float] | None  # None: 'touching' (per material)
    scan_step_a: tuple[float, float]  # (y, x), the same for every training sample
    angular_sampling_mrad: tuple[float, float]  # (finest, coarsest) pattern pixel
    window: tuple[int, int]  # (gy, gx) probes
    pattern_px: tuple[int, int]
    pattern_centre_px: tuple[float, float]  # (ky, kx) of zero frequency in a model pattern
    target_px: tuple[int, int]
    target_pixel_a: tuple[float, float]  # (y, x)
    unchecked: dict[str, Any] = field(default_factory=dict)  # trained over, not measurable
    # binning / median training extent (Å⁻¹ per pattern pixel): the pixel `predict` rebins
    # every scan onto, at the scan's energy (`typical_angular_sampling_mrad`); None: unknown
    typical_pixel_inv_a: float | None = None
    # `detector.pixel_mrad` of the config: every training pattern had this pixel, at every
    # energy; predict bins onto it (None: the native per-material pixels above)
    fixed_pixel_mrad: float | None = None

    def typical_angular_sampling_mrad(self, energy_ev: float) -> float | None:
        """The median training pattern pixel (mrad) at `energy_ev`.

        Why one pixel: every training material's patterns have their own pixel (λ / its
        extent of whole cells, 12.1–19.7 Å for the tests' model, 12.8–25.4 Å for `small`), so a
        model learns where a structure's disks fall in pixels, not in mrad. A measured scan
        rebinned onto an arbitrary pixel of the trained range maps badly or well by chance
        (benchmarks/RESULTS.md, "pattern pixel"); onto this one, the map does not depend on
        the detector's pixel size. A config with `detector.pixel_mrad` removes the cause:
        every training pattern has that pixel, and this returns it."""
        if self.fixed_pixel_mrad is not None:
            return self.fixed_pixel_mrad
        if self.typical_pixel_inv_a is None:
            return None
        return 1e3 * wavelength_a(energy_ev) * self.typical_pixel_inv_a


def trained_ranges(config: StemdlConfig) -> TrainedRanges:
    """`TrainedRanges` of `config` (see the module docstring, step 1)."""
    sim = config.simulation
    side = sim.scan.side_a(sim.cell_xy_a)
    rows, cols = sim.scan.gpts
    binning = sim.detector.binning
    sampling_note = "training materials of the config's catalogue"
    try:
        catalogue = build_catalogue(sim)
        extents = [lateral_repetitions(length, sim.cell_xy_a) * length
                   for material in catalogue
                   if catalogue.split_of(material.material_id) == "train"
                   for orientation in material.orientations
                   for length in orientation.lengths_a[:2]]
    except (OSError, ValueError) as error:  # e.g. a cif_dir of the training machine
        log.warning("cannot rebuild the training catalogue (%s); the trained pattern pixel "
                    "range is taken as that of extents from cell_xy_a to twice it", error)
        extents = [sim.cell_xy_a, 2 * sim.cell_xy_a]
        sampling_note = "bound from cell_xy_a (catalogue not rebuilt)"
    per_px = [1e3 * wavelength_a(e) * binning for e in (sim.energy_ev.min, sim.energy_ev.max)]
    sampling = (min(per_px) / max(extents), max(per_px) / min(extents))
    fixed = sim.detector.pixel_mrad
    if fixed is not None:
        sampling = (fixed, fixed)
        sampling_note = "detector.pixel_mrad (one pixel for every training pattern)"
    semiangle = sim.semiangle_mrad
    return TrainedRanges(
        energy_ev=(sim.energy_ev.min, sim.energy_ev.max),
        semiangle_mrad=None if isinstance(semiangle, str) else (semiangle.min, semiangle.max),
        scan_step_a=(side / rows, side / cols),
        angular_sampling_mrad=sampling,
        window=(rows, cols),
        pattern_px=tuple(sim.detector.pattern_px),
        pattern_centre_px=pattern_centre_px(tuple(sim.detector.pattern_px), binning),
        target_px=tuple(sim.target.target_px),
        target_pixel_a=(side / sim.target.target_px[0], side / sim.target.target_px[1]),
        unchecked={"defocus_a": [sim.defocus_a.min, sim.defocus_a.max],
                   "c30_a": [sim.c30_a.min, sim.c30_a.max],
                   "thickness_a": [sim.thickness_a.min, sim.thickness_a.max],
                   "zone_axes": sim.structures.zone_axes,
                   "angular_sampling_from": sampling_note,
                   "semiangle": "touching (per material)" if isinstance(semiangle, str) else None},
        typical_pixel_inv_a=binning / float(np.median(extents)),
        fixed_pixel_mrad=fixed,
    )
