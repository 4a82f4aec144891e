"""The contract between simulate/ and datasets/: one simulated sample and its full record.

A `Sample` carries the arrays (`cbed`, `potential`) and a `SampleRecord` of every parameter that
determines them, so that anyone can recompute the sample from the store alone with abTEM
(`tests/simulate/test_physics_reference.py` does exactly that). datasets/ stores every field of the record
(packed into a few per-sample arrays with named columns); nothing else about a sample exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class SampleRecord:
    """Everything that determines one sample (units in the names).

    Conventions (see simulate/geometry.py and simulate/physics.py): pairs named after abTEM's
    grid (`extent_a`, `sampling_a`, `gpts`, the two sampling fields, probe positions) are
    (x, y); `scan_gpts` is (rows, cols) = (n_y, n_x) as in `ScanConfig.gpts`, probe p = row·n_x
    + col; the arrays of a `Sample` are images, rows = y and columns = x. `seed` seeds the
    frozen phonons; `extra["target_smoothing_px"]` is the target's Gaussian σ.
    """

    index: int
    seed: int
    material_id: str
    formula: str
    split: str  # one of SPLITS
    spacegroup: int
    zone_axis: tuple[int, int, int]
    # The oriented, orthogonal base cell before phonon displacement; the simulated cell is
    # this cell repeated `repetitions` times.
    cell_a: np.ndarray  # (3, 3) float64, rows are cell vectors, orthogonal (diagonal)
    atomic_numbers: np.ndarray  # (n_atoms,) int
    positions_a: np.ndarray  # (n_atoms, 3) float64, Cartesian, in cell_a
    repetitions: tuple[int, int, int]
    thickness_a: float  # simulated thickness = cell_a[2, 2] * repetitions[2]
    extent_a: tuple[float, float]  # lateral extent of the simulated cell
    energy_ev: float
    wavelength_a: float
    semiangle_mrad: float
    defocus_a: float
    c30_a: float
    sampling_a: tuple[float, float]  # real-space grid spacing actually used
    gpts: tuple[int, int]
    reciprocal_sampling_inv_a: tuple[float, float]  # of the stored pattern pixels
    angular_sampling_mrad: tuple[float, float]  # of the stored pattern pixels (mrad/px)
    slice_thickness_a: float
    num_slices: int
    parametrization: str
    projection: str
    num_phonon_configs: int
    phonon_sigma_a: float
    probe_positions_a: np.ndarray  # (P, 2) float64, (x, y) in Å, row-major over the scan grid
    scan_gpts: tuple[int, int]
    detector_binning: int
    target_region_a: tuple[float, float, float, float]  # x0, y0, x1, y1 of the target map
    abtem_version: str
    device: str  # "cpu" or "gpu": where it was computed
    # (x, y) specimen/beam mistilt (mrad): abTEM's `Probe(tilt=...)`, a small-angle tilt of
    # every slice's Fresnel propagator; (0, 0) is the beam along the zone axis.
    tilt_mrad: tuple[float, float] = (0.0, 0.0)
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class Sample:
    """One training example: P CBED patterns and C projected-potential maps."""

    cbed: np.ndarray  # (P, H, W) float32: fraction of the incident beam per detector pixel
    potential: np.ndarray  # (C, H', W') float32: projected potential (V·Å) of the scanned region
    record: SampleRecord
