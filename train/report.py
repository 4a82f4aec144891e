"""`stemdl run`: simulate, verify, train both input arrangements, evaluate, write a report.

Everything on one machine: the store is generated on a local Dask cluster, each arrangement
(`channels`, the paper's; `scan_pixels`, see `train.arrangements`) is trained as one process,
and both are scored on the held-out test materials. The report (`report.md` next to two
pictures) compares them. Re-running the same command resumes: generation skips finished
shards and training continues from each run's checkpoint (or finds it finished).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from train.evaluate import evaluate_main, load_trained_model
from train.loop import TrainResult, train_main
from train.metrics import METRIC_NAMES
from train.run_log import read_metrics

if TYPE_CHECKING:
    from configs import StemdlConfig

log = logging.getLogger(__name__)

ARRANGEMENTS = ("channels", "scan_pixels")
PICTURE_SAMPLES = 4


def _with_arrangement(config: StemdlConfig, arrangement: str) -> StemdlConfig:
    from configs import config_from_dict

    data = config.to_dict()
    data["model"]["arrangement"] = arrangement
    return config_from_dict(data, source=f"{config.name} ({arrangement})")


def plot_curves(runs: dict[str, Path], png: Path) -> Path:
    """Training loss and validation MSE against step, one line per arrangement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, run_dir in runs.items():
        train = read_metrics(run_dir, "train")
        val = read_metrics(run_dir, "validation")
        left.plot([r["step"] for r in train], [r["loss"] for r in train], label=name)
        right.plot([r["step"] for r in val], [r["mse"] for r in val], marker="o", label=name)
    left.set(title="training loss", xlabel="step")
    right.set(title="validation MSE (held-out materials)", xlabel="step")
    for ax in (left, right):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


@torch.no_grad()
def plot_predictions(checkpoints: dict[str, Path], store_url: str, png: Path,
                     split: str = "test") -> Path:
    """Rows: test samples. Columns: mean CBED pattern, target, each arrangement's prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datasets.loader import make_dataloader

    device = torch.device("cpu")
    models = {name: load_trained_model(path, device) for name, path in checkpoints.items()}
    config = next(iter(models.values()))[1]
    loader = make_dataloader(store_url, config.loader, split=split,
                             batch_size=PICTURE_SAMPLES, shuffle=False, drop_last=False)
    batch = next(iter(loader))
    predictions = {name: model(batch["cbed"]) for name, (model, _) in models.items()}
    rows = batch["cbed"].shape[0]
    columns = 2 + len(predictions)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows), squeeze=False)
    for row in range(rows):
        target = batch["potential"][row, 0]
        panels = [("mean CBED pattern", batch["cbed"][row].mean(dim=0), None),
                  ("target potential", target, (target.min(), target.max()))]
        panels += [(name, pred[row, 0], (target.min(), target.max()))
                   for name, pred in predictions.items()]
        for col, (title, image, limits) in enumerate(panels):
            ax = axes[row, col]
            vmin, vmax = limits if limits is not None else (None, None)
            ax.imshow(image.numpy(), cmap="magma" if col == 0 else "viridis", vmin=vmin,
                      vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(f"sample {int(batch['index'][row])}", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _table(metrics: dict[str, dict[str, float]], results: dict[str, TrainResult]) -> list[str]:
    names = list(metrics)
    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for metric in (*METRIC_NAMES, "samples"):
        lines.append(f"| test {metric} | "
                     + " | ".join(f"{metrics[n][metric]:.4g}" for n in names) + " |")
    lines.append("| parameters | " + " | ".join(
        f"{results[n].model_cost.parameters:,}" for n in names) + " |")
    lines.append("| GFLOP per training sample | " + " | ".join(
        f"{results[n].model_cost.training_flops / 1e9:.3g}" for n in names) + " |")
    lines.append("| training samples/s | " + " | ".join(
        f"{results[n].samples_per_s:.1f}" for n in names) + " |")
    return lines


def run_all(config: StemdlConfig, out_dir: Path, n_workers: int | None = None,
            arrangements: tuple[str, ...] = ARRANGEMENTS) -> Path:
    """Simulate → verify → train each arrangement → evaluate → report; returns report.md."""
    from datasets.generate import generate
    from datasets.verify import verify_store

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = str(out_dir / "store.zarr")
    generation = generate(config, store, n_workers=n_workers, progress=True)
    if not generation.complete:
        raise RuntimeError(f"the store is incomplete; run again to finish it:\n"
                           f"{generation.summary()}")
    verification = verify_store(store)
    if not verification.ok:
        raise RuntimeError(f"the store does not verify:\n{verification.summary()}")

    results: dict[str, TrainResult] = {}
    test_metrics: dict[str, dict[str, float]] = {}
    runs: dict[str, Path] = {}
    for arrangement in arrangements:
        run_dir = out_dir / f"train-{arrangement}"
        log.info("training the %s arrangement into %s", arrangement, run_dir)
        results[arrangement] = train_main(_with_arrangement(config, arrangement), store,
                                          run_dir, resume=True)
        test_metrics[arrangement] = evaluate_main(run_dir / "checkpoint.pt", store, "test")
        runs[arrangement] = run_dir
    curves = plot_curves(runs, out_dir / "curves.png")
    pictures = plot_predictions({n: d / "checkpoint.pt" for n, d in runs.items()}, store,
                                out_dir / "predictions.png")
    report = _render(config, generation, verification, results, test_metrics, curves, pictures)
    path = out_dir / "report.md"
    path.write_text(report)
    return path


def _render(config: StemdlConfig, generation: Any, verification: Any,
            results: dict[str, TrainResult], metrics: dict[str, dict[str, float]],
            curves: Path, pictures: Path) -> str:
    best = min(metrics, key=lambda n: metrics[n]["mse"])
    lines = [
        f"# stemdl run: `{config.name}`",
        "",
        "CBED stacks simulated with abTEM multislice, stored as a sharded Zarr v3 store, "
        "verified, and inverted into projected potential by an FC-DenseNet. The test split "
        "holds materials that training never saw.",
        "",
        "## Data",
        "",
        "```",
        generation.summary(),
        verification.summary(),
        "```",
        "",
        "## Test metrics by input arrangement",
        "",
        *_table(metrics, results),
        "",
        f"Lowest test MSE: `{best}`. `channels` feeds the P patterns as input channels (the "
        "paper); `scan_pixels` makes each probe position a pixel whose channels are its pooled "
        "pattern.",
        "",
        f"![training curves]({curves.name})",
        "",
        f"![predictions on test samples]({pictures.name})",
        "",
        "## Training runs",
        "",
        *[f"- `{name}`: {result.summary()}" for name, result in results.items()],
        "",
    ]
    return "\n".join(lines)
