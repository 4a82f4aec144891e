"""Typed, validated configuration of the simulation (the `simulation:` section of a stemdl YAML).

Why a model and not a dict: every value that determines a sample is checked here, once, before
anything is simulated, and the error names the field and the allowed range. Units are in the
field names (`_a` Ångström, `_ev` electron-volt, `_mrad` milliradian, `_px` pixels).

Checks that need physics (the antialiasing limit λ/(3Δx), the number of valid detector pixels)
are done in `SimulationConfig._check_sampling`, so a config that cannot be simulated never leaves
this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from stemdl.configs.base import StrictModel
from stemdl.configs.units import ANTIALIAS_FRACTION, native_window_px, wavelength_a

PrototypeFamily = Literal[
    "rocksalt",
    "zincblende",
    "wurtzite",
    "perovskite",
    "fluorite",
    "rutile",
    "spinel",
    "bcc",
    "fcc",
    "hcp",
    "diamond",
]
ALL_FAMILIES: tuple[str, ...] = PrototypeFamily.__args__  # type: ignore[attr-defined]
MAX_TILT_MRAD = 50.0  # largest mistilt magnitude a config may ask for


class Range(StrictModel):
    """A closed interval [min, max] from which a per-sample value is drawn uniformly.

    Written in YAML as a number (fixed value) or as ``[min, max]``.
    """

    min: float
    max: float

    @model_validator(mode="before")
    @classmethod
    def _from_scalar_or_pair(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"min": float(value), "max": float(value)}
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError(f"a range is a number or [min, max], got {list(value)!r}")
            return {"min": value[0], "max": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.max < self.min:
            raise ValueError(f"range max ({self.max}) is below min ({self.min})")
        return self

    @property
    def is_fixed(self) -> bool:
        return self.min == self.max


@dataclass(frozen=True)
class SampleShape:
    """The sizes of one sample, derived from the `simulation:` section in one place
    (`SimulationConfig.sample_shape`): the store's schema, the loader's batches and the model
    are all sized from it, so a model and a store of different configs are told apart by
    comparing two of these before any work."""

    scan_gpts: tuple[int, int]  # (gy, gx): P = gy·gx patterns
    pattern_px: tuple[int, int]  # (H, W) of one stored pattern
    target_px: tuple[int, int]  # (H', W') of the target map
    out_channels: int  # C target maps (depth sections)

    @property
    def num_patterns(self) -> int:
        return self.scan_gpts[0] * self.scan_gpts[1]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(P, H, W): one sample's `cbed` as stored and as the loader yields it."""
        return (self.num_patterns, *self.pattern_px)

    @property
    def target_shape(self) -> tuple[int, int, int]:
        """(C, H', W'): one sample's `potential` as stored and as the model gives it."""
        return (self.out_channels, *self.target_px)


def _positive_range(value: Range, name: str, *, allow_zero: bool = False) -> Range:
    low_ok = value.min >= 0 if allow_zero else value.min > 0
    if not low_ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} (got [{value.min}, {value.max}])")
    return value


