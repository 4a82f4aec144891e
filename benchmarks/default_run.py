"""Wall time and test figures of the default `stemdl run`, exactly as a new user runs it.

Usage: python -m benchmarks.default_run [--out DIR] [--ranks N] [--keep] [--results PATH]
                                       [--store STORE]

Runs `stemdl run` (no config argument: the embedded `small` preset) in a fresh folder as a
subprocess, times it from the outside, reads the run's `metrics.json` and prints a Markdown
section (wall time per stage, test metrics of both arrangements and both baselines, noise-free
and at each dose, load average before and after, so a busy machine is visible). With
`--results`, the section replaces the one of the same heading in that file
(benchmarks/RESULTS.md). Goal (issue 13): at most 15 minutes on a quiet 2-core machine, and
for the best arrangement mean Pearson r ≥ 0.95 and mean relative L2 ≤ 0.30.

`--store STORE` copies a finished store of the same preset into the fresh run folder first
(`stemdl run` then finds every shard done and skips the simulation, which is deterministic):
the figures are those of a fresh run, the wall time is not (the section says so).
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

from stemdl.train.scoring import NOISE_FREE, dose_label

HEADING = "## Default run (`python -m benchmarks.default_run`)"
METRICS = ("pearson_r", "rel_l2", "ssim", "psnr_db", "mse")
PHYSICAL = ("rel_l2_v_a", "mae_v_a", "thickness_mae_a", "thickness_mae_pct")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def run(out: Path, ranks: int | None) -> tuple[float, dict, str, str]:
    command = [sys.executable, "-m", "stemdl.pipeline", "run", "--out", str(out)]
    if ranks is not None:
        command += ["--ranks", str(ranks)]
    before = _load()
    began = time.perf_counter()
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], text=True,
                            capture_output=True)
    wall = time.perf_counter() - began
    after = _load()
    if result.returncode != 0:
        raise SystemExit(f"stemdl run failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return wall, json.loads((out / "metrics.json").read_text()), before, after


def section(wall: float, metrics: dict, before: str, after: str,
            copied_store: Path | None = None) -> str:
    best = metrics["best_arrangement"]
    free = metrics["models"][best]["noise_free"]
    goal = free["pearson_r"] >= 0.95 and free["rel_l2"] <= 0.30 and wall <= 900
    ranks = {r["ranks"] for r in metrics["training"].values()}
    lines = [
        HEADING,
        "",
        f"`stemdl run` with no arguments, timed from outside: **{wall:.0f} s** "
        f"({wall / 60:.1f} min; goal ≤ 15 min), {'/'.join(map(str, sorted(ranks)))} training "
        f"rank(s), {platform.machine()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}. Load average (1/5/15 min) before {before}, after {after}."
        f" Test split: {metrics['test_samples']} samples of {len(metrics['test_materials'])} "
        f"held-out materials; training split {metrics['train_samples']} samples. "
        + (f"The store was copied from {copied_store} (simulation skipped), so the wall time "
           "is not a fresh run's. " if copied_store else "")
        + "Goal "
        f"(best arrangement: Pearson r ≥ 0.95, relative L2 ≤ 0.30, ≤ 15 min): "
        f"**{'met' if goal else 'NOT met'}**.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.0f} |" for k, v in metrics["wall_s"].items()],
        "",
    ]
    if "validation" in metrics:  # chosen on validation (issue 19): its figures come first
        val, chosen = metrics["validation"], metrics["selection"]["checkpoints"]
        lines += [f"Selected on the validation split ({val['samples']} samples of "
                  f"{len(val['materials'])} materials): best arrangement `{best}`; checkpoints "
                  + ", ".join(f"`{n}` {c['file']} (step {c['step']})" for n, c in chosen.items())
                  + ". Validation, noise-free:", "",
                  "| predictor | " + " | ".join(METRICS) + " |",
                  "|---|" + "---:|" * len(METRICS)]
        for name, values in {**{f"model `{n}`": v for n, v in val["models"].items()},
                             **{f"baseline `{n}`": v for n, v in val["baselines"].items()}
                             }.items():
            lines.append(f"| {name} | "
                         + " | ".join(f"{values[NOISE_FREE][m]:.3f}" for m in METRICS) + " |")
        lines.append("")
    for key in (NOISE_FREE, *metrics["doses"]):
        label = "noise-free" if key == NOISE_FREE else f"at {dose_label(key)}"
        lines += [f"Test metrics, {label} (relative L2 = "
                  "‖pred − true‖ / ‖true − mean(true)‖ per sample):", "",
                  "| predictor | " + " | ".join(METRICS) + " |",
                  "|---|" + "---:|" * len(METRICS)]
        rows = {**{f"model `{n}`": v for n, v in metrics["models"].items()},
                **{f"baseline `{n}`": v for n, v in metrics["baselines"].items()}}
        for name, values in rows.items():
            lines.append(f"| {name} | "
                         + " | ".join(f"{values[key][m]:.3f}" for m in METRICS) + " |")
        lines.append("")
    return "\n".join(lines + physical_section(metrics))


def physical_section(metrics: dict) -> list[str]:
    """Issue 20: V·Å and thickness figures and the calibration of σ, when the run has them."""
    if metrics.get("target_units") != "V·Å":
        return []
    lines = ["Physical units (definitions in metrics.json; relative L2 in V·Å = "
             "‖pred − true‖ / ‖true‖, thickness per window):", "",
             "| predictor | dose | " + " | ".join(PHYSICAL) + " |",
             "|---|---|" + "---:|" * len(PHYSICAL)]
    rows = {**{f"model `{n}`": v for n, v in metrics["models"].items()},
            **{f"baseline `{n}`": v for n, v in metrics["baselines"].items()}}
    for name, values in rows.items():
        for key in (NOISE_FREE, *metrics["doses"]):
            label = "noise-free" if key == NOISE_FREE else dose_label(key)
            lines.append(f"| {name} | {label} | " + " | ".join(
                f"{values[key][m]:.3f}" if m in values[key] else "–" for m in PHYSICAL) + " |")
    lines.append("")
    for name, entry in metrics.get("uncertainty", {}).items():
        if name == "definition":
            continue
        lines.append(f"- `{name}` σ (D4 spread × {entry['sigma_factor']:.3g}, fitted on "
                     f"validation): {100 * entry['test_coverage_2sigma']:.1f} % of test pixels "
                     f"within 2σ (raw spread: {100 * entry['test_coverage_2sigma_raw']:.1f} %)"
                     + (f"; thickness: {100 * entry['thickness_test_coverage_2sigma']:.1f} % of "
                        "test windows within 2σ" if "thickness_test_coverage_2sigma" in entry
                        else ""))
    lines.append("")
    return lines


def replace_section(path: Path, text: str) -> None:
    """Replace the section under HEADING (up to the next `## `) or append it."""
    old = path.read_text() if path.exists() else ""
    if HEADING in old:
        start = old.index(HEADING)
        end = old.find("\n## ", start + len(HEADING))
        old = old[:start] + old[end + 1:] if end >= 0 else old[:start]
    path.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temp dir)")
    parser.add_argument("--ranks", type=int, default=None, help="pass --ranks to stemdl run")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("--store", type=Path, default=None,
                        help="copy this finished store of the preset into the run folder first")
    parser.add_argument("--results", type=Path, default=None,
                        help="write the section into this Markdown file")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="stemdl-default-run-")) / "run"
    if out.exists():  # the benchmark times a fresh run
        raise SystemExit(f"{out} exists: the benchmark times a fresh run")
    if args.store:
        out.mkdir(parents=True)
        shutil.copytree(args.store, out / "store.zarr")
    wall, metrics, before, after = run(out, args.ranks)
    text = section(wall, metrics, before, after, args.store)
    print(text)
    if args.results:
        replace_section(args.results, text)
    if not args.keep and args.out is None:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
