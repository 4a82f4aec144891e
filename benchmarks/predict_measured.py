"""`stemdl predict` on measured-like scans of real crystals, simulated with abTEM directly.

    python -m benchmarks.predict_measured [--run DIR] [--config FILE --checkpoint PT]
                                          [--out benchmarks/predict_measured.json]

The scans are made here with plain abTEM calls (ASE crystals, `abtem.Potential`,
`abtem.Probe` with abTEM's own beam `tilt`, `CustomScan`, `diffraction_patterns`), not
through stemdl's sample builder; the nuisances are applied here with SciPy, independently of
`datasets/nuisances.py`: the source size as a Gaussian blur over the scan positions (σ in Å /
step, mirrored edges), the detector PSF as a Gaussian blur of each pattern (σ in detector
pixels), Poisson counts at the dose. The truth is the projected potential of the scanned
area on the model's target pixel (`simulate.target.resample_region`, the training targets'
definition). Every scan is given to the CLI as a .npy with calibration options, and the
stitched map is scored by Pearson r against the truth.

Crystals (real, at their experimental lattice parameters, [001]): SrTiO3 (perovskite), GaP,
InAs (zinc blende), NiO, LiF (rock salt), CsCl (B2, a structure type with no family in the
catalogue). Whether a composition was in the model's training split is reported per crystal
(`in_training`): only a composition absent from it is unseen.

Cases per crystal, 8 × 8 probes (9 windows of 4 × 4, stride 2) at 9 mrad, 100 keV, 20 Å, a
supercell of whole cells ≈ 26 Å wide (so a detector pixel that is not a whole fraction of the
training pixel: predict bins it onto the median training pixel and reports the ratio and the
model's pixel, `model_pixel_mrad`), 72 × 72 px:
  clean: noise-free; goal_1e5: tilt 2 mrad, source σ 0.4 Å, PSF σ 1 px, 1e5 e/Å² (the
  issue's goal case, at its edge); goal_1e4: the same at 1e4 e/Å².
Then for GaP and SrTiO3: thickness 10 and 30 Å (clean), and scan steps 0.8× and 1.2× the
trained one (clean, 11 × 11 and 8 × 8 probes, resampled by predict onto the trained step).
The default model is the small reconstruction model of the tests (`--run DIR` holds or gets
`reconstruction.zarr` and `reconstruction-run/checkpoint.pt`), which trained on none of the
nuisances: it shows what they cost a model that never saw them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

ENERGY_EV, SEMIANGLE_MRAD, DETECTOR_PX, PROBES = 100e3, 9.0, 72, 8
CRYSTALS = {  # formula: (ASE structure, lattice parameter Å); [001] in every case
    "SrTiO3": ("perovskite", 3.905), "GaP": ("zincblende", 5.451),
    "InAs": ("zincblende", 6.058), "NiO": ("rocksalt", 4.177),
    "LiF": ("rocksalt", 4.026), "CsCl": ("cesiumchloride", 4.123),
}


def crystal(formula: str):  # type: ignore[no-untyped-def]
    from ase.build import bulk
    from ase.spacegroup import crystal as spacegroup_crystal

    kind, a = CRYSTALS[formula]
    if kind == "perovskite":
        return spacegroup_crystal(["Sr", "Ti", "O"], [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
                                  spacegroup=221, cellpar=[a, a, a, 90, 90, 90])
    elements = {"GaP": "GaP", "InAs": "InAs", "NiO": "NiO", "LiF": "LiF", "CsCl": "CsCl"}[formula]
    return bulk(elements, kind, a=a, cubic=True)


def simulate(formula: str, sim, *, step_a: float, probes: int, thickness_a: float,  # type: ignore[no-untyped-def]
             tilt_mrad: float, target_px_per_probe: int, corner_shift_a: float = 0.0,
             target_probes: int | None = None, target_step_a: float | None = None):
    """(probes, probes, ky, kx) patterns (fraction of the beam), the truth of the area the
    model maps (target_probes at target_step_a, first probe shared), angular pixel (mrad)."""
    import abtem

    from stemdl.configs.units import wavelength_a
    from stemdl.simulate.target import resample_region

    unit = crystal(formula)
    a = unit.cell.lengths()[0]
    reps = max(1, round(26.0 / a))
    atoms = unit * (reps, reps, max(1, round(thickness_a / unit.cell.lengths()[2])))
    extent = float(atoms.cell.lengths()[0])
    gpts = math.ceil(extent / sim.sampling_a)
    potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=sim.slice_thickness_a,
                                parametrization=sim.parametrization,
                                projection=sim.projection).build(lazy=False)
    side = probes * step_a
    x0 = (extent - side) / 2 + corner_shift_a
    xs = x0 + (np.arange(probes) + 0.5) * step_a
    grid_y, grid_x = np.meshgrid(xs, xs, indexing="ij")
    positions = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    probe = abtem.Probe(energy=ENERGY_EV, semiangle_cutoff=SEMIANGLE_MRAD, defocus=0.0,
                        tilt=(tilt_mrad / math.sqrt(2), tilt_mrad / math.sqrt(2)))
    waves = probe.multislice(potential, scan=abtem.CustomScan(positions))
    patterns = np.asarray(waves.diffraction_patterns(max_angle=None).compute().array)
    n = patterns.shape[-1]
    half = DETECTOR_PX // 2
    window = patterns[:, n // 2 - half: n // 2 + half, n // 2 - half: n // 2 + half]
    cbed = np.swapaxes(window, -1, -2).reshape(probes, probes, DETECTOR_PX, DETECTOR_PX)
    t_probes = target_probes or probes
    t_step = target_step_a or step_a
    tx0 = x0 + step_a / 2 - t_step / 2
    region = (tx0, tx0, tx0 + t_probes * t_step, tx0 + t_probes * t_step)
    projected = np.asarray(potential.array, dtype=np.float64).sum(axis=0)
    sampling = (extent / gpts, extent / gpts)
    truth = resample_region(np.swapaxes(projected, -1, -2)[None], sampling, region,
                            (t_probes * target_px_per_probe,) * 2, sim.target.smoothing_px)[0]
    pixel_mrad = 1e3 * wavelength_a(ENERGY_EV) / extent
    return cbed.astype(np.float32), truth, pixel_mrad


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


def predict(checkpoint: Path, data: np.ndarray, pixel_mrad: float, step_a: float,
            work: Path) -> tuple[np.ndarray | None, dict]:
    """The stitched map and prediction.json, or (None, {}) where predict refused the scan."""
    import zarr

    from stemdl import pipeline

    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "scan.npy", data)
    with contextlib.redirect_stdout(io.StringIO()):
        code = pipeline.main(["predict", str(checkpoint), str(work / "scan.npy"), "--out",
                              str(work / "pred"), "--energy-kev", str(ENERGY_EV / 1e3),
                              "--semiangle-mrad", str(SEMIANGLE_MRAD), "--angular-pixel-mrad",
                              f"{pixel_mrad:.8f}", "--scan-step-a", f"{step_a:.6f}",
                              "--no-progress"])
    if code != 0:
        return None, {}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("benchmark-predict"))
    parser.add_argument("--config", type=Path, help="the checkpoint's config (YAML)")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--nuisance-model", action="store_true",
                        help="also train the default model with loader.nuisances (NUISANCES) "
                        "on the same store and score it beside")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "predict_measured.json")
    args = parser.parse_args()

    from stemdl.configs import load_config
    from stemdl.simulate.catalogue import build_catalogue
    from stemdl.train.metrics import pearson_r

    if args.checkpoint:
        config, checkpoint = load_config(str(args.config)), args.checkpoint
    else:
        from stemdl.testing.reconstruction_model import reconstruction_checkpoint

        args.run.mkdir(parents=True, exist_ok=True)
        config, checkpoint = reconstruction_checkpoint(args.run)
    checkpoints = {"stitched_r": checkpoint}
    if args.nuisance_model:
        checkpoints["stitched_r_nuisance_trained"] = _nuisance_model(config, args.run)
    sim = config.simulation
    trained_step = sim.scan.side_a(sim.cell_xy_a) / sim.scan.gpts[0]
    per_probe = sim.target.target_px[0] // sim.scan.gpts[0]
    catalogue = build_catalogue(sim)
    training = {m.formula for m in catalogue.materials_in("train")}

    rows = []

    def case(formula: str, name: str, *, step_factor: float = 1.0, thickness_a: float = 20.0,
             tilt_mrad: float = 0.0, source_sigma_a: float = 0.0, psf_px: float = 0.0,
             dose: float | None = None, sims: dict) -> None:
        started = time.perf_counter()
        step = trained_step * step_factor
        probes = {1.0: PROBES, 0.8: 11, 1.2: PROBES}[step_factor]
        target_probes = (math.floor((probes - 1) * step_factor + 1e-9) + 1
                         if step_factor != 1.0 else probes)
        key = (step_factor, thickness_a, tilt_mrad)
        if key not in sims:
            sims[key] = simulate(formula, sim, step_a=step, probes=probes,
                                 thickness_a=thickness_a, tilt_mrad=tilt_mrad,
                                 target_px_per_probe=per_probe, target_probes=target_probes,
                                 target_step_a=trained_step)
        patterns, truth, pixel = sims[key]
        data = measured(patterns, step, source_sigma_a=source_sigma_a, psf_px=psf_px, dose=dose,
                        seed=len(rows))
        scores = {}
        for column, weights in checkpoints.items():
            stitched, record = predict(weights, data, pixel, step,
                                       args.run / "measured" / column / formula / name)
            scores[column] = (None if stitched is None
                              else round(pearson_r(stitched, truth), 4))
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
               "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)

    goal = dict(tilt_mrad=2.0, source_sigma_a=0.4, psf_px=1.0)
    for formula in CRYSTALS:
        sims: dict = {}
        case(formula, "clean", sims=sims)
        case(formula, "goal_1e5", dose=1e5, sims=sims, **goal)  # type: ignore[arg-type]
        case(formula, "goal_1e4", dose=1e4, sims=sims, **goal)  # type: ignore[arg-type]
        if formula in ("GaP", "SrTiO3"):
            case(formula, "thickness_10", thickness_a=10.0, sims=sims)
            case(formula, "thickness_30", thickness_a=30.0, sims=sims)
            case(formula, "step_0.8", step_factor=0.8, sims=sims)
            case(formula, "step_1.2", step_factor=1.2, sims=sims)

    def mean(name: str, column: str) -> float:
        values = [r[column] for r in rows if r["case"] == name and r[column] is not None]
        return round(float(np.mean(values)), 4) if values else None  # type: ignore[return-value]

    summary = {"how": "python -m benchmarks.predict_measured (see its docstring)",
               "checkpoint": str(checkpoint), "trained_step_a": trained_step,
               "rows": rows,
               "nuisance_training": NUISANCES if args.nuisance_model else None,
               "mean": {column: {name: mean(name, column) for name in dict.fromkeys(
                   r["case"] for r in rows)} for column in checkpoints}}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["mean"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
