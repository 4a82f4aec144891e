"""The measured-like benchmark derives, for every preset, a scan predict accepts as trained.

`benchmarks/predict_measured.py --checkpoint PT` simulates its scans at a geometry read from
the checkpoint's config (`derive_geometry`). These checks run that derivation on each preset's
config, without simulating: the energy and semi-angle are the middle of the trained ranges,
the step is the trained one, the scan holds several windows, the thickness cases span the
trained range with 40 Å among them, and predict's own calibration check
(`predict.calibration.check_calibration`) accepts every crystal's scan and rebins its
detector pixel onto the model's by a ratio that is not a whole number (what a real detector
gives, and what the benchmark is meant to exercise). The detector must also fit inside abTEM's
antialiased band at the config's sampling, and the supercell must hold the scanned square with
its margin. The default (no checkpoint) geometry stays the one the published figures used.
"""

from __future__ import annotations

import math

import pytest

from benchmarks.predict_measured import (
    CRYSTALS,
    DEFAULT_GEOMETRY,
    MARGIN_A,
    derive_geometry,
    fractional_ratio,
)
from stemdl.configs import load_config
from stemdl.configs.units import wavelength_a
from stemdl.predict.calibration import check_calibration
from stemdl.predict.trained_ranges import trained_ranges

PRESETS = {  # preset: (energy eV, middle semi-angle mrad, step Å, probe grid)
    "small": (100e3, 10.0, 0.8, 8),
    "200kv": (200e3, 20.0, 0.4, 10),
    "300kv": (300e3, 25.0, 0.3, 10),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_derived_geometry_matches_preset_and_is_accepted(preset: str) -> None:
    config = load_config(preset)
    sim = config.simulation
    geometry = derive_geometry(config)
    energy, semiangle, step, grid = PRESETS[preset]
    assert geometry.energy_ev == energy
    assert geometry.semiangle_mrad == pytest.approx(semiangle)
    assert geometry.step_a == pytest.approx(step)
    assert geometry.window == grid and geometry.probes == 2 * grid  # 3 x 3 windows at stride/2
    assert geometry.thickness_a == 40.0
    assert set(geometry.thickness_cases_a) == {sim.thickness_a.min, sim.thickness_a.max}
    assert geometry.phonon_configs == sim.phonons.num_configs
    ranges = trained_ranges(config)
    for formula, (_, lattice_a) in CRYSTALS.items():
        reps = geometry.supercell_repetitions(lattice_a)
        extent = reps * lattice_a
        assert extent >= geometry.side_a + 2 * MARGIN_A - 1e-9, formula
        pixel = 1e3 * wavelength_a(geometry.energy_ev) / extent
        calibration = {"energy_ev": geometry.energy_ev,
                       "semiangle_mrad": geometry.semiangle_mrad,
                       "scan_step_a": (geometry.step_a, geometry.step_a),
                       "angular_sampling_mrad": (pixel, pixel)}
        ratio = check_calibration(calibration, (geometry.probes,) * 2, ranges)[0]
        # predict bins by a fractional ratio (not within its 2 % of a whole factor) ...
        assert ratio == pytest.approx(geometry.pixel_ratio(extent)), formula
        assert fractional_ratio(ratio) and abs(ratio - round(ratio)) > 0.02 * ratio, (formula,
                                                                                      ratio)
        # ... and the recorded detector holds the model's pattern at that ratio, inside the
        # band abTEM keeps on the config's grid
        detector = geometry.detector_pixels(extent)
        assert detector % 2 == 0
        assert detector >= sim.detector.pattern_px[0] * ratio
        assert detector <= math.floor(2 / 3 * math.ceil(extent / sim.sampling_a)), formula


def test_default_geometry_is_the_published_one() -> None:
    # the 2026-12-04 figures of benchmarks/RESULTS.md: 100 keV, 9 mrad, 1.5 Å, 8 x 8, 72 px,
    # supercells of round(26 Å / a) cells
    g = DEFAULT_GEOMETRY
    assert (g.energy_ev, g.semiangle_mrad, g.step_a, g.probes, g.detector_px) == (
        100e3, 9.0, 1.5, 8, 72)
    assert g.detector_pixels(26.0) == 72
    assert [g.supercell_repetitions(a) for _, a in CRYSTALS.values()] == [
        round(26.0 / a) for _, a in CRYSTALS.values()]
