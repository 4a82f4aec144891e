"""Helpers for the datasets/ tests (kept out of conftest.py, which the lead owns).

`SYNTHETIC` below is a stand-in with the simulate/ API (`build_catalogue`, `simulate_sample`,
see `stemdl.datasets.shard.Simulator`) that builds `Sample`s from seeded random arrays. It is
used only where a test needs exactly known array values or a sample that raises; the
end-to-end tests use the real `simulate` package. It lives in tests/, never in the package.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stemdl import simulate
from stemdl.configs import StemdlConfig, config_from_dict, load_config
from stemdl.simulate.sample import Sample, SampleRecord

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Material:
    material_id: str
    split: str
    formula: str
    spacegroup: int


@dataclass
class Catalogue:
    """Shaped like simulate.Catalogue: materials, skipped (source, reason), splits mapping."""

    materials: list[Material]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def splits(self) -> dict[str, str]:
        return {m.material_id: m.split for m in self.materials}


_MATERIALS = [
    Material("rocksalt-NaCl", "train", "NaCl", 225),
    Material("fcc-Cu", "train", "Cu", 225),
    Material("bcc-Fe", "train", "Fe", 229),
    Material("diamond-Si", "train", "Si2", 227),
    Material("zincblende-GaAs", "validation", "GaAs", 216),
    Material("perovskite-SrTiO3", "test", "SrTiO3", 221),
]

# Indices whose synthetic simulation always raises (read by the poisoned variant).
POISONED_INDICES = (5,)


def build_catalogue(simulation: Any) -> Catalogue:
    return Catalogue(list(_MATERIALS), skipped=[("bad.cif", "not a CIF file")])


def synthetic_sample(simulation: Any, index: int, catalogue: Catalogue | None = None) -> Sample:
    """A deterministic sample of the configured shapes (random arrays seeded by the index)."""
    catalogue = catalogue or build_catalogue(simulation)
    rng = np.random.default_rng([simulation.seed, index])
    material = catalogue.materials[index % len(catalogue.materials)]
    p = simulation.num_patterns
    h, w = simulation.detector.pattern_px
    c = simulation.target.depth_sections
    th, tw = simulation.target.target_px
    cbed = (rng.random((p, h, w), dtype=np.float32) / (h * w)).astype(np.float32)
    potential = (rng.random((c, th, tw), dtype=np.float32) * 50).astype(np.float32)
    n_atoms = 1 + index % 5
    cell = np.diag([4.0, 4.0, 4.0 + index % 3])
    record = SampleRecord(
        index=index, seed=int(rng.integers(0, 2**62)), material_id=material.material_id,
        formula=material.formula, split=material.split, spacegroup=material.spacegroup,
        zone_axis=(0, 0, 1), cell_a=cell,
        atomic_numbers=rng.integers(1, 80, n_atoms), positions_a=rng.random((n_atoms, 3)) * 4,
        repetitions=(3, 3, 4), thickness_a=float(cell[2, 2] * 4), extent_a=(12.0, 12.0),
        energy_ev=100e3, wavelength_a=0.037014, semiangle_mrad=float(6 + index % 4),
        defocus_a=float(rng.uniform(-20, 20)), c30_a=0.0, sampling_a=(0.15, 0.15),
        gpts=(80, 80), reciprocal_sampling_inv_a=(1 / 12, 1 / 12),
        angular_sampling_mrad=(3.08, 3.08), slice_thickness_a=2.0, num_slices=8,
        parametrization="kirkland", projection="infinite", num_phonon_configs=1,
        phonon_sigma_a=0.0, probe_positions_a=rng.random((p, 2)) * 6 + 3,
        scan_gpts=tuple(simulation.scan.gpts), detector_binning=1,
        target_region_a=(3.0, 3.0, 9.0, 9.0), abtem_version="synthetic", device="cpu",
        extra={"index_squared": float(index * index)},
    )
    return Sample(cbed=cbed, potential=potential, record=record)


@dataclass(frozen=True)
class SyntheticSimulator:
    """The synthetic samples as a `Simulator` (picklable: Dask ships it to its workers).
    `count_file`: each simulated index is appended to that file (every worker process writes
    into the same one, one short line each), for tests that count simulations."""

    count_file: str | None = None

    def build_catalogue(self, simulation: Any) -> Catalogue:
        return build_catalogue(simulation)

    def simulate_sample(self, simulation: Any, index: int, catalogue: Any = None) -> Sample:
        if self.count_file is not None:
            with open(self.count_file, "a") as handle:
                handle.write(f"{index}\n")
        return synthetic_sample(simulation, index, catalogue)


SYNTHETIC = SyntheticSimulator()


def small_config(preset: str = "tiny", **dataset: Any) -> StemdlConfig:
    """A preset with its dataset section overridden (e.g. num_samples, shard_size)."""
    data = load_config(preset).to_dict()
    data["dataset"].update(dataset)
    return config_from_dict(data)


def write_config(config: StemdlConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def run_python(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` in the repo with tests/ importable (for the synthetic simulator)."""
    env = {**__import__("os").environ, "PYTHONPATH": f"{TESTS}:{REPO}"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, text=True,
                          capture_output=True, **kwargs)


