"""Configs the simulation cannot honour are refused with a message naming the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from ase.build import bulk

from stemdl.configs import ConfigError, config_from_dict, load_config
from stemdl.simulate import simulate_sample


def _tiny(**simulation_changes: object) -> dict:
    data = load_config("tiny").to_dict()
    data["simulation"].update(simulation_changes)
    return data


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"thickness_a": [-10.0, 5.0]}, r"simulation.thickness_a: .*must be > 0"),
        ({"semiangle_mrad": 60.0, "sampling_a": 0.3}, r"exceeds the antialiasing limit λ/\(3Δx\)"),
        (
            {"detector": {"pattern_px": [100, 100]}},
            r"pattern_px\[0\]=100 .* allowed range \[2, 53\]",
        ),
        (
            {"structures": {"zone_axis": [[0, 0, 1]]}},
            r"simulation.structures.zone_axis: unknown key \(typo\?\)",
        ),
        (
            {"structures": {"max_orientation_strain": 0.5}},
            r"simulation.structures.max_orientation_strain",
        ),
        ({"slice_thickness_a": "dhkl"}, r"simulation.slice_thickness_a"),
        ({"target": {"target_px": [500, 500]}}, r"target_px\[0\]=500 is more than 4x"),
    ],
)
def test_bad_simulation_configs_name_the_field(changes: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        config_from_dict(_tiny(**changes))


def test_touching_disks_outside_the_grid_is_a_clear_error(tmp_path: Path, simulation_config, write_cif) -> None:
    # Diamond-C [001]: the first allowed in-plane reflection, (220), has |g| = 0.79 / Å; a 1 Å
    # grid keeps only |g| < 0.67 / Å, so no disk can touch inside the simulated band.
    write_cif(tmp_path / "c.cif", bulk("C", "diamond", a=3.57, cubic=True))
    config = simulation_config(
        "tiny",
        structures__cif_dir=str(tmp_path),
        structures__families=[],
        sampling_a=1.0,
        semiangle_mrad="touching",
        detector={"pattern_px": [4, 4], "binning": 1},
        target={"target_px": [4, 4], "depth_sections": 1, "smoothing_px": 0.0},
    )
    with pytest.raises(ValueError, match=r"touching is impossible .* use a finer sampling_a"):
        simulate_sample(config, 0)


@pytest.mark.parametrize(("gpts", "target", "suggested"),
                         [((10, 10), (15, 15), "20x20"), ((4, 4), (16, 18), "16x16"),
                          ((8, 6), (32, 12), None), ((4, 4), (3, 3), "4x4")])
def test_stitching_needs_whole_target_pixels_per_probe(gpts, target, suggested) -> None:  # type: ignore[no-untyped-def]
    """Not a config error (training works), but predict's refusal: the message names both
    sizes and a multiple of scan.gpts near the target."""
    data = _tiny(scan={"gpts": list(gpts), "fraction": 0.5},
                 target={"target_px": list(target), "depth_sections": 1, "smoothing_px": 0.0})
    problem = config_from_dict(data).simulation.stitching_problem()
    if suggested is None:
        assert problem is None
    else:
        assert problem is not None and f"{target[0]}x{target[1]}" in problem
        assert f"{gpts[0]}x{gpts[1]} scan grid" in problem and f"e.g. {suggested}" in problem
