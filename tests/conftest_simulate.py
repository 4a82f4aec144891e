"""Helpers shared by the simulate/ tests (imported as a module; pytest puts tests/ on sys.path)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stemdl.configs import config_from_dict, load_config
from stemdl.configs.simulation import SimulationConfig


def simulation_config(preset: str = "tiny", **changes: Any) -> SimulationConfig:
    """The preset's simulation section with dotted-path changes: `structures__families=[...]`."""
    data = load_config(preset).to_dict()
    for dotted, value in changes.items():
        node = data["simulation"]
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config_from_dict(data).simulation


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def write_cif(path: Any, atoms: Any) -> None:
    import ase.io

    ase.io.write(path, atoms, format="cif")
