"""Does training on randomly placed scans make the model independent of scan placement?

    python -m benchmarks.predict_placement --centred DIR_A --placed DIR_B
    python -m benchmarks.predict_stitched --run DIR_B --out benchmarks/predict_stitched_placed.json

The small reconstruction model of the tests (`testing/reconstruction_model.py`) is made twice
with the same config, seed, sample count and epochs: in DIR_A with `scan.shift_a: 0` (every
sample's scanned square centred in its supercell), in DIR_B with the config's own
`scan.shift_a` (2.5 Å: the square moved by a random offset per sample); either is reused if its
checkpoint exists. Both are scored (`train.scoring`, mean
per-sample Pearson r, noise-free) on both test splits: the held-out materials scanned centred,
as the project's test split is, and scanned at random placements. `predict_stitched.py` then
maps larger scans with the DIR_B model. Writes benchmarks/predict_placement.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make(directory: Path, centred: bool) -> Path:
    from stemdl.configs import config_from_dict
    from stemdl.datasets.generate import generate
    from stemdl.testing.reconstruction_model import reconstruction_config
    from stemdl.train.loop import train_main

    checkpoint = directory / "reconstruction-run" / "checkpoint.pt"
    if not checkpoint.exists():
        config = reconstruction_config()
        if centred:
            data = config.to_dict()
            data["simulation"]["scan"]["shift_a"] = 0.0
            config = config_from_dict(data, source="reconstruction model, centred squares")
        store = str(directory / "reconstruction.zarr")
        assert generate(config, store, n_workers=2, progress=False).complete
        train_main(config, store, directory / "reconstruction-run")
    return checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--centred", type=Path, default=Path("benchmark-centred"))
    parser.add_argument("--placed", type=Path, default=Path("benchmark-placed"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "predict_placement.json")
    args = parser.parse_args()
    import torch

    from stemdl.train.evaluate import load_trained_model
    from stemdl.train.scoring import load_split, predict, sample_metrics

    runs = {"centred": (args.centred, True), "placed": (args.placed, False)}
    checkpoints = {}
    for name, (directory, centred) in runs.items():
        directory.mkdir(parents=True, exist_ok=True)
        checkpoints[name] = _make(directory, centred)
    table = {}
    for model_name, checkpoint in checkpoints.items():
        model, config = load_trained_model(checkpoint, torch.device("cpu"))
        for split_name, (directory, _) in runs.items():
            split = load_split(str(directory / "reconstruction.zarr"), config.loader, "test")
            r = sample_metrics(predict(model, split.cbed), split.potential)["pearson_r"]
            table[f"model_trained_{model_name}__test_scanned_{split_name}"] = round(float(r.mean()), 4)
            print(model_name, split_name, table[f"model_trained_{model_name}__test_scanned_{split_name}"],
                  len(r), flush=True)
    args.out.write_text(json.dumps({"how": "python -m benchmarks.predict_placement",
                                    "mean_pearson_r": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
