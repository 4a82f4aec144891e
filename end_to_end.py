"""`stemdl run`: simulate, verify, train both input arrangements, score them against baselines.

The whole-pipeline run, end to end, sits on top beside the command line (`pipeline.py`, a name
the user's design card fixes for the CLI; so this module is named for what it does): it is the one
place that calls datasets/ (generation, verification) and train/ in sequence, so that train/
depends only on datasets/ and configs/.

Everything on one machine: the store is generated on a local Dask cluster, each arrangement
(`channels`, the paper's; `scan_pixels`, see `train.arrangements`) is trained on `ranks` local
torch.distributed processes (gloo, or NCCL with one GPU each; through the grouped allreduce)
or in this process (`ranks=1`), and both are scored on the held-out test materials, noise-free
and at finite electron doses, beside the baselines of `train.scoring` and `train.baselines`.

Selection is honest: each arrangement's checkpoint is the one with the best validation
Pearson r (`best.pt`, `train.loop`), the best arrangement is the one with the higher
validation r (`score_validation`, on the validation materials, which neither training nor
the test split holds), and only then is the test split read and scored. metrics.json keeps the
validation figures of every model and baseline beside the test ones. The run folder receives

* `store.zarr`, `train-<arrangement>/` (checkpoint, metrics.jsonl, TensorBoard),
* `metrics.json`: every test metric of every model and baseline, per dose and per material,
  the definitions, and the wall time of every stage,
* `report.md` with `curves.png`, `materials.png`, and `run.log` (everything that was logged;
  the console shows progress bars, warnings and the summary).

Re-running the same command resumes: generation skips finished shards and training continues
from each run's checkpoint (or finds it finished); scoring and the report are redone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stemdl.configs import StemdlConfig, UsageError, config_from_dict
from stemdl.configs.json_values import to_json_value
from stemdl.datasets.generate import generate
from stemdl.datasets.integrity import IncompleteStoreError
from stemdl.datasets.physical_scale import thickness_by_index
from stemdl.datasets.storage import StoreError
from stemdl.datasets.verify import verify_store
from stemdl.report import plot_curves, plot_materials, render_report
from stemdl.train.baselines import strong_baselines
from stemdl.train.checkpoint import BEST_CHECKPOINT_NAME, CHECKPOINT_NAME, SELECTION_METRIC
from stemdl.train.evaluate import load_trained_model
from stemdl.train.local_devices import (
    CPU_DEFAULT_RANKS,
    default_ranks,
    rank_backend,
    scoring_device,
)
from stemdl.train.local_ranks import run_local_ranks
from stemdl.train.loop import TrainResult, train_main
from stemdl.train.physical_scoring import DEFINITIONS as PHYSICAL_DEFINITIONS
from stemdl.train.physical_scoring import calibration, sample_scores, thickness_predictions
from stemdl.train.scoring import (
    NOISE_FREE,
    RELATIVE_L2_DEFINITION,
    SplitArrays,
    by_material,
    dose_key,
    dose_label,
    load_split,
    mean_target_prediction,
    nearest_neighbour_prediction,
    predict,
    summarize,
)

log = logging.getLogger(__name__)

ARRANGEMENTS = ("channels", "scan_pixels")
# Test doses (electrons per Å² over the scanned region): 10⁵ is a routine 4D-STEM dose for
# crystals that tolerate the beam, 10⁴ a low-dose acquisition.
DEFAULT_DOSES_E_PER_A2 = (1e5, 1e4)
# Local training processes of `stemdl run` when not given: one per visible GPU, else 2 CPU
# ranks (train/local_devices.py).
DEFAULT_RANKS = CPU_DEFAULT_RANKS
LOG_NAME = "run.log"


class StoreVerificationError(StoreError):
    """The store `stemdl run` generated (or found complete) fails `verify`: a damaged or
    changed shard; nothing is trained on it."""


@dataclass
class RunOutcome:
    """What `run_all` wrote and its headline figures."""

    report: Path
    metrics_json: Path
    metrics: dict[str, Any]
    wall_s: dict[str, float] = field(default_factory=dict)

    def headline(self) -> str:
        m = self.metrics
        best = m["best_arrangement"]
        free = m["models"][best][NOISE_FREE]
        lines = [f"best arrangement (chosen on validation r "
                 f"{m['validation']['models'][best][NOISE_FREE]['pearson_r']:.3f}): {best}; test "
                 f"on {m['test_samples']} samples of {len(m['test_materials'])} held-out "
                 "materials",
                 f"  Pearson r {free['pearson_r']:.3f}, relative L2 {free['rel_l2']:.3f}, "
                 f"SSIM {free['ssim']:.3f}, PSNR {free['psnr_db']:.1f} dB (noise-free)"]
        for name in m["models"]:
            if name != best:
                other = m["models"][name][NOISE_FREE]
                lines.append(f"  {name}: Pearson r {other['pearson_r']:.3f}, "
                             f"relative L2 {other['rel_l2']:.3f}")
        for baseline, values in m["baselines"].items():
            free_b = values[NOISE_FREE]
            lines.append(f"  baseline {baseline}: Pearson r {free_b['pearson_r']:.3f}, "
                         f"relative L2 {free_b['rel_l2']:.3f}")
        for key in m["doses"]:
            noisy = m["models"][best][key]
            lines.append(f"  at {dose_label(key)}: Pearson r {noisy['pearson_r']:.3f}, relative L2 "
                         f"{noisy['rel_l2']:.3f}")
        lines.append(f"wall time {self.wall_s.get('total', 0.0):.0f} s ("
                     + ", ".join(f"{k} {v:.0f} s" for k, v in self.wall_s.items()
                                 if k != "total") + ")")
        lines.append(f"report: {self.report}")
        return "\n".join(lines)


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[None]:
    """Send every INFO record to `path`; the console's handlers keep only warnings and errors
    (the progress bars say what is going on)."""
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    saved = [(h, h.level) for h in root.handlers]
    saved_level = root.level
    for h, _ in saved:
        h.setLevel(max(h.level, logging.WARNING))
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved_level)
        for h, level in saved:
            h.setLevel(level)


class StageClock:
    """Wall time per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._began = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        log.info("stage %s", name)
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - began

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": time.perf_counter() - self._began}


