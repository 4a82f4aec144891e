"""How `stemdl predict`'s map depends on the pattern pixel the scan is rebinned onto.

    python -m benchmarks.predict_pixel [--run DIR] [--out benchmarks/predict_pixel.json]

Why: every training material's patterns have their own angular pixel, λ / (its supercell
extent of whole base cells ≥ `cell_xy_a`), 12.1–19.7 Å-equivalent for the tests' model
(12.8–25.4 Å for `small`). Before, predict kept any pixel in that range and binned a finer
one by the smallest whole factor into it, so the pixel the model saw depended on the
detector. This script measures what that costs: one clean scan per crystal (abTEM directly,
as `benchmarks/predict_measured.py` makes them: 8 × 8 probes at 1.5 Å, 100 keV, 9 mrad, 20 Å,
a supercell ≈ 40 Å wide, 96 × 96 px), predicted through the CLI with the rebinning ratio forced
so that the model's pixel is λ / E for E in `EQUIVALENT_EXTENTS_A` (the ratio is forced by
wrapping `train.predict.check_calibration`; nothing else changes), and once as predict now
chooses (`default`: the median training pixel, `TrainedRanges.typical_angular_sampling_mrad`).
Crystals: the six of predict_measured (test, real lattice parameters) and the square [001]
validation materials of the model's catalogue (the median rule was checked on these).
`own_eq_a` is the extent of whole cells the catalogue's rule would give that lattice.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

EQUIVALENT_EXTENTS_A = (12.5, 13.5, 14.5, 15.5, 16.5, 17.5, 18.5, 19.5)
PROBES, STEP_A, DETECTOR_PX, SUPERCELL_A = 8, 1.5, 96, 40.0


def _scan(unit, sim):  # type: ignore[no-untyped-def]
    """(patterns, truth, angular pixel mrad, extent Å) of a centred clean scan of `unit`."""
    import abtem

    from stemdl.configs.units import wavelength_a
    from stemdl.simulate.target import resample_region

    a = unit.cell.lengths()[0]
    reps = max(1, round(SUPERCELL_A / a))
    atoms = unit * (reps, reps, max(1, round(20.0 / unit.cell.lengths()[2])))
    extent = float(atoms.cell.lengths()[0])
    gpts = math.ceil(extent / sim.sampling_a)
    potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=sim.slice_thickness_a,
                                parametrization=sim.parametrization,
                                projection=sim.projection).build(lazy=False)
    side = PROBES * STEP_A
    x0 = (extent - side) / 2
    xs = x0 + (np.arange(PROBES) + 0.5) * STEP_A
    grid_y, grid_x = np.meshgrid(xs, xs, indexing="ij")
    positions = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    waves = abtem.Probe(energy=100e3, semiangle_cutoff=9.0, defocus=0.0).multislice(
        potential, scan=abtem.CustomScan(positions))
    patterns = np.asarray(waves.diffraction_patterns(max_angle=None).compute().array)
    n, half = patterns.shape[-1], DETECTOR_PX // 2
    window = patterns[:, n // 2 - half: n // 2 + half, n // 2 - half: n // 2 + half]
    cbed = np.swapaxes(window, -1, -2).reshape(PROBES, PROBES, DETECTOR_PX, DETECTOR_PX)
    projected = np.swapaxes(np.asarray(potential.array, dtype=np.float64).sum(axis=0), -1, -2)
    truth = resample_region(projected[None], (extent / gpts,) * 2,
                            (x0, x0, x0 + side, x0 + side), (4 * PROBES,) * 2,
                            sim.target.smoothing_px)[0]
    return cbed.astype(np.float32), truth, 1e3 * wavelength_a(100e3) / extent, extent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("benchmark-predict"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "predict_pixel.json")
    args = parser.parse_args()

    from ase import Atoms

    import stemdl.predict.scan_prediction as predict_module
    from benchmarks.predict_measured import CRYSTALS, crystal, predict
    from stemdl.configs.units import wavelength_a
    from stemdl.predict.trained_ranges import trained_ranges
    from stemdl.simulate.catalogue import build_catalogue
    from stemdl.testing.reconstruction_model import reconstruction_checkpoint
    from stemdl.train.metrics import pearson_r

    args.run.mkdir(parents=True, exist_ok=True)
    config, checkpoint = reconstruction_checkpoint(args.run)
    sim = config.simulation
    units = {formula: crystal(formula) for formula in CRYSTALS}
    catalogue = build_catalogue(sim)
    for material in catalogue.materials_in("validation"):
        base = next((o for o in material.orientations if o.zone_axis == (0, 0, 1)), None)
        if base is not None and math.isclose(base.lengths_a[0], base.lengths_a[1]):
            units[f"validation:{material.material_id}"] = Atoms(
                numbers=base.atoms.numbers, positions=base.atoms.positions,
                cell=base.atoms.cell, pbc=True)

    original = predict_module.check_calibration
    forced: dict[str, tuple[float, float]] = {}

    def check(*args_, **kwargs):  # type: ignore[no-untyped-def]
        ratio = original(*args_, **kwargs)
        return forced.get("ratio", ratio)

    lam = 1e3 * wavelength_a(100e3)
    ranges = trained_ranges(config)
    rows = {}
    with contextlib.ExitStack() as stack:
        predict_module.check_calibration = check
        stack.callback(setattr, predict_module, "check_calibration", original)
        for name, unit in units.items():
            patterns, truth, pixel, extent = _scan(unit, sim)
            a = float(unit.cell.lengths()[0])
            row: dict[str, object] = {
                "a": round(a, 3), "extent_a": round(extent, 2),
                "own_eq_a": round(math.ceil(sim.cell_xy_a / a - 1e-9) * a, 2)}
            work = args.run / "pixel" / name.replace(":", "_")
            for eq in EQUIVALENT_EXTENTS_A:
                forced["ratio"] = (extent / eq,) * 2
                stitched, _ = predict(checkpoint, patterns, pixel, STEP_A, work / str(eq))
                row[str(eq)] = None if stitched is None else round(pearson_r(stitched, truth), 3)
            forced.clear()
            stitched, record = predict(checkpoint, patterns, pixel, STEP_A, work / "default")
            row["default"] = round(pearson_r(stitched, truth), 3)
            row["default_eq_a"] = round(lam / record["resampling"]["model_angular_sampling_mrad"][0], 2)
            rows[name] = row
            print(name, json.dumps(row), flush=True)

    def mean(prefix: str, key: str) -> float:
        return round(float(np.mean([r[key] for n, r in rows.items()
                                    if n.startswith("validation:") == (prefix == "validation")])), 3)

    summary = {"how": "python -m benchmarks.predict_pixel (see its docstring)",
               "trained_eq_range_a": [round(lam / ranges.angular_sampling_mrad[0], 2),
                                      round(lam / ranges.angular_sampling_mrad[1], 2)],
               "median_eq_a": round(lam / ranges.typical_angular_sampling_mrad(100e3), 2),
               "rows": rows,
               "mean": {split: {key: mean(split, key) for key in
                                [str(e) for e in EQUIVALENT_EXTENTS_A] + ["default"]}
                        for split in ("test", "validation")}}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["mean"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
