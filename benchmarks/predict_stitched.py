"""How well `stemdl predict` maps a scan larger than the model's window, per held-out material.

    python -m benchmarks.predict_stitched [--run DIR] [--out benchmarks/predict_stitched.json]

The model is the small reconstruction model of the tests (`testing/reconstruction_model.py`:
`scan_pixels`, 4×4 probes at 1.5 Å, 21×21 px, trained on 192 samples); `--run DIR` reuses a
DIR holding `reconstruction.zarr` and `reconstruction-run/checkpoint.pt` made by it, or makes
them there. For every held-out (test-split) material with a [001] zone axis, a measured-like
scan is simulated (`testing/measured_scan.py`: 12×12 probes at 1.5 Å, 9 mrad, 20 Å thick, a
detector pixel 1/3 of that material's training pixel, 72×72 px, Poisson noise at 1e5 e/Å²;
predict bins it onto the median training pixel, not back onto that material's own, which
no real detector would single out) twice:

* `as_trained`: the scan's corner where that material's training samples had theirs relative
  to the lattice; `window_r` is the r of the first (4×4) window predicted alone;
* `centred`: the scan centred in the supercell, i.e. wherever it falls on the lattice, as a
  microscope scan does;

and `stemdl predict` (the CLI, through a .npy and options) maps it. Reported: Pearson r of the
stitched map against the true projected potential of the scanned area. A sweep then shifts
a 4×4 scan of GaP across one lattice period along the diagonal (`phase_sweep`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

DOSE = 1e5
STEP_A = 1.5


def _predict_map(checkpoint: Path, counts: np.ndarray, pixel_mrad: float, work: Path) -> np.ndarray:
    import zarr

    from stemdl import pipeline

    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "scan.npy", counts)
    with contextlib.redirect_stdout(io.StringIO()):
        code = pipeline.main(["predict", str(checkpoint), str(work / "scan.npy"), "--out",
                              str(work / "pred"), "--energy-kev", "100", "--semiangle-mrad", "9",
                              "--angular-pixel-mrad", f"{pixel_mrad:.8f}", "--scan-step-a",
                              str(STEP_A), "--no-progress"])
    assert code == 0, code
    return np.asarray(zarr.open_array(str(work / "pred" / "potential.zarr"), mode="r")[...])[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=Path("benchmark-predict"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "predict_stitched.json")
    args = parser.parse_args()

    from stemdl.datasets.transforms import electrons_per_pattern
    from stemdl.simulate.catalogue import build_catalogue
    from stemdl.testing.measured_scan import (
        poisson_counts,
        simulate_large_scan,
        training_phase_corner_a,
    )
    from stemdl.testing.reconstruction_model import reconstruction_checkpoint
    from stemdl.train.metrics import pearson_r

    args.run.mkdir(parents=True, exist_ok=True)
    config, checkpoint = reconstruction_checkpoint(args.run)
    sim = config.simulation
    catalogue = build_catalogue(sim)
    electrons = electrons_per_pattern(DOSE, np.array([0, 0, STEP_A, STEP_A]), 1)
    common = dict(repeat=3, step_a=STEP_A, pattern_px=72, target_px_per_probe=4,
                  energy_ev=100e3, semiangle_mrad=9.0, defocus_a=0.0, thickness_a=20.0)
    rows = []
    for material in catalogue.materials_in("test"):
        if not any(o.zone_axis == (0, 0, 1) for o in material.orientations):
            continue
        started = time.perf_counter()
        row: dict[str, object] = {"material_id": material.material_id}
        for placement in ("as_trained", "centred"):
            corner = (training_phase_corner_a(sim, material.material_id, (0, 0, 1), 3)
                      if placement == "as_trained" else None)
            scan = simulate_large_scan(sim, material.material_id, (0, 0, 1), scan_gpts=(12, 12),
                                       corner_a=corner, **common)  # type: ignore[arg-type]
            counts = poisson_counts(scan.patterns, electrons, seed=0)
            work = args.run / "bench" / material.material_id / placement
            stitched = _predict_map(checkpoint, counts, scan.angular_sampling_mrad[0], work)
            row[f"{placement}_stitched_r"] = round(pearson_r(stitched, scan.potential[0]), 4)
            if placement == "as_trained":
                window = _predict_map(checkpoint, counts[:4, :4], scan.angular_sampling_mrad[0],
                                      work / "window")
                row["as_trained_window_r"] = round(pearson_r(window, scan.potential[0, :16, :16]), 4)
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)

    gap = "zincblende-GaP-5e4e17cd"
    corner = training_phase_corner_a(sim, gap, (0, 0, 1), 3)
    period = catalogue.by_id(gap).orientations[0].lengths_a[0]
    sweep = []
    for step in range(8):
        shift = step * period / 8
        scan = simulate_large_scan(sim, gap, (0, 0, 1), scan_gpts=(4, 4),
                                   corner_a=(corner[0] + shift, corner[1] + shift), **common)  # type: ignore[arg-type]
        counts = poisson_counts(scan.patterns, electrons, seed=0)
        window = _predict_map(checkpoint, counts, scan.angular_sampling_mrad[0],
                              args.run / "bench" / "sweep" / str(step))
        sweep.append({"shift_a": round(shift, 3), "window_r": round(pearson_r(window, scan.potential[0]), 4)})
        print(json.dumps(sweep[-1]), flush=True)

    summary = {
        "how": "python -m benchmarks.predict_stitched (see its docstring)",
        "dose_e_per_a2": DOSE, "scan_probes": [12, 12], "step_a": STEP_A,
        "materials": rows,
        "mean": {key: round(float(np.mean([r[key] for r in rows])), 4)
                 for key in ("as_trained_window_r", "as_trained_stitched_r", "centred_stitched_r")},
        "phase_sweep": {"material_id": gap, "along": "x = y diagonal", "points": sweep},
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["mean"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
