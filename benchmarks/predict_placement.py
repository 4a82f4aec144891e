"""Does training on randomly placed scans make the model independent of scan placement?

    python benchmarks/predict_placement.py --centred DIR_A --placed DIR_B
    python benchmarks/predict_stitched.py --run DIR_B --out benchmarks/predict_stitched_placed.json

The small reconstruction model of the tests (`tests/reconstruction_model.py`) is made twice
with the same config, seed, sample count and epochs: in DIR_A from stemdl's simulator (every
sample's scanned square centred in its supercell), in DIR_B from
`benchmarks/placement_simulator.py` (the square moved by a random offset of up to ±2.5 Å per
sample); either is reused if its checkpoint exists. Both are scored (`train.scoring`, mean
per-sample Pearson r, noise-free) on both test splits: the held-out materials scanned centred,
as the project's test split is, and scanned at random placements. `predict_stitched.py` then
maps larger scans with the DIR_B model. Writes benchmarks/predict_placement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _make(directory: Path, simulator: Any) -> Path:
    from reconstruction_model import reconstruction_config

    from stemdl.datasets.generate import generate
    from stemdl.train.loop import train_main

    checkpoint = directory / "reconstruction-run" / "checkpoint.pt"
    if not checkpoint.exists():
        config = reconstruction_config()
        store = str(directory / "reconstruction.zarr")
        assert generate(config, store, n_workers=2, progress=False, simulator=simulator).complete
        train_main(config, store, directory / "reconstruction-run")
    return checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--centred", type=Path, default=Path("benchmark-predict"))
    parser.add_argument("--placed", type=Path, default=Path("benchmark-placed"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "predict_placement.json")
    args = parser.parse_args()
    # the Dask workers import the simulator by module name: put benchmarks/ on their path
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import placement_simulator
    import torch

    from stemdl.train.evaluate import load_trained_model
    from stemdl.train.scoring import load_split, predict, sample_metrics

    runs = {"centred": (args.centred, None), "placed": (args.placed, placement_simulator)}
    checkpoints = {}
    for name, (directory, simulator) in runs.items():
        directory.mkdir(parents=True, exist_ok=True)
        checkpoints[name] = _make(directory, simulator)
    table = {}
    for model_name, checkpoint in checkpoints.items():
        model, config = load_trained_model(checkpoint, torch.device("cpu"))
        for split_name, (directory, _) in runs.items():
            split = load_split(str(directory / "reconstruction.zarr"), config.loader, "test")
            r = sample_metrics(predict(model, split.cbed), split.potential)["pearson_r"]
            table[f"model_trained_{model_name}__test_scanned_{split_name}"] = round(float(r.mean()), 4)
            print(model_name, split_name, table[f"model_trained_{model_name}__test_scanned_{split_name}"],
                  len(r), flush=True)
    args.out.write_text(json.dumps({"how": "python benchmarks/predict_placement.py",
                                    "mean_pearson_r": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
