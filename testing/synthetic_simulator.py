"""Stand-ins for simulate/ in the datasets/ tests (`stemdl.datasets.shard.Simulator`).

`SyntheticSimulator` builds `Sample`s of the configured shapes from seeded random arrays: for
tests that need exactly known values or must count simulations; `PoisonedSimulator` is the real
simulator with samples that always raise. The end-to-end tests use the real `stemdl.simulate`.

Why a module and not conftest.py (whose fixtures hand these out): generation ships the
simulator to Dask worker processes, which unpickle it by its module's name, and every test
folder has a module named `conftest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stemdl import simulate
from stemdl.simulate.sample import Sample, SampleRecord


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


@dataclass(frozen=True)
class PoisonedSimulator:
    """The real simulator, except that the samples at `indices` always raise (a sample that
    cannot be simulated)."""

    indices: tuple[int, ...] = (5,)

    def build_catalogue(self, simulation: Any) -> Any:
        return simulate.build_catalogue(simulation)

    def simulate_sample(self, simulation: Any, index: int, catalogue: Any = None) -> Sample:
        if index in self.indices:
            raise RuntimeError(f"poisoned sample {index}: this structure cannot be simulated")
        return simulate.simulate_sample(simulation, index, catalogue)


@dataclass(frozen=True)
class KillOnceSimulator:
    """The synthetic samples, except that the worker process simulating sample `kill_at`
    SIGKILLs itself the first time (the file `flag_file` remembers that it did): for the test
    that a worker dying loses nothing the run cannot recover, the catalogue it held included."""

    flag_file: str
    kill_at: int = 2

    def build_catalogue(self, simulation: Any) -> Catalogue:
        return build_catalogue(simulation)

    def simulate_sample(self, simulation: Any, index: int, catalogue: Any = None) -> Sample:
        import os
        import signal

        if index == self.kill_at and not os.path.exists(self.flag_file):
            with open(self.flag_file, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return synthetic_sample(simulation, index, catalogue)