def with_arrangement(config: StemdlConfig, arrangement: str) -> StemdlConfig:
    data = config.to_dict()
    data["model"]["arrangement"] = arrangement
    return config_from_dict(data, source=f"{config.name} ({arrangement})")


def _train_rank(rank: int, world_size: int, config_dict: dict[str, Any], store_url: str,
                run_dir: str, log_path: str, threads: int) -> TrainResult:
    """One rank of a local multi-process training (module level: ranks are spawned)."""
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, filename=log_path,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "fsspec", "numcodecs", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = config_from_dict(config_dict)
    return train_main(config, store_url, Path(run_dir), resume=True, progress=rank == 0)


def train_arrangement(config: StemdlConfig, store_url: str, run_dir: Path, ranks: int,
                      log_path: Path) -> TrainResult:
    """Train one arrangement on `ranks` local processes (or in this one for 1), resuming;
    NCCL between GPU ranks, one GPU each (train/local_devices.py)."""
    backend = rank_backend(ranks)
    if ranks == 1:
        return train_main(config, store_url, run_dir, resume=True, progress=True)
    threads = max(1, (os.cpu_count() or 1) // ranks)
    results = run_local_ranks(_train_rank, ranks,
                              args=(config.to_dict(), store_url, str(run_dir), str(log_path),
                                    threads),
                              backend=backend, timeout_s=4 * 3600)
    return results[0]


def _score(predictions: torch.Tensor, test: SplitArrays, physical: bool = False,
           thickness_pred_a: torch.Tensor | None = None,
           thickness_true_a: torch.Tensor | None = None) -> dict[str, Any]:
    per_sample = sample_scores(predictions, test.potential, physical, thickness_pred_a,
                               thickness_true_a)
    return {"summary": summarize(per_sample), "per_sample": per_sample}


def score_run(config: StemdlConfig, store_url: str, checkpoints: dict[str, Path],
              doses: tuple[float, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of every model and baseline on the test split, noise-free and at each dose;
    and what the pictures need (noise-free test arrays and predictions)."""
    device = scoring_device()
    models = {name: load_trained_model(path, device)[0] for name, path in checkpoints.items()}
    train_split = load_split(store_url, config.loader, "train", seed=config.train.seed)
    # Physical targets (V·Å): scores in V·Å and Å beside the shape metrics (issue 20).
    physical = not config.loader.standardize_targets
    thickness_a = thickness_by_index(store_url) if physical else None
    metrics: dict[str, Any] = {"models": {n: {} for n in models},
                               "baselines": {name: {} for name in BASELINES},
                               "per_material": {}}
    pictures: dict[str, Any] = {}
    for dose in (None, *doses):
        key = dose_key(dose)
        test = load_split(store_url, config.loader, "test", dose_e_per_a2=dose,
                          seed=config.train.seed)
        predictions = {name: predict(model, test.cbed) for name, model in models.items()}
        predictions["mean_target"] = mean_target_prediction(train_split, len(test))
        predictions["nearest_neighbour"], _ = nearest_neighbour_prediction(train_split, test.cbed,
                                                                           device=device)
        predictions.update(strong_baselines(store_url, config.loader, "test", train_split, test,
                                            config.simulation.sample_shape, dose,
                                            config.train.seed))
        thickness = thickness_predictions(models, test.cbed) if physical else {}
        true_a = torch.from_numpy(thickness_a[test.index]) if thickness_a is not None else None
        for name, prediction in predictions.items():
            scored = _score(prediction, test, physical, thickness.get(name), true_a)
            group = "models" if name in models else "baselines"
            metrics[group][name][key] = scored["summary"]
            if dose is None:
                metrics["per_material"][name] = by_material(scored["per_sample"],
                                                            test.material_id)
        if dose is None:
            pictures = {"test": test, "predictions": predictions}
            metrics["test_samples"] = len(test)
            metrics["test_materials"] = sorted(set(test.material_id.tolist()))
            metrics["train_samples"] = len(train_split)
            if physical and config.loader.augment == "d4":
                validation = load_split(store_url, config.loader, "validation",
                                        seed=config.train.seed)
                metrics["uncertainty"] = calibration(models, validation, test,
                                                     tuple(config.simulation.scan.gpts),
                                                     thickness_a)
    metrics["target_units"] = "V·Å" if physical else "standardized"
    return metrics, pictures


BASELINES = ("mean_target", "nearest_neighbour", "aligned_nearest_neighbour", "icom")


def selected_checkpoint(run_dir: Path) -> Path:
    """best.pt (the best validation r of the run) when training wrote one, else the last."""
    best = run_dir / BEST_CHECKPOINT_NAME
    return best if best.is_file() else run_dir / CHECKPOINT_NAME


def score_validation(config: StemdlConfig, store_url: str, checkpoints: dict[str, Path]
                     ) -> dict[str, Any]:
    """Noise-free metrics of every model and baseline on the validation split: what the best
    arrangement is chosen by (the test split is not read here)."""
    device = scoring_device()
    train_split = load_split(store_url, config.loader, "train", seed=config.train.seed)
    val = load_split(store_url, config.loader, "validation", seed=config.train.seed)
    predictions = {name: predict(load_trained_model(path, device)[0], val.cbed)
                   for name, path in checkpoints.items()}
    models = list(predictions)
    predictions["mean_target"] = mean_target_prediction(train_split, len(val))
    predictions["nearest_neighbour"], _ = nearest_neighbour_prediction(train_split, val.cbed,
                                                                       device=device)
    predictions.update(strong_baselines(store_url, config.loader, "validation", train_split, val,
                                        config.simulation.sample_shape, None, config.train.seed))
    out: dict[str, Any] = {"models": {}, "baselines": {}, "samples": len(val),
                           "materials": sorted(set(val.material_id.tolist()))}
    for name, prediction in predictions.items():
        group = "models" if name in models else "baselines"
        out[group][name] = {NOISE_FREE: _score(prediction, val)["summary"]}
    return out


def run_all(config: StemdlConfig, out_dir: Path, *, n_workers: int | None = None,
            ranks: int | None = 1, doses: tuple[float, ...] = DEFAULT_DOSES_E_PER_A2,
            arrangements: tuple[str, ...] = ARRANGEMENTS) -> RunOutcome:
    """Simulate → verify → train each arrangement → score → report (module docstring).
    `ranks=None`: one per visible GPU, else 2 (`train.local_devices.default_ranks`)."""
    ranks = default_ranks() if ranks is None else ranks
    if ranks < 1:
        raise UsageError(f"ranks must be >= 1, got {ranks}")
    rank_backend(ranks)  # more ranks than GPUs is refused before the simulation, not after
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_url = str(out_dir / "store.zarr")
    log_path = out_dir / LOG_NAME
    clock = StageClock()
    with logs_to_file(log_path):
        log.info("stemdl run of %s into %s: %d rank(s), doses %s", config.name, out_dir, ranks,
                 doses)
        with clock.stage("simulate"):
            generation = generate(config, store_url, n_workers=n_workers, progress=True)
        if not generation.complete:
            log.error("%s", generation.summary())  # every failure, in run.log and on stderr
            raise IncompleteStoreError(
                f"{store_url} is incomplete: generation left shards undone ({log_path} "
                "lists which and why); run the same `stemdl run` again to finish it (it "
                "resumes)")
        print("verifying the store (checksums, NaN/inf, ranges)", file=sys.stderr)
        with clock.stage("verify"):
            verification = verify_store(store_url)
        if not verification.ok:
            log.error("%s", verification.summary())
            raise StoreVerificationError(
                f"{store_url} does not verify ({len(verification.problems)} problem(s); "
                f"{log_path} lists them); `stemdl verify {store_url} --repair` re-simulates them, "
                "then run the same `stemdl run` again")
        results: dict[str, TrainResult] = {}
        runs: dict[str, Path] = {}
        for arrangement in arrangements:
            run_dir = out_dir / f"train-{arrangement}"
            print(f"training {arrangement} on {ranks} rank(s)", file=sys.stderr)
            with clock.stage(f"train_{arrangement}"):
                results[arrangement] = train_arrangement(
                    with_arrangement(config, arrangement), store_url, run_dir, ranks, log_path)
            runs[arrangement] = run_dir
        checkpoints = {n: selected_checkpoint(d) for n, d in runs.items()}
        print("selecting on the validation materials", file=sys.stderr)
        with clock.stage("validate"):
            validation = score_validation(config, store_url, checkpoints)
        best = max(arrangements,
                   key=lambda n: validation["models"][n][NOISE_FREE][SELECTION_METRIC])
        print("scoring on the held-out test materials", file=sys.stderr)
        with clock.stage("score"):
            metrics, pictures = score_run(config, store_url, checkpoints, doses)
        with clock.stage("report"):
            curves = plot_curves(runs, out_dir / "curves.png")
            materials_png = plot_materials(pictures["test"], pictures["predictions"],
                                           list(arrangements), best, out_dir / "materials.png",
                                           units=metrics["target_units"])
    wall = clock.total()
    metrics.update({
        "config": config.name,
        "best_arrangement": best,
        "validation": validation,
        "selection": {
            "split": "validation", "metric": SELECTION_METRIC,
            "rule": "each arrangement's checkpoint: the validation pass with the highest "
                    "Pearson r during training (best.pt); the best arrangement: the higher "
                    "noise-free validation Pearson r of those checkpoints; the test split is "
                    "scored after both choices",
            "checkpoints": {name: {"file": path.name, "step": _step_of(results[name])}
                            for name, path in checkpoints.items()}},
        "doses": [dose_key(d) for d in doses],
        "dose_definition": "electrons per Å² spread uniformly over the scanned region; "
                           "Poisson noise on every test pattern (datasets/transforms.py)",
        "definitions": {
            "rel_l2": RELATIVE_L2_DEFINITION,
            "pearson_r": "correlation of prediction and truth over a sample's pixels, averaged",
            "ssim": "Wang et al. 2004, 11-px Gaussian window (σ 1.5), data range of the truth",
            "psnr_db": "10·log10(range(truth)² / MSE) per sample, averaged",
            "mse": "mean squared error of standardized maps",
            **PHYSICAL_DEFINITIONS,
        },
        "training": {name: {"ranks": r.world_size, "steps": r.steps,
                            "samples_per_s": r.samples_per_s, "wall_s": r.wall_s,
                            "parameters": r.model_cost.parameters,
                            "training_gflop_per_sample": r.model_cost.training_flops / 1e9}
                     for name, r in results.items()},
        "wall_s": wall,
    })
    metrics_json = out_dir / "metrics.json"
    metrics_json.write_text(json.dumps(to_json_value(metrics), indent=2))
    report = out_dir / "report.md"
    report.write_text(render_report(config, metrics, generation, verification, results,
                                    curves, materials_png))
    return RunOutcome(report, metrics_json, metrics, wall)


def _step_of(result: TrainResult) -> int | None:
    """The step of a run's best.pt (a float once read back from a checkpoint)."""
    step = result.best_validation.get("step")
    return None if step is None else int(step)
