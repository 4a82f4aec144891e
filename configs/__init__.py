"""Presets and the one schema that validates a stemdl YAML file.

The bottom layer of stemdl: every package imports its typed section from here, and this
package imports no other part of stemdl. A config file has five sections, each used by one
package: `simulation` (`configs/simulation.py`, used by simulate/), `dataset` and `loader`
(`configs/dataset.py`, datasets/), `model` and `train` (`configs/training.py`, train/), on one
`StrictModel` base (`configs/base.py`, with `StemdlError`, the base of user-facing errors).
`load_config` accepts a preset name (`tiny`, `small`, `200kv`, `300kv`, `paper`) or a path, reads it with
`yaml.safe_load`, and refuses unknown keys and out-of-range values with a message that names
the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from stemdl.configs.base import ConfigError, StemdlError, StrictModel, UsageError
from stemdl.configs.dataset import ArrayStorage, DatasetConfig, LoaderConfig
from stemdl.configs.simulation import SampleShape, SimulationConfig
from stemdl.configs.training import ModelConfig, TrainConfig

__all__ = [
    "DEFAULT_PRESET", "PRESETS", "ArrayStorage", "ConfigError", "DatasetConfig", "LoaderConfig",
    "ModelConfig", "SampleShape", "SimulationConfig", "StemdlConfig", "StemdlError", "StrictModel",
    "TrainConfig", "UsageError", "config_from_dict", "load_config", "resolve_config_path",
]

PRESET_DIR = Path(__file__).resolve().parent
PRESETS: tuple[str, ...] = ("tiny", "small", "200kv", "300kv", "paper")
DEFAULT_PRESET = "small"


class StemdlConfig(StrictModel):
    """The whole configuration of a stemdl run."""

    name: str = "custom"
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    loader: LoaderConfig = Field(default_factory=LoaderConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _thickness_needs_units(self) -> StemdlConfig:
        for head in ("thickness_head", "amplitude_head"):
            if getattr(self.model, head) and self.loader.standardize_targets:
                raise ValueError(f"model.{head} needs physical targets: set "
                                 "loader.standardize_targets false")
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (paths as strings, tuples as lists) for stores and checkpoints."""
        return self.model_dump(mode="json")


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "<dict>") -> StemdlConfig:
    """Validate a parsed mapping; raise ConfigError naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    try:
        return StemdlConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(source, error)) from None


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A preset name maps to configs/NAME.yaml; anything else is a path."""
    if str(name_or_path) in PRESETS:
        return PRESET_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"config {str(name_or_path)!r} is neither a preset ({', '.join(PRESETS)}) nor a file"
        )
    return path


def load_config(name_or_path: str | Path = DEFAULT_PRESET) -> StemdlConfig:
    """Load and validate a preset or a YAML file (never executes YAML tags)."""
    path = resolve_config_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"invalid config {path}: not UTF-8 text (byte {error.start}: "
                          f"{error.reason}); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid config {path}: not valid YAML ({error})") from None
    if data is None:
        # An empty file (or only comments) is almost always a mistake (a wrong path, a file
        # not saved yet); running all the defaults silently would hide it.
        raise ConfigError(f"invalid config {path}: the file is empty (no sections); start "
                          "from a preset: `stemdl config small > my.yaml`")
    return config_from_dict(data, str(path))
