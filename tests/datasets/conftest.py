"""Fixtures of the datasets/ tests: synthetic simulators and stores, store comparisons.

The synthetic samples (seeded random arrays, `synthetic_simulator.py`) are for tests that need
exactly known values or a sample that raises; the end-to-end tests use the real simulator and
the session's `tiny_store` (tests/conftest.py).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stemdl.configs import StemdlConfig, config_from_dict, load_config
from stemdl.simulate.sample import SampleRecord
from stemdl.testing.synthetic_simulator import SYNTHETIC, PoisonedSimulator, SyntheticSimulator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def synthetic() -> SyntheticSimulator:
    """The synthetic `Simulator` (`build_catalogue`, `simulate_sample`)."""
    return SYNTHETIC


@pytest.fixture(scope="session")
def poisoned_simulator() -> PoisonedSimulator:
    """The real simulator whose samples at `.indices` always raise."""
    return PoisonedSimulator()


@pytest.fixture(scope="session")
def small_config() -> Callable[..., StemdlConfig]:
    """`small_config(preset="tiny", **dataset)`: a preset with its dataset section overridden
    (e.g. num_samples, shard_size)."""

    def make(preset: str = "tiny", **dataset: Any) -> StemdlConfig:
        data = load_config(preset).to_dict()
        data["dataset"].update(dataset)
        return config_from_dict(data)

    return make


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory,
                    small_config: Callable[..., StemdlConfig]) -> Callable[..., Path]:
    """`synthetic_store(num_samples=30, shard_size=4)`: a complete store of synthetic samples,
    built once per session and size; tests only read it (copy it to change it)."""
    from stemdl.datasets.plan import plan_store
    from stemdl.datasets.shard import simulate_shard

    built: dict[tuple[int, int], Path] = {}
    root = tmp_path_factory.mktemp("synthetic")

    def make(num_samples: int = 30, shard_size: int = 4) -> Path:
        key = (num_samples, shard_size)
        if key not in built:
            config = small_config(num_samples=num_samples, shard_size=shard_size)
            url = root / f"synthetic-{num_samples}-{shard_size}.zarr"
            plan_store(config, str(url), SYNTHETIC.build_catalogue(config.simulation))
            for shard in range(config.dataset.num_shards):
                simulate_shard(config, str(url), shard, simulator=SYNTHETIC)
            built[key] = url
        return built[key]

    return make


@pytest.fixture(scope="session")
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_python(args, **kwargs)`: `python ARGS` in the repository, output captured."""

    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=REPO, text=True, capture_output=True,
                              **kwargs)

    return run


def _store_files(url: Path) -> dict[str, bytes]:
    return {str(p.relative_to(url)): p.read_bytes() for p in sorted(url.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def store_files() -> Callable[[Path], dict[str, bytes]]:
    """`store_files(url)`: every file of a local store by relative path (bit identity)."""
    return _store_files


@pytest.fixture(scope="session")
def files_except_creation_time() -> Callable[[Path], dict[str, bytes]]:
    """`store_files` with the values that differ between runs (created_utc, software) removed."""

    def files(url: Path) -> dict[str, bytes]:
        found = _store_files(url)
        doc = json.loads(found.pop("zarr.json"))
        doc["attributes"].pop("created_utc")
        doc["attributes"].pop("software")
        found["zarr.json (without created_utc, software)"] = json.dumps(
            doc, sort_keys=True).encode()
        return found

    return files


@pytest.fixture(scope="session")
def flip_byte() -> Callable[[Path, int], None]:
    """`flip_byte(path, offset)`: corrupt one byte of a file."""

    def flip(path: Path, offset: int) -> None:
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x40
        path.write_bytes(bytes(data))

    return flip


@pytest.fixture(scope="session")
def assert_records_equal() -> Callable[[SampleRecord, SampleRecord], None]:
    """`assert_records_equal(a, b)`: every field equal, arrays element-wise, NaN == NaN,
    tuples stay tuples."""

    def check(a: SampleRecord, b: SampleRecord) -> None:
        for name in SampleRecord.field_names():
            x, y = getattr(a, name), getattr(b, name)
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
            elif isinstance(x, float):
                assert x == y or (math.isnan(x) and math.isnan(y)), name
            else:
                assert x == y, (name, x, y)
                assert type(x) is type(y) or (isinstance(x, tuple) and isinstance(y, tuple)), name

    return check