class StructureConfig(StrictModel):
    """Which crystals are simulated and how they are split into train/validation/test."""

    families: list[PrototypeFamily] = Field(
        default_factory=lambda: list(ALL_FAMILIES),
        description="Prototype families built with ase.spacegroup.crystal.",
    )
    materials_per_family: int = Field(4, ge=0, le=10_000)
    cif_dir: Path | None = Field(None, description="Every *.cif in this directory is added.")
    zone_axes: list[tuple[int, int, int]] | Literal["strongest"] = Field(
        default_factory=lambda: [(0, 0, 1)],
        description="Zone axes [uvw] drawn per sample, or 'strongest' (beam along the normal of "
        "the strongest low-index reflection, as in the paper).",
    )
    max_base_atoms: int = Field(
        256, ge=1, le=100_000, description="Oriented cells with more atoms are skipped."
    )
    max_orientation_strain: float = Field(
        0.02, ge=0, le=0.1, description="Largest strain allowed to make an oriented cell "
        "orthogonal; an axis that needs more falls back to another axis."
    )
    min_interatomic_distance_a: float = Field(0.7, gt=0, le=5)
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train, validation, test fractions of *materials*."
    )

    @field_validator("zone_axes")
    @classmethod
    def _nonzero_axes(cls, axes: object) -> object:
        if isinstance(axes, list):
            if not axes:
                raise ValueError("zone_axes is empty; give at least one [u, v, w] or 'strongest'")
            for axis in axes:
                if all(c == 0 for c in axis):
                    raise ValueError("zone axis [0, 0, 0] is not a direction")
        return axes

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, fractions: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
            raise ValueError(
                f"split_fractions must be three non-negative numbers summing to 1, got {fractions}"
            )
        if fractions[0] <= 0:
            raise ValueError("split_fractions: the train fraction must be > 0")
        return fractions

    @model_validator(mode="after")
    def _some_source(self) -> StructureConfig:
        if (not self.families or self.materials_per_family == 0) and self.cif_dir is None:
            raise ValueError("no materials: give families with materials_per_family > 0 or a cif_dir")
        return self


class ScanConfig(StrictModel):
    """The probe grid: P = gpts[0] * gpts[1] probe positions over a square of the cell.

    Why `shift_a`: a square always centred in its supercell always sits at the same place on
    that material's lattice, and a model trained only on such scans fails on a scan placed
    anywhere else (a measured scan, or a window of a larger one: benchmarks/RESULTS.md). A
    random shift per sample teaches it every placement.
    """

    gpts: tuple[Annotated[int, Field(ge=1, le=256)], Annotated[int, Field(ge=1, le=256)]] = (8, 8)
    fraction: float = Field(
        0.5, gt=0, le=1, description="Side of the scanned square as a fraction of cell_xy_a: "
        "every sample is scanned over a square of the same size (in Å)."
    )
    shift_a: float = Field(
        0.0, ge=0, le=1000, description="Each sample's square is moved from the centre of its "
        "supercell by a random (dx, dy), each uniform in ±shift_a (Å); 0 keeps it centred."
    )

    @property
    def num_positions(self) -> int:
        return self.gpts[0] * self.gpts[1]

    def side_a(self, cell_xy_a: float) -> float:
        """Side of the scanned square (Å)."""
        return self.fraction * cell_xy_a


class DetectorConfig(StrictModel):
    """The stored diffraction pattern: `pattern_px` pixels of the far field about zero frequency.

    `pixel_mrad` null: the central pixels as abTEM computed them (cropping, not
    interpolation), so a pixel is λ / (the sample's supercell extent) times `binning`, and it
    differs per material. `pixel_mrad` set: every pattern is integrated onto that angular
    pixel (area-weighted, as a detector of that pixel size records it;
    `simulate.detector_pixels`), so all samples share one pixel in mrad, as the scans of one
    microscope do. It must be at least the coarsest native pixel, 1e3·λ / cell_xy_a at the
    lowest energy (binning only, never interpolation).
    """

    pattern_px: tuple[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=2)]] = (64, 64)
    binning: int = Field(1, ge=1, le=16, description="Sum-pool factor applied after cropping.")
    pixel_mrad: float | None = Field(
        None, gt=0, le=100,
        description="One angular pixel (mrad) for every stored pattern, integrated from the "
        "native λ/extent pixels; null: the native pixels (one per material).")


class TargetConfig(StrictModel):
    """The regression target: projected potential of the scanned region."""

    target_px: tuple[Annotated[int, Field(ge=2)], Annotated[int, Field(ge=2)]] = (64, 64)
    depth_sections: int = Field(
        1, ge=1, le=64, description="C output channels: slices summed in C equal depth groups."
    )
    smoothing_px: float = Field(
        0.0, ge=0, le=10, description="Gaussian sigma (target pixels) applied after resampling."
    )


