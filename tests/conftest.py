"""Shared test settings and fixtures.

Settings: libraries quiet and single-threaded, so 2-core CI is predictable. Fixtures: the
`tiny` store simulated for real once per session (the reference of the datasets/, train/ and
end-to-end tests), and the config helpers every folder uses. Helpers are session-scoped
fixtures that return a function, so module-scoped fixtures can use them too. Each test folder
mirrors a package (`simulate/`, `datasets/`, `train/`, `configs/`); tests of the whole
pipeline, the command line and the repository stay here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stemdl.configs import SimulationConfig, StemdlConfig, config_from_dict, load_config

# One BLAS/OpenMP thread per process: the tests start Dask workers and torch ranks of their own.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

LAUNCHER_PREFIXES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_", "PMI_", "OMPI_", "JSM_",
                     "LSB_")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset (24 samples, 6 shards) generated once per session by `generate` with
    the real simulator on a 2-worker LocalCluster; tests only read it (copy it to change it)."""
    from stemdl.datasets.generate import generate

    url = tmp_path_factory.getbasetemp() / "real-tiny.zarr"
    report = generate(load_config("tiny"), str(url), n_workers=2, progress=False)
    assert report.complete, report.summary()
    return url


@pytest.fixture(scope="session")
def simulation_config() -> Callable[..., SimulationConfig]:
    """`simulation_config(preset, **changes)`: the preset's simulation section with changes
    at double-underscore paths, e.g. `structures__families=[...]`."""

    def make(preset: str = "tiny", **changes: Any) -> SimulationConfig:
        data = load_config(preset).to_dict()
        for dotted, value in changes.items():
            node = data["simulation"]
            *parents, leaf = dotted.split("__")
            for key in parents:
                node = node[key]
            node[leaf] = value
        return config_from_dict(data).simulation

    return make


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., StemdlConfig]:
    """`tiny_config(model=None, **train)`: the tiny preset with `model:` and `train:` fields
    overridden."""

    def make(model: dict[str, Any] | None = None, **train: Any) -> StemdlConfig:
        data = load_config("tiny").to_dict()
        data["model"].update(model or {})
        data["train"].update(train)
        return config_from_dict(data)

    return make


@pytest.fixture(scope="session")
def write_config() -> Callable[[StemdlConfig, Path], Path]:
    """`write_config(config, path)`: the config as a YAML file the command line reads."""

    def write(config: StemdlConfig, path: Path) -> Path:
        path.write_text(yaml.safe_dump(config.to_dict()))
        return path

    return write


@pytest.fixture(scope="session")
def clean_env() -> Callable[[], dict[str, str]]:
    """`clean_env()`: this environment without launcher variables, so a child process trains
    as a single process."""

    def make() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    return make


@pytest.fixture(scope="session")
def wait_for() -> Callable[[Callable[[], bool], float, str], None]:
    """`wait_for(condition, timeout_s, what)`: poll `condition` every 50 ms; an
    AssertionError naming `what` after `timeout_s` (for tests that watch another process)."""

    def wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    return wait


@pytest.fixture(scope="session")
def relative_error() -> Callable[[np.ndarray, np.ndarray], float]:
    """`relative_error(actual, expected)`: ‖actual − expected‖ / ‖expected‖ in float64."""

    def error(actual: np.ndarray, expected: np.ndarray) -> float:
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))

    return error


@pytest.fixture(scope="session")
def write_cif() -> Callable[[Path, Any], None]:
    """`write_cif(path, atoms)`: an ASE structure as a CIF file."""

    def write(path: Path, atoms: Any) -> None:
        import ase.io

        ase.io.write(path, atoms, format="cif")

    return write


@pytest.fixture(scope="session")
def reconstruction_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The small reconstruction model (`reconstruction_model.py`: simulated and trained once
    per session), scored by test_reconstruction.py and applied by test_predict.py."""
    from stemdl.testing.reconstruction_model import trained_reconstruction

    return trained_reconstruction(tmp_path_factory.mktemp("reconstruction"))
