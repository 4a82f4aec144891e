"""`stemdl predict` on measured-like scans of real crystals, simulated with abTEM directly.

    python -m benchmarks.predict_measured [--run DIR] [--nuisance-model]
                                          [--out benchmarks/predict_measured.json]
    python -m benchmarks.predict_measured --checkpoint PT [--config FILE] [--crystals A,B]
                                          --out FILE.json

The scans are made here with plain abTEM calls (ASE crystals, `abtem.Potential`,
`abtem.Probe` with abTEM's own beam `tilt`, `CustomScan`, `diffraction_patterns`, and
`abtem.FrozenPhonons` where the checkpoint trained on frozen phonons), not through stemdl's
sample builder: that independence is the point. The nuisances are applied here with SciPy,
independently of `datasets/nuisances.py`: the source size as a Gaussian blur over the scan
positions (σ in Å / step, mirrored edges), the detector PSF as a Gaussian blur of each pattern
(σ in detector pixels), Poisson counts at the dose. The truth is the projected potential (V·Å)
of the scanned area on the model's target pixel (`simulate.target.resample_region`, the
training targets' definition). Every scan is given to the CLI as a .npy with calibration
options, and the stitched map is scored by Pearson r against the truth; for a checkpoint whose
map is in V·Å (`prediction.json` `map.units`) also by the relative L2 ‖pred − truth‖ / ‖truth‖
in V·Å (no mean removed, as `train.physical_metrics`), and with a thickness head the mean of
the windows' thickness against the simulated one (whole unit cells along [001]). Beside it, an
iCoM map of the same measured scan (`train.baselines`' centre of mass and Fourier integration,
the CoM field mirrored to twice the scan first so the non-periodic scan edges do not wrap),
upsampled to the truth's grid, scored by r: the physics a microscopist would use.

Crystals (real, at their experimental lattice parameters, [001]): SrTiO3 (perovskite), GaP,
InAs (zinc blende), NiO, LiF (rock salt), CsCl (B2, a structure type with no family in the
catalogue). Whether a composition was in the model's training split is reported per crystal
(`in_training`): only a composition absent from it is unseen, and the `mean_unseen` summary
leaves the others out (each preset's catalogue draws its own materials).

Geometry without `--checkpoint` (the figures of benchmarks/RESULTS.md up to 2026-12-04, kept
bit-identical): the tests' small reconstruction model (`--run DIR` holds or gets
`reconstruction.zarr` and `reconstruction-run/checkpoint.pt`), which trained on none of the
nuisances; 8 × 8 probes (9 windows of 4 × 4, stride 2) at 9 mrad, 100 keV, 20 Å, a supercell
of whole cells ≈ 26 Å wide (so a detector pixel that is not a whole fraction of the training
pixel: predict bins it onto the median training pixel and reports the ratio and the model's
pixel, `model_pixel_mrad`), 72 × 72 px:
  clean: noise-free; goal_1e5: tilt 2 mrad, source σ 0.4 Å, PSF σ 1 px, 1e5 e/Å² (the
  issue's goal case, at its edge); goal_1e4: the same at 1e4 e/Å².
Then for GaP and SrTiO3: thickness 10 and 30 Å (clean), and scan steps 0.8× and 1.2× the
trained one (clean, 11 × 11 and 8 × 8 probes, resampled by predict onto the trained step).

Geometry with `--checkpoint` (`derive_geometry`, from the config the checkpoint stores, or
`--config`): the middle of the trained energy and semi-angle ranges, the trained scan step,
2 × the model's probe grid per side (3 × 3 windows at predict's half-window stride), the
checkpoint's frozen phonons, and per crystal a supercell of whole cells at least the scanned
square + 2 × 3 Å whose detector pixel (λ / supercell) is 1.1× or more finer than the median
training pixel predict bins onto and at least 0.1 away from a whole fraction of it (so predict
rebins by a fractional ratio, as a real detector needs), with a detector just larger than the
model's pattern at that ratio. Cases per crystal: the four above (clean, goal_1e5, goal_1e4)
plus inside_1e5 (tilt 1 mrad, source σ 0.2 Å, PSF σ 0.5 px, 1e5 e/Å²) and the goal
case's four nuisances one at a time (only_tilt_2, only_source_0.4, only_psf_1,
only_dose_1e5), at 40 Å where the
trained thickness range holds it (else its middle), and clean scans at the range's other
points (min, middle, max); no scan-step cases (predict's resampling is measured on the tests'
model above).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

ENERGY_EV, SEMIANGLE_MRAD, DETECTOR_PX, PROBES = 100e3, 9.0, 72, 8
CRYSTALS = {  # formula: (ASE structure, lattice parameter Å); [001] in every case
    "SrTiO3": ("perovskite", 3.905), "GaP": ("zincblende", 5.451),
    "InAs": ("zincblende", 6.058), "NiO": ("rocksalt", 4.177),
    "LiF": ("rocksalt", 4.026), "CsCl": ("cesiumchloride", 4.123),
}
MARGIN_A = 3.0  # derived geometry: vacuum-free crystal beyond each edge of the scanned square
MIN_RATIO, MIN_FRACTION = 1.1, 0.1  # detector pixel vs the model's: finer, and not whole
PATTERN_MARGIN_PX = 6  # derived detector: this many pixels beyond the model's pattern


@dataclass(frozen=True)
class MeasuredGeometry:
    """How the measured-like scans are simulated (module docstring): one place for both modes.

    `model_pixel_mrad` None is the fixed default geometry (supercell ≈ `supercell_a`, a
    detector of `detector_px`); a number (the pixel predict bins every scan onto at this
    energy, `TrainedRanges.typical_angular_sampling_mrad`: the median training pixel, or the
    config's one `detector.pixel_mrad` where it has one) makes `supercell_repetitions` and
    `detector_pixels` choose per crystal a detector pixel that is a fractional part of it."""

    source: str
    energy_ev: float
    semiangle_mrad: float
    step_a: float
    probes: int  # per side of the scan at the trained step
    window: int  # the model's probe grid per side
    target_px: int  # the model's target pixels per side per window
    thickness_a: float  # of the nuisance cases
    thickness_cases_a: tuple[float, ...]  # clean scans at these thicknesses too
    thickness_crystals: tuple[str, ...] | None  # which crystals get them (None: all)
    step_factors: tuple[float, ...]
    nuisance_cases: tuple[str, ...]
    detector_px: int | None = DETECTOR_PX  # None: per crystal (`detector_pixels`)
    model_pattern_px: int | None = None
    model_pixel_mrad: float | None = None
    sampling_a: float | None = None  # the config's grid spacing (the detector must fit its band)
    supercell_a: float = 26.0  # default: round(26 / a) cells
    margin_a: float = MARGIN_A
    phonon_configs: int = 1
    phonon_sigma_a: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def side_a(self) -> float:
        return self.probes * self.step_a

    def supercell_repetitions(self, lattice_a: float) -> int:
        """Cells per side of the simulated supercell of a crystal of cell `lattice_a`."""
        if self.model_pixel_mrad is None:
            return max(1, round(self.supercell_a / lattice_a))
        reps = max(1, math.ceil((self.side_a + 2 * self.margin_a) / lattice_a - 1e-9))
        while not fractional_ratio(self.pixel_ratio(reps * lattice_a)):
            reps += 1
        return reps

    def pixel_ratio(self, extent_a: float) -> float:
        """Model pixel / detector pixel (1e3·λ / extent mrad) for a supercell `extent_a` wide."""
        from stemdl.configs.units import wavelength_a

        if self.model_pixel_mrad is None:
            raise ValueError("the default geometry has no model pixel of its own")
        return self.model_pixel_mrad * extent_a / (1e3 * wavelength_a(self.energy_ev))

    def detector_pixels(self, extent_a: float) -> int:
        """Detector pixels per side (even: zero frequency at H // 2, as predict and iCoM read
        it): the fixed count, or the model's pattern at this ratio and a margin, at most the
        band abTEM keeps (2/3 of the grid; beyond it predict pads with zeros and says so)."""
        if self.detector_px is not None:
            return self.detector_px
        assert self.model_pattern_px is not None and self.sampling_a is not None
        n = math.ceil(self.model_pattern_px * self.pixel_ratio(extent_a)) + PATTERN_MARGIN_PX
        band = antialiased_px(math.ceil(extent_a / self.sampling_a))
        return min(n + n % 2, band - band % 2)


def antialiased_px(gpts: int) -> int:
    """Pixels per side of the far field abTEM keeps on a grid of `gpts` points (its
    antialiasing aperture, `configs.units.ANTIALIAS_FRACTION` of the grid)."""
    from stemdl.configs.units import ANTIALIAS_FRACTION

    return math.floor(ANTIALIAS_FRACTION * gpts)


def fractional_ratio(ratio: float) -> bool:
    """Finer than the model's pixel by `MIN_RATIO` and at least `MIN_FRACTION` from a whole
    factor (predict rebins by a whole factor within 2 % of one; not that)."""
    return ratio >= MIN_RATIO and abs(ratio - round(ratio)) >= MIN_FRACTION


DEFAULT_GEOMETRY = MeasuredGeometry(
    source="default: the tests' reconstruction model's fixed 100 kV geometry",
    energy_ev=ENERGY_EV, semiangle_mrad=SEMIANGLE_MRAD, step_a=1.5, probes=PROBES, window=4,
    target_px=16, thickness_a=20.0, thickness_cases_a=(10.0, 30.0),
    thickness_crystals=("SrTiO3", "GaP"), step_factors=(0.8, 1.2),
    nuisance_cases=("clean", "goal_1e5", "goal_1e4"))

NUISANCE_CASES: dict[str, dict[str, Any]] = {  # case: tilt, source, PSF, dose
    "clean": {},
    "goal_1e5": dict(tilt_mrad=2.0, source_sigma_a=0.4, psf_px=1.0, dose=1e5),
    "goal_1e4": dict(tilt_mrad=2.0, source_sigma_a=0.4, psf_px=1.0, dose=1e4),
    "inside_1e5": dict(tilt_mrad=1.0, source_sigma_a=0.2, psf_px=0.5, dose=1e5),
    # the goal case's nuisances one at a time (derived geometry): which one costs what
    "only_tilt_2": dict(tilt_mrad=2.0),
    "only_source_0.4": dict(source_sigma_a=0.4),
    "only_psf_1": dict(psf_px=1.0),
    "only_dose_1e5": dict(dose=1e5),
}


def derive_geometry(config) -> MeasuredGeometry:  # type: ignore[no-untyped-def]
    """The scan geometry for a checkpoint trained with `config` (module docstring): what a
    microscopist would pick to use that model, inside its trained ranges."""
    from stemdl.predict.trained_ranges import trained_ranges

    sim = config.simulation
    if isinstance(sim.semiangle_mrad, str):
        raise ValueError("a config with semiangle_mrad 'touching' has no semi-angle range to "
                         "take the middle of")
    rows, cols = sim.scan.gpts
    if rows != cols or sim.target.target_px[0] != sim.target.target_px[1]:
        raise ValueError(f"square probe grids and targets only, got {sim.scan.gpts} and "
                         f"{sim.target.target_px}")
    ranges = trained_ranges(config)
    low, high = sim.thickness_a.min, sim.thickness_a.max
    middle = (low + high) / 2
    main = 40.0 if low <= 40.0 <= high else middle
    others = tuple(sorted({low, middle, high} - {main}))
    phonons = sim.phonons
    energy = (sim.energy_ev.min + sim.energy_ev.max) / 2
    model_pixel = ranges.typical_angular_sampling_mrad(energy)
    if model_pixel is None:
        raise ValueError("the checkpoint's trained ranges name no pixel predict bins onto")
    return MeasuredGeometry(
        source=f"derived from config {config.name!r}",
        energy_ev=energy,
        semiangle_mrad=(sim.semiangle_mrad.min + sim.semiangle_mrad.max) / 2,
        step_a=ranges.scan_step_a[0], probes=2 * rows, window=rows,
        target_px=sim.target.target_px[0], thickness_a=main, thickness_cases_a=others,
        thickness_crystals=None, step_factors=(),
        nuisance_cases=("clean", "goal_1e5", "goal_1e4", "inside_1e5", "only_tilt_2",
                        "only_source_0.4", "only_psf_1", "only_dose_1e5"),
        detector_px=None, model_pattern_px=sim.detector.pattern_px[0],
        model_pixel_mrad=model_pixel, sampling_a=sim.sampling_a,
        phonon_configs=phonons.num_configs, phonon_sigma_a=phonons.sigma_a,
        notes={"trained_energy_ev": [sim.energy_ev.min, sim.energy_ev.max],
               "trained_semiangle_mrad": [sim.semiangle_mrad.min, sim.semiangle_mrad.max],
               "trained_thickness_a": [low, high],
               "trained_tilt_mrad": [sim.tilt_mrad.min, sim.tilt_mrad.max],
               "loader_nuisances": config.loader.nuisances.model_dump(),
               "model_pixel_mrad": model_pixel})


def crystal(formula: str):  # type: ignore[no-untyped-def]
    from ase.build import bulk
    from ase.spacegroup import crystal as spacegroup_crystal

    kind, a = CRYSTALS[formula]
    if kind == "perovskite":
        return spacegroup_crystal(["Sr", "Ti", "O"], [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                                  spacegroup=221, cellpar=[a, a, a, 90, 90, 90])
    elements = {"GaP": "GaP", "InAs": "InAs", "NiO": "NiO", "LiF": "LiF", "CsCl": "CsCl"}[formula]
    return bulk(elements, kind, a=a, cubic=True)


@dataclass(frozen=True)
class Scan:
    """One simulated scan: patterns (fraction of the beam), its truth and its calibration."""

    patterns: np.ndarray  # (probes, probes, ky, kx) float32
    truth: np.ndarray  # (H', W') V·Å on the model's target pixel
    pixel_mrad: float  # detector pixel
    thickness_a: float  # simulated: whole cells along [001]
    extent_a: float  # supercell side
    detector_px: int


def simulate(formula: str, sim, geometry: MeasuredGeometry, *, step_a: float,  # type: ignore[no-untyped-def]
             probes: int, thickness_a: float, tilt_mrad: float, truth_px: int,
             target_probes: int | None = None, target_step_a: float | None = None) -> Scan:
    """The scan of `probes` × `probes` centred in the supercell, and the truth of the area the
    model maps (target_probes at target_step_a, first probe shared) on `truth_px` pixels."""
    import abtem

    from stemdl.configs.units import wavelength_a
    from stemdl.simulate.target import resample_region

    unit = crystal(formula)
    a = unit.cell.lengths()[0]
    reps = geometry.supercell_repetitions(a)
    cells_z = max(1, round(thickness_a / unit.cell.lengths()[2]))
    atoms = unit * (reps, reps, cells_z)
    extent = float(atoms.cell.lengths()[0])
    gpts = math.ceil(extent / sim.sampling_a)
    specimen = atoms
    if geometry.phonon_configs > 1 or geometry.phonon_sigma_a > 0:
        # lateral displacements only: an atom pushed through the entrance or exit face would
        # leave abTEM's slices (stemdl clamps it instead; this stays plain abTEM)
        specimen = abtem.FrozenPhonons(atoms, num_configs=geometry.phonon_configs,
                                       sigmas=geometry.phonon_sigma_a, directions="xy", seed=7)
    potential = abtem.Potential(specimen, gpts=gpts, slice_thickness=sim.slice_thickness_a,
                                parametrization=sim.parametrization,
                                projection=sim.projection).build(lazy=False)
    side = probes * step_a
    x0 = (extent - side) / 2
    xs = x0 + (np.arange(probes) + 0.5) * step_a
    grid_y, grid_x = np.meshgrid(xs, xs, indexing="ij")
    positions = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    probe = abtem.Probe(energy=geometry.energy_ev, semiangle_cutoff=geometry.semiangle_mrad,
                        defocus=0.0, tilt=(tilt_mrad / math.sqrt(2), tilt_mrad / math.sqrt(2)))
    waves = probe.multislice(potential, scan=abtem.CustomScan(positions))
    patterns = np.asarray(waves.diffraction_patterns(max_angle=None).compute().array)
    slices = np.asarray(potential.array, dtype=np.float64)
    if slices.ndim == 4:  # frozen phonons: the incoherent mean, as the training target's
        patterns = patterns.mean(axis=0, dtype=np.float64).astype(np.float32)
        slices = slices.mean(axis=0)
    n = patterns.shape[-1]
    detector_px = geometry.detector_pixels(extent)
    valid = antialiased_px(n)
    if detector_px > valid:
        raise ValueError(f"{formula}: a {detector_px}-px detector exceeds the {valid} px abTEM "
                         f"keeps at sampling {sim.sampling_a} Å")
    half = detector_px // 2
    window = patterns[:, n // 2 - half: n // 2 + half, n // 2 - half: n // 2 + half]
    cbed = np.swapaxes(window, -1, -2).reshape(probes, probes, detector_px, detector_px)
    t_probes = target_probes or probes
    t_step = target_step_a or step_a
    tx0 = x0 + step_a / 2 - t_step / 2
    region = (tx0, tx0, tx0 + t_probes * t_step, tx0 + t_probes * t_step)
    projected = slices.sum(axis=0)
    sampling = (extent / gpts, extent / gpts)
    truth = resample_region(np.swapaxes(projected, -1, -2)[None], sampling, region,
                            (truth_px,) * 2, sim.target.smoothing_px)[0]
    pixel_mrad = 1e3 * wavelength_a(geometry.energy_ev) / extent
    return Scan(cbed.astype(np.float32), truth, pixel_mrad,
                cells_z * float(unit.cell.lengths()[2]), extent, detector_px)


def measured(patterns: np.ndarray, step_a: float, *, source_sigma_a: float, psf_px: float,
             dose: float | None, seed: int) -> np.ndarray:
    """The nuisances, with SciPy (module docstring)."""
    from scipy.ndimage import gaussian_filter

    x = patterns.astype(np.float64)
    if source_sigma_a:
        x = gaussian_filter(x, (source_sigma_a / step_a,) * 2 + (0, 0), mode="reflect")
    if psf_px:
        x = gaussian_filter(x, (0, 0, psf_px, psf_px), mode="reflect")
    if dose is None:
        return x.astype(np.float32)
    electrons = dose * step_a ** 2
    return np.random.default_rng(seed).poisson(np.clip(x, 0, None) * electrons).astype(np.float32)


def icom_map(data: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """iCoM of a (gy, gx, H, W) scan (zero frequency at H // 2, W // 2) upsampled to `shape`.

    `train.baselines.centre_of_mass` and `fourier_integrate`, on the CoM field, its mean (the
    tilt) removed, mirrored to (2gy, 2gx) (CoM_y odd and CoM_x even under a flip of y, the reverse under a flip of x:
    the gradient of φ mirrored evenly), so the integration's periodicity does not join
    opposite edges of a scan that is not a whole number of cells."""
    import torch
    import torch.nn.functional as F

    from stemdl.train.baselines import centre_of_mass, fourier_integrate

    gy, gx, h, w = data.shape
    com = centre_of_mass(torch.from_numpy(data.reshape(1, gy * gx, h, w)), (gy, gx))
    # the mean CoM is the beam's tilt (or descan), a constant gradient no map has: removed,
    # as a DPC user removes it, before the mirroring would turn it into a ramp
    cy, cx = com[:, 0] - com[:, 0].mean(), com[:, 1] - com[:, 1].mean()
    cy = torch.cat([torch.cat([cy, -cy.flip(-2)], -2), torch.cat([cy.flip(-1), -cy.flip(-2, -1)],
                                                                  -2)], -1)
    cx = torch.cat([torch.cat([cx, cx.flip(-2)], -2), torch.cat([-cx.flip(-1), -cx.flip(-2, -1)],
                                                                 -2)], -1)
    phi = fourier_integrate(torch.stack([cy, cx], dim=1))[:, :gy, :gx]
    up = F.interpolate(phi[:, None], size=tuple(shape), mode="bicubic", align_corners=False)
    return up[0, 0].numpy()


def predict(checkpoint: Path, data: np.ndarray, pixel_mrad: float, step_a: float,
            work: Path, geometry: MeasuredGeometry = DEFAULT_GEOMETRY
            ) -> tuple[np.ndarray | None, dict]:
    """The stitched map and prediction.json, or (None, {"refusal": message}) where predict
    refused the scan."""
    import zarr

    from stemdl import pipeline

    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "scan.npy", data)
    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        code = pipeline.main(["predict", str(checkpoint), str(work / "scan.npy"), "--out",
                              str(work / "pred"), "--energy-kev", str(geometry.energy_ev / 1e3),
                              "--semiangle-mrad", str(geometry.semiangle_mrad),
                              "--angular-pixel-mrad", f"{pixel_mrad:.8f}", "--scan-step-a",
                              f"{step_a:.6f}", "--no-progress"])
    if code != 0:
        lines = [line for line in errors.getvalue().splitlines() if "error:" in line]
        return None, {"refusal": lines[-1] if lines else f"exit {code}"}
    record = json.loads((work / "pred" / "prediction.json").read_text())
    return np.asarray(zarr.open_array(str(work / "pred" / "potential.zarr"), mode="r")[...])[0], record


# The ranges the nuisance-trained model draws from (stored pixels are ~3 detector pixels of
# these scans, so PSF σ 1 detector px is ~0.33 stored px): the goal case sits inside them.
NUISANCES = {"dose_e_per_a2": [1e4, 1e6], "psf": "gaussian", "psf_width_px": [0.0, 0.6],
             "source_sigma_a": [0.0, 0.5]}


def _nuisance_model(config, run: Path) -> Path:  # type: ignore[no-untyped-def]
    """The default model's recipe with `loader.nuisances: NUISANCES`, on its store."""
    from stemdl.configs import config_from_dict
    from stemdl.train.loop import train_main

    out = run / "nuisance-run"
    if (out / "checkpoint.pt").exists():
        return out / "checkpoint.pt"
    data = config.to_dict()
    data["loader"]["nuisances"] = NUISANCES
    data["name"] = "beat-baselines-nuisances"
    result = train_main(config_from_dict(data, source="predict_measured"),
                        str(run / "reconstruction.zarr"), out)
    return Path(result.checkpoint)


def checkpoint_config(checkpoint: Path, config_file: Path | None):  # type: ignore[no-untyped-def]
    """The config a checkpoint stores (what predict reads), or `config_file` where given."""
    from stemdl.configs import config_from_dict, load_config
    from stemdl.train.checkpoint import load_checkpoint

    if config_file is not None:
        return load_config(str(config_file))
    return config_from_dict(load_checkpoint(checkpoint)["config"],
                            source=f"{checkpoint} (stored config)")


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.mean(kept)), 4) if kept else None


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Mean per case over the unseen crystals (n of them), one column per score."""
    names = {"stitched_r": "stitched r", "stitched_r_nuisance_trained": "r, nuisance-trained",
             "icom_r": "iCoM r", "rel_l2_v_a": "rel. L2 (V·Å)",
             "thickness_abs_error_pct": "thickness error % (abs.)"}
    header = "| case | thickness Å | n | " + " | ".join(names.get(c, c) for c in columns) + " |"
    lines = [header, "|" + "---|" * (3 + len(columns))]
    keys = dict.fromkeys((r["case"], r["thickness_a"]) for r in rows)
    for case, thickness in keys:
        chosen = [r for r in rows if r["case"] == case and r["thickness_a"] == thickness
                  and not r["in_training"]]
        cells = []
        for column in columns:
            value = _mean([r.get(column) for r in chosen])
            cells.append("—" if value is None else f"{value:.3f}")
        lines.append(f"| {case} | {thickness:g} | {len(chosen)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("benchmark-predict"))
    parser.add_argument("--config", type=Path, help="the checkpoint's config (YAML); default: "
                        "the config the checkpoint stores")
    parser.add_argument("--checkpoint", type=Path, help="score this checkpoint on scans of "
                        "the geometry derived from its config (module docstring)")
    parser.add_argument("--crystals", help="comma-separated subset of " + ", ".join(CRYSTALS))
    parser.add_argument("--nuisance-model", action="store_true",
                        help="also train the default model with loader.nuisances (NUISANCES) "
                        "on the same store and score it beside")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "predict_measured.json")
    args = parser.parse_args()

    from stemdl.simulate.catalogue import build_catalogue
    from stemdl.train.metrics import pearson_r

    if args.checkpoint:
        if args.nuisance_model:
            parser.error("--nuisance-model trains the default model's recipe; not with "
                         "--checkpoint")
        checkpoint = args.checkpoint
        config = checkpoint_config(checkpoint, args.config)
        geometry = derive_geometry(config)
    else:
        from stemdl.testing.reconstruction_model import reconstruction_checkpoint

        args.run.mkdir(parents=True, exist_ok=True)
        config, checkpoint = reconstruction_checkpoint(args.run)
        geometry = DEFAULT_GEOMETRY
    crystals = list(CRYSTALS) if not args.crystals else args.crystals.split(",")
    checkpoints = {"stitched_r": checkpoint}
    if args.nuisance_model:
        checkpoints["stitched_r_nuisance_trained"] = _nuisance_model(config, args.run)
    sim = config.simulation
    trained_step = sim.scan.side_a(sim.cell_xy_a) / sim.scan.gpts[0]
    if not math.isclose(trained_step, geometry.step_a, rel_tol=1e-9):
        raise SystemExit(f"geometry step {geometry.step_a} Å is not the trained {trained_step} Å")
    catalogue = build_catalogue(sim)
    training = {m.formula for m in catalogue.materials_in("train")}
    print(json.dumps({"geometry": asdict(geometry)}), flush=True)

    rows: list[dict] = []

    def case(formula: str, name: str, *, step_factor: float = 1.0, thickness_a: float,
             tilt_mrad: float = 0.0, source_sigma_a: float = 0.0, psf_px: float = 0.0,
             dose: float | None = None, sims: dict) -> None:
        started = time.perf_counter()
        step = trained_step * step_factor
        probes = {1.0: geometry.probes, 0.8: 11, 1.2: geometry.probes}[step_factor]
        target_probes = (math.floor((probes - 1) * step_factor + 1e-9) + 1
                         if step_factor != 1.0 else probes)
        truth_px = round(target_probes * geometry.target_px / geometry.window)
        key = (step_factor, thickness_a, tilt_mrad)
        if key not in sims:
            sims[key] = simulate(formula, sim, geometry, step_a=step, probes=probes,
                                 thickness_a=thickness_a, tilt_mrad=tilt_mrad, truth_px=truth_px,
                                 target_probes=target_probes, target_step_a=trained_step)
        scan: Scan = sims[key]
        data = measured(scan.patterns, step, source_sigma_a=source_sigma_a, psf_px=psf_px,
                        dose=dose, seed=len(rows))
        scores: dict[str, Any] = {}
        physical: dict[str, Any] = {}
        for column, weights in checkpoints.items():
            stitched, record = predict(weights, data, scan.pixel_mrad, step,
                                       args.run / "measured" / column / formula / name
                                       / f"{thickness_a:g}A", geometry)
            scores[column] = (None if stitched is None
                              else round(pearson_r(stitched, scan.truth), 4))
            if column == "stitched_r" and stitched is not None and \
                    record.get("map", {}).get("units") == "V·Å":
                difference = np.linalg.norm(stitched - scan.truth)
                physical["rel_l2_v_a"] = round(float(difference / np.linalg.norm(scan.truth)), 4)
                physical["truth_mean_v_a"] = round(float(scan.truth.mean()), 3)
                physical["prediction_mean_v_a"] = round(float(stitched.mean()), 3)
            thickness = record.get("thickness") or {}
            if column == "stitched_r" and thickness.get("units") == "Å":
                error = thickness["mean_a"] - scan.thickness_a
                physical.update({"thickness_predicted_a": round(thickness["mean_a"], 2),
                                 "thickness_windows_std_a": round(thickness["std_a"], 2),
                                 "thickness_error_a": round(error, 2),
                                 "thickness_abs_error_pct": round(
                                     100 * abs(error) / scan.thickness_a, 2)})
        icom = (round(pearson_r(icom_map(data, scan.truth.shape), scan.truth), 4)
                if step_factor == 1.0 else None)
        row = {"crystal": formula, "case": name, "in_training": formula in training,
               "step_a": round(step, 4), "thickness_a": thickness_a, "tilt_mrad": tilt_mrad,
               "source_sigma_a": source_sigma_a, "psf_px": psf_px, "dose_e_per_a2": dose,
               "refused": stitched is None,
               "detector_ratio": [round(r, 4) for r in record.get("resampling", {}).get(
                   "ratio", [])],
               "exact_rebinning": record.get("resampling", {}).get("exact"),
               "model_pixel_mrad": [round(p, 4) for p in record.get("resampling", {}).get(
                   "model_angular_sampling_mrad", [])],
               **scores,
               "seconds": round(time.perf_counter() - started, 1),
               "icom_r": icom, "simulated_thickness_a": round(scan.thickness_a, 3),
               "supercell_a": round(scan.extent_a, 3), "detector_px": scan.detector_px,
               "detector_pixel_mrad": round(scan.pixel_mrad, 5), **physical}
        if stitched is None:
            row["refusal"] = record.get("refusal")
        print(json.dumps(row), flush=True)
        rows.append(row)

    def refused_at_once() -> bool:
        # the first (clean) scan at the derived geometry refused: every case shares that
        # geometry, so the refusal is the checkpoint's (its message says why); simulating on
        # would be waste
        return geometry.model_pixel_mrad is not None and bool(rows) and rows[0]["refused"]

    main_t = geometry.thickness_a
    for formula in crystals:
        sims: dict = {}
        for name in geometry.nuisance_cases:
            case(formula, name, thickness_a=main_t, sims=sims, **NUISANCE_CASES[name])
            if refused_at_once():
                break
        if refused_at_once():
            print(f"the first scan was refused ({rows[0]['refusal']}); stopping", flush=True)
            break
        if geometry.thickness_crystals is None or formula in geometry.thickness_crystals:
            for thickness in geometry.thickness_cases_a:
                case(formula, f"thickness_{thickness:g}", thickness_a=thickness, sims=sims)
        if formula in ("GaP", "SrTiO3"):
            for factor in geometry.step_factors:
                case(formula, f"step_{factor:g}", step_factor=factor, thickness_a=main_t,
                     sims=sims)

    def mean(name: str, column: str, unseen: bool = False) -> float | None:
        return _mean([r.get(column) for r in rows if r["case"] == name
                      and not (unseen and r["in_training"])])

    scored = [*checkpoints, "icom_r"]
    if any("rel_l2_v_a" in r for r in rows):
        scored += ["rel_l2_v_a"]
    if any("thickness_abs_error_pct" in r for r in rows):
        scored += ["thickness_abs_error_pct"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    summary = {"how": "python -m benchmarks.predict_measured (see its docstring)",
               "checkpoint": str(checkpoint), "trained_step_a": trained_step,
               "config_name": config.name, "geometry": asdict(geometry),
               "rows": rows,
               "nuisance_training": NUISANCES if args.nuisance_model else None,
               "mean": {column: {name: mean(name, column) for name in cases}
                        for column in checkpoints},
               "mean_unseen": {column: {name: mean(name, column, True) for name in cases}
                               for column in scored}}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["mean"]))
    print(markdown_table(rows, scored))
    return 0


if __name__ == "__main__":
    sys.exit(main())