class PhononConfig(StrictModel):
    """Frozen-phonon configurations averaged per sample (the paper used one, undisplaced)."""

    num_configs: int = Field(1, ge=1, le=256)
    sigma_a: float = Field(0.0, ge=0, le=0.5, description="RMS displacement per axis (Å).")


class SimulationConfig(StrictModel):
    """Everything that determines a sample, apart from its index."""

    seed: int = Field(0, ge=0)
    structures: StructureConfig = Field(default_factory=StructureConfig)
    cell_xy_a: float = Field(20.0, gt=2, le=1000, description="Lateral extent of the cell (Å).")
    thickness_a: Range = Field(default_factory=lambda: Range(min=20.0, max=60.0))
    energy_ev: Range = Field(default_factory=lambda: Range(min=100e3, max=100e3))
    semiangle_mrad: Range | Literal["touching"] = Field(
        default_factory=lambda: Range(min=10.0, max=10.0),
        description="Probe convergence semi-angle, or 'touching' (disks of the strongest "
        "reflection just touch, as in the paper).",
    )
    defocus_a: Range = Field(default_factory=lambda: Range(min=0.0, max=0.0))
    c30_a: Range = Field(
        default_factory=lambda: Range(min=0.0, max=0.0), description="Spherical aberration C3 (Å)."
    )
    tilt_mrad: Range = Field(
        default_factory=lambda: Range(min=0.0, max=0.0),
        description="Specimen (or beam) mistilt, drawn per sample: its magnitude uniform in this "
        "range (mrad), its azimuth uniform in [0, 2π). Applied in the multislice, as abTEM's "
        "small-angle tilt of the Fresnel propagator, not as an image warp.",
    )
    sampling_a: float = Field(0.1, gt=0.005, le=1.0, description="Real-space grid spacing (Å).")
    slice_thickness_a: float | Literal["d_hkl"] = Field(2.0)
    parametrization: Literal["kirkland", "lobato", "peng"] = "kirkland"
    projection: Literal["infinite", "finite"] = "infinite"
    phonons: PhononConfig = Field(default_factory=PhononConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    target: TargetConfig = Field(default_factory=TargetConfig)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    reduced_grid_margin: float | None = Field(
        None,
        ge=1.0,
        le=8.0,
        description="Off (null) by default. A number m: run multislice on the smallest grid "
        "whose antialiased band reaches m times the largest stored angle (and the probe "
        "aperture), with the potential Fourier-cropped onto it; faster, approximate (error "
        "against the full grid in benchmarks/RESULTS.md). The target is always computed on "
        "the full grid.",
    )
    engine: Literal["stemdl", "abtem"] = Field(
        "stemdl",
        description="Multislice propagation: stemdl's own loop over abTEM's physics arrays "
        "(simulate/multislice.py), or abTEM's Probe.multislice (the reference); the same "
        "patterns to float32 rounding.",
    )

    @field_validator("thickness_a")
    @classmethod
    def _thickness(cls, value: Range) -> Range:
        return _positive_range(value, "thickness_a")

    @field_validator("energy_ev")
    @classmethod
    def _energy(cls, value: Range) -> Range:
        if value.min < 10e3 or value.max > 1.5e6:
            raise ValueError(
                f"energy_ev must lie in [10000, 1500000] eV, got [{value.min}, {value.max}]"
            )
        return value

    @field_validator("semiangle_mrad")
    @classmethod
    def _semiangle(cls, value: Range | str) -> Range | str:
        if isinstance(value, Range):
            return _positive_range(value, "semiangle_mrad")
        return value

    @field_validator("tilt_mrad")
    @classmethod
    def _tilt(cls, value: Range) -> Range:
        # abTEM's tilt is a small-angle shift of the propagator; 50 mrad is far beyond any
        # mistilt a microscopist leaves uncorrected (a few mrad), and still small-angle.
        if value.min < 0 or value.max > MAX_TILT_MRAD:
            raise ValueError(f"tilt_mrad is a tilt magnitude and must lie in [0, {MAX_TILT_MRAD}] "
                             f"mrad, got [{value.min}, {value.max}]")
        return value

    @field_validator("c30_a", "defocus_a")
    @classmethod
    def _finite(cls, value: Range) -> Range:
        if not (math.isfinite(value.min) and math.isfinite(value.max)):
            raise ValueError("must be finite")
        return value

    @field_validator("slice_thickness_a")
    @classmethod
    def _slice(cls, value: float | str) -> float | str:
        if isinstance(value, float | int) and not 0.1 <= value <= 50:
            raise ValueError(f"slice_thickness_a must lie in [0.1, 50] Å, got {value}")
        return value

    @property
    def gpts(self) -> int:
        """Grid points along x and y (the cell is square)."""
        return math.ceil(self.cell_xy_a / self.sampling_a)

    @property
    def num_patterns(self) -> int:
        return self.scan.num_positions

    @property
    def sample_shape(self) -> SampleShape:
        """The sizes of one sample (the one place they are derived from this section)."""
        return SampleShape(scan_gpts=tuple(self.scan.gpts),  # type: ignore[arg-type]
                           pattern_px=tuple(self.detector.pattern_px),  # type: ignore[arg-type]
                           target_px=tuple(self.target.target_px),  # type: ignore[arg-type]
                           out_channels=self.target.depth_sections)

    def stitching_problem(self) -> str | None:
        """Why `stemdl predict` could not stitch this model's windows into a map, or None.

        A window of scan.gpts probes maps onto target_px pixels; stitching overlapping windows
        needs a whole number of target pixels per probe on each axis. Training does not need
        it, so this is not a config error: `stemdl train` warns, and `predict` refuses such
        a model before it reads the scan (300kv once had 15 x 15 on 10 x 10 probes)."""
        (gy, gx), (ty, tx) = self.scan.gpts, self.target.target_px
        if ty % gy == 0 and tx % gx == 0:
            return None
        return (f"target.target_px {ty}x{tx} is not a whole number of pixels per probe of the "
                f"{gy}x{gx} scan grid (scan.gpts); stitching needs target_px a multiple of "
                f"scan.gpts on each axis, e.g. {gy * max(1, round(ty / gy))}x"
                f"{gx * max(1, round(tx / gx))}")

    def antialias_limit_mrad(self, energy_ev: float) -> float:
        """Largest scattering angle abTEM keeps at this energy: fraction · λ / (2Δx)."""
        return 1e3 * ANTIALIAS_FRACTION * wavelength_a(energy_ev) / (2 * self.cell_xy_a / self.gpts)

    @model_validator(mode="after")
    def _check_sampling(self) -> SimulationConfig:
        """Refuse configs whose sampling cannot represent the probe or the requested pattern."""
        # The probe and the detector must fit inside the antialiased region at every energy;
        # λ falls with energy, so the highest energy is the tightest case.
        limit = self.antialias_limit_mrad(self.energy_ev.max)
        if isinstance(self.semiangle_mrad, Range) and self.semiangle_mrad.max >= limit:
            raise ValueError(
                f"semiangle_mrad max {self.semiangle_mrad.max} mrad exceeds the antialiasing "
                f"limit λ/(3Δx) = {limit:.2f} mrad at {self.energy_ev.max:.0f} eV with "
                f"sampling_a={self.sampling_a}; allowed range (0, {limit:.2f}). Use a finer "
                f"sampling_a or a smaller semi-angle."
            )
        valid_px = math.floor(ANTIALIAS_FRACTION * self.gpts)
        if self.detector.pixel_mrad is not None:
            self._check_fixed_pixel(valid_px)
            return self._check_scan_and_target()
        for axis, px in enumerate(self.detector.pattern_px):
            needed = px * self.detector.binning
            if needed > valid_px:
                raise ValueError(
                    f"detector.pattern_px[{axis}]={px} with binning {self.detector.binning} needs "
                    f"{needed} valid diffraction pixels, but a grid of {self.gpts} points keeps "
                    f"only {valid_px} after antialiasing; allowed range [2, "
                    f"{valid_px // self.detector.binning}]. Increase cell_xy_a or decrease "
                    f"sampling_a."
                )
        return self._check_scan_and_target()

    def native_pixel_mrad(self, energy_ev: float) -> float:
        """The coarsest native pattern pixel at this energy: 1e3·λ / cell_xy_a (mrad); a
        supercell is at least cell_xy_a wide, so every sample's pixel is this or finer."""
        return 1e3 * wavelength_a(energy_ev) / self.cell_xy_a

    def _check_fixed_pixel(self, valid_px: int) -> None:
        """`detector.pixel_mrad`: binning only, and the native window it needs inside the band."""
        pixel = self.detector.pixel_mrad
        assert pixel is not None
        if self.detector.binning != 1:
            raise ValueError("detector.binning and detector.pixel_mrad both set the pattern "
                             "pixel; use one (binning: 1 with pixel_mrad)")
        coarsest = self.native_pixel_mrad(self.energy_ev.min)
        if pixel < coarsest * (1 - 1e-9):
            raise ValueError(
                f"detector.pixel_mrad {pixel} is finer than the coarsest native pattern pixel "
                f"1e3·λ/cell_xy_a = {coarsest:.4f} mrad at {self.energy_ev.min:.0f} eV; "
                f"rebinning onto it would interpolate; allowed range [{coarsest:.4f}, 100]. "
                "Use a coarser pixel_mrad or a larger cell_xy_a.")
        # The widest native window: the smallest supercell (cell_xy_a) at the highest energy.
        ratio = pixel / self.native_pixel_mrad(self.energy_ev.max)
        for axis, px in enumerate(self.detector.pattern_px):
            needed = native_window_px(px, ratio)
            if needed > valid_px:
                most = px
                while most > 2 and native_window_px(most, ratio) > valid_px:
                    most -= 1
                raise ValueError(
                    f"detector.pattern_px[{axis}]={px} at pixel_mrad {pixel} reaches "
                    f"±{px * pixel / 2:.1f} mrad and needs {needed} native diffraction pixels, "
                    f"but a grid of {self.gpts} points keeps only {valid_px} after "
                    f"antialiasing (±{self.antialias_limit_mrad(self.energy_ev.max):.1f} mrad "
                    f"at {self.energy_ev.max:.0f} eV); allowed pattern_px up to {most} at this "
                    "pixel. Decrease pattern_px or pixel_mrad, or sampling_a.")

    def _check_scan_and_target(self) -> SimulationConfig:
        side = self.scan.side_a(self.cell_xy_a)
        if side + 2 * self.scan.shift_a > self.cell_xy_a + 1e-9:
            # The supercell is at least cell_xy_a wide: a square shifted this far can leave it.
            raise ValueError(
                f"scan.shift_a={self.scan.shift_a} Å moves the {side:g} Å scanned square "
                f"(scan.fraction {self.scan.fraction} of cell_xy_a {self.cell_xy_a}) out of the "
                f"cell; allowed range [0, {(self.cell_xy_a - side) / 2:g}] Å"
            )
        scanned_px = self.scan.fraction * self.gpts
        for axis, px in enumerate(self.target.target_px):
            if px > 4 * scanned_px:
                raise ValueError(
                    f"target.target_px[{axis}]={px} is more than 4x the {scanned_px:.0f} grid "
                    f"points of the scanned region; allowed range [2, {int(4 * scanned_px)}]"
                )
        if self.reduced_grid_margin is not None and self.engine != "stemdl":
            raise ValueError(
                "reduced_grid_margin needs engine: stemdl (abTEM's multislice runs on the "
                "potential's grid); set engine: stemdl or reduced_grid_margin: null"
            )
        if self.phonons.num_configs > 1 and self.phonons.sigma_a == 0:
            raise ValueError(
                "phonons.num_configs > 1 with phonons.sigma_a = 0 repeats the same configuration; "
                "set sigma_a > 0 or num_configs = 1"
            )
        return self
