"""Test figures of a preset over several training seeds: mean ± standard deviation.

Usage: python -m benchmarks.seeds PRESET [--seeds 0 1 2] [--out DIR] [--ranks N]
                                         [--vary train|both] [--results PATH]

Runs `stemdl run` once per seed (a subprocess each, exactly as a user runs it) with the
preset's config changed only in its seeds, then prints a Markdown section: for every model,
the validation-selected arrangement and every baseline, the mean ± sample standard deviation
(n − 1) over seeds of the noise-free test Pearson r and relative L2, and the selected model's r
at each dose. With `--results`, the section replaces the one of the same heading in that file.

Which seed changes, and why. `--vary train` (the default) changes `train.seed`: the weights'
initialization, the data order, dropout and the dose noise of scoring. The simulation seed,
and with it the store and the split of materials into train/validation/test, stays the same,
so the spread is that of training alone on one fixed test set (the question "is this figure
luck of the initialization?"), and the store is simulated once and copied into every later
run (`stemdl run` finds every shard done; the simulation and dataset sections are identical,
which a resumed store requires). `--vary both` also changes `simulation.seed`: new materials
draws, new splits, a new store per seed (the spread then includes which materials were held
out, at the cost of a simulation per seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from stemdl.configs import load_config
from stemdl.train.scoring import NOISE_FREE, dose_label

ROOT = Path(__file__).resolve().parents[1]


def heading(preset: str) -> str:
    return f"## Seeds of `{preset}` (`python -m benchmarks.seeds {preset}`)"


def seeded_config(preset: str, seed: int, vary: str, path: Path) -> Path:
    """The preset with `train.seed` (and with `vary == "both"` `simulation.seed`) changed."""
    data = json.loads(json.dumps(load_config(preset).to_dict()))
    data["name"] = f"{preset}-seed{seed}"
    data["train"]["seed"] = seed
    if vary == "both":
        data["simulation"]["seed"] = data["simulation"]["seed"] + seed
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_seed(config: Path, out: Path, ranks: int | None) -> tuple[float, dict]:
    command = [sys.executable, "-m", "stemdl.pipeline", "run", str(config), "--out", str(out)]
    if ranks is not None:
        command += ["--ranks", str(ranks)]
    began = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, text=True, capture_output=True)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"stemdl run {config} failed ({result.returncode}):\n"
                         f"{result.stderr[-4000:]}")
    return wall, json.loads((out / "metrics.json").read_text())


def _stat(values: list[float]) -> str:
    array = np.asarray(values, dtype=np.float64)
    spread = array.std(ddof=1) if len(array) > 1 else float("nan")
    return f"{array.mean():.3f} ± {spread:.3f}"


def section(preset: str, seeds: list[int], vary: str, walls: list[float],
            runs: list[dict]) -> str:
    first = runs[0]
    rows: dict[str, list[dict]] = {}
    for metrics in runs:
        best = metrics["best_arrangement"]
        entries = {**{f"model `{n}`": v for n, v in metrics["models"].items()},
                   "selected model (validation r)": metrics["models"][best],
                   **{f"baseline `{n}`": v for n, v in metrics["baselines"].items()}}
        for name, values in entries.items():
            rows.setdefault(name, []).append(values)
    doses = first["doses"]
    lines = [
        heading(preset), "",
        f"{len(seeds)} runs of `stemdl run` ({preset}), seeds {seeds}, changing "
        + ("`train.seed` only (same store and test materials)" if vary == "train"
           else "`train.seed` and `simulation.seed` (a new store and split each)")
        + f"; {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; wall "
        f"time per run {', '.join(f'{w:.0f}' for w in walls)} s"
        + (" (the runs after the first copy its store: no simulation)" if vary == "train"
           and len(walls) > 1 else "") + ". Test split "
        f"{first['test_samples']} samples of {len(first['test_materials'])} held-out "
        "materials (first run). Mean ± standard deviation (n − 1) over seeds; the selected "
        "arrangement per seed: " + ", ".join(f"`{m['best_arrangement']}`" for m in runs) + ".",
        "",
        "| predictor | test r | test rel. L2 | "
        + " | ".join(f"r at {dose_label(k)}" for k in doses) + " |",
        "|---|---:|---:|" + "---:|" * len(doses),
    ]
    for name, values in rows.items():
        lines.append(f"| {name} | {_stat([v[NOISE_FREE]['pearson_r'] for v in values])} | "
                     f"{_stat([v[NOISE_FREE]['rel_l2'] for v in values])} | "
                     + " | ".join(_stat([v[k]["pearson_r"] for v in values]) for k in doses)
                     + " |")
    return "\n".join(lines) + "\n"


def replace_section(path: Path, title: str, text: str) -> None:
    """Replace the section under `title` (up to the next `## `) or append it."""
    old = path.read_text() if path.exists() else ""
    if title in old:
        start = old.index(title)
        end = old.find("\n## ", start + len(title))
        old = old[:start] + old[end + 1:] if end >= 0 else old[:start]
    path.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="preset name (tiny, small, ...) or YAML path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="folder of the runs (temp dir)")
    parser.add_argument("--ranks", type=int, default=None, help="pass --ranks to stemdl run")
    parser.add_argument("--vary", choices=("train", "both"), default="train")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the section into this Markdown file")
    args = parser.parse_args()
    if len(args.seeds) < 3:
        print("note: fewer than 3 seeds make a poor standard deviation", file=sys.stderr)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemdl-seeds-"))
    out.mkdir(parents=True, exist_ok=True)
    walls, runs = [], []
    store: Path | None = None
    for seed in args.seeds:
        run_dir = out / f"seed-{seed}"
        if run_dir.exists():
            raise SystemExit(f"{run_dir} exists: each seed is a fresh run")
        config = seeded_config(args.preset, seed, args.vary, out / f"seed-{seed}.yaml")
        if store is not None and args.vary == "train":
            run_dir.mkdir()
            shutil.copytree(store, run_dir / "store.zarr")  # the same simulation: skip it
        print(f"seed {seed}: stemdl run {config.name} → {run_dir}", file=sys.stderr)
        wall, metrics = run_seed(config, run_dir, args.ranks)
        walls.append(wall)
        runs.append(metrics)
        store = store or run_dir / "store.zarr"
    text = section(args.preset, args.seeds, args.vary, walls, runs)
    print(text)
    if args.results:
        replace_section(args.results, heading(args.preset), text)


if __name__ == "__main__":
    main()
