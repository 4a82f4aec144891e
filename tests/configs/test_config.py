"""Config validation: presets load, and every kind of bad value is refused naming its field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import abtem
import pytest
import yaml

from stemdl.configs import PRESETS, ConfigError, config_from_dict, load_config
from stemdl.configs.units import energy_ev_for_wavelength_a, wavelength_a


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset: str) -> None:
    config = load_config(preset)
    assert config.name == preset
    # Round trip through the JSON-safe dict that stores and checkpoints record.
    assert config_from_dict(config.to_dict()) == config


def test_default_run_stays_an_honest_problem() -> None:
    """Issue 13: the default spans >= 8 families and >= 2 zone axes, draws thickness, defocus
    and semi-angle, and its target keeps a pixel <= 0.3 Å over the scanned region."""
    sim = load_config("small").simulation
    assert len(sim.structures.families) >= 8
    assert isinstance(sim.structures.zone_axes, list) and len(sim.structures.zone_axes) >= 2
    for drawn in (sim.thickness_a, sim.defocus_a, sim.semiangle_mrad):
        assert not drawn.is_fixed
    # Every sample is scanned over the same square (simulate/geometry.py), so this is the
    # target pixel of every sample.
    assert sim.scan.side_a(sim.cell_xy_a) / max(sim.target.target_px) <= 0.3


def test_preset_shapes_match_the_issue() -> None:
    small, paper = load_config("small"), load_config("paper")
    assert small.simulation.num_patterns == 64
    assert paper.simulation.num_patterns == 1024
    assert paper.simulation.detector.pattern_px == (512, 512)
    assert paper.simulation.cell_xy_a == 100.0
    assert paper.simulation.thickness_a.min == 200.0
    assert paper.model.layers_per_block == [2, 2, 3, 4, 3, 2, 2]
    assert paper.model.growth_rate == 128 and paper.model.kernel_size == 5


@pytest.mark.parametrize("energy_ev", [60e3, 100e3, 200e3, 300e3])
def test_wavelength_matches_abtem(energy_ev: float) -> None:
    assert wavelength_a(energy_ev) == pytest.approx(abtem.core.energy.energy2wavelength(energy_ev), rel=1e-6)


@pytest.mark.parametrize("energy_ev", [30e3, 80e3, 100e3, 200e3, 300e3])
def test_energy_from_a_recorded_wavelength_inverts_abtem(energy_ev: float) -> None:
    """Detectors (Dectris) record the wavelength: abTEM's wavelength gives back the energy."""
    wavelength = abtem.core.energy.energy2wavelength(energy_ev)
    assert energy_ev_for_wavelength_a(wavelength) == pytest.approx(energy_ev, rel=1e-6)


def _tiny_with(**changes: object) -> dict:
    data = load_config("tiny").to_dict()
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"simulation__thickness_a": [-5.0, 10.0]}, "simulation.thickness_a", "> 0"),
        ({"simulation__semiangle_mrad": 90.0}, "simulation", "antialiasing"),
        ({"simulation__detector__pattern_px": [64, 64]}, "simulation", "allowed range [2, 53]"),
        ({"simulation__energy_ev": 5.0}, "simulation.energy_ev", "10000"),
        ({"simulation__sampling_a": 0.0}, "simulation.sampling_a", "greater than"),
        ({"dataset__shard_size": 0}, "dataset.shard_size", "greater than or equal to 1"),
        ({"model__layers_per_block": [1, 1]}, "model", "2*n_pool+1"),
        ({"model__kernel_size": 4}, "model", "odd"),
        ({"simulation__structures__split_fractions": [0.5, 0.5, 0.5]}, "split_fractions", "sum"),
        ({"simulation__structures__zone_axes": [[0, 0, 0]]}, "zone_axes", "not a direction"),
    ],
)
def test_bad_values_name_field_and_range(changes: dict, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict(_tiny_with(**changes), "test.yaml")
    message = str(error.value)
    assert field in message, message
    assert hint in message, message


def test_typo_is_refused_with_its_path() -> None:
    data = _tiny_with()
    data["simulation"]["semiangel_mrad"] = 10.0
    with pytest.raises(ConfigError, match=r"simulation\.semiangel_mrad: unknown key"):
        config_from_dict(data)


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_config_names_presets() -> None:
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-config.yaml")


def test_cli_reports_config_error_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_tiny_with(simulation__thickness_a=-1.0)))
    result = subprocess.run(
        [sys.executable, "-m", "stemdl.pipeline", "config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "simulation.thickness_a" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (b"# nothing but a comment\n", "the file is empty"),
    ("name: Fe\u2082O\u2083\n".encode("utf-16"), "not UTF-8 text"),
])
def test_empty_or_undecodable_file_is_refused_naming_it(tmp_path: Path, content: bytes,
                                                         message: str) -> None:
    path = tmp_path / "my.yaml"
    path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "stemdl.pipeline", "config", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stdout
    assert str(path) in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stemdl.pipeline", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("simulate", "verify", "inspect", "stage", "train", "evaluate", "run"):
        assert command in result.stdout