_BUILT: dict[tuple[str, int, int], Path] = {}


def synthetic_store(root: Path, num_samples: int = 30, shard_size: int = 4) -> Path:
    """A complete store of synthetic samples (built once per test session and size)."""
    from stemdl.datasets.plan import plan_store
    from stemdl.datasets.shard import simulate_shard

    key = ("synthetic", num_samples, shard_size)
    if key not in _BUILT:
        config = small_config(num_samples=num_samples, shard_size=shard_size)
        url = root / f"synthetic-{num_samples}-{shard_size}.zarr"
        plan_store(config, str(url), build_catalogue(config.simulation))
        for shard in range(config.dataset.num_shards):
            simulate_shard(config, str(url), shard, simulator=SYNTHETIC)
        _BUILT[key] = url
    return _BUILT[key]


def store_files(url: Path) -> dict[str, bytes]:
    """Every file of a local store by relative path (for bit-identity comparisons)."""
    return {str(p.relative_to(url)): p.read_bytes() for p in sorted(url.rglob("*")) if p.is_file()}


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@dataclass(frozen=True)
class PoisonedSimulator:
    """The real simulator, except that the samples at POISONED_INDICES always raise (a sample
    that cannot be simulated)."""

    def build_catalogue(self, simulation: Any) -> Any:
        return simulate.build_catalogue(simulation)

    def simulate_sample(self, simulation: Any, index: int, catalogue: Any = None) -> Sample:
        if index in POISONED_INDICES:
            raise RuntimeError(f"poisoned sample {index}: this structure cannot be simulated")
        return simulate.simulate_sample(simulation, index, catalogue)


def real_tiny_store(root: Path) -> Path:
    """The `tiny` preset generated once per session by `generate` with the real simulator on
    a 2-worker LocalCluster: the reference for round-trip, resume and repair tests."""
    from stemdl.datasets.generate import generate

    key = ("real-tiny", 0, 0)
    if key not in _BUILT:
        url = root / "real-tiny.zarr"
        report = generate(load_config("tiny"), str(url), n_workers=2, progress=False)
        assert report.complete, report.summary()
        _BUILT[key] = url
    return _BUILT[key]


def files_except_creation_time(url: Path) -> dict[str, bytes]:
    """`store_files` with the one value that differs between runs (created_utc) removed."""
    import json

    files = store_files(url)
    doc = json.loads(files.pop("zarr.json"))
    doc["attributes"].pop("created_utc")
    doc["attributes"].pop("software")
    files["zarr.json (without created_utc, software)"] = json.dumps(doc, sort_keys=True).encode()
    return files


def assert_records_equal(a: SampleRecord, b: SampleRecord) -> None:
    """Every field equal, arrays element-wise, NaN == NaN, tuples stay tuples."""
    import math

    for name in SampleRecord.field_names():
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
        elif isinstance(x, float):
            assert x == y or (math.isnan(x) and math.isnan(y)), name
        else:
            assert x == y, (name, x, y)
            assert type(x) is type(y) or (isinstance(x, tuple) and isinstance(y, tuple)), name
