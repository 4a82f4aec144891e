"""The pictures and the markdown report of `stemdl run` (`stemdl.end_to_end`).

`report.md` leads with the test metrics of both arrangements and every baseline (noise-free and
at each dose), says by how much the best model beats each baseline and how it was chosen (on
the validation split, whose figures follow), then shows, per held-out
material, its metrics and one sample's truth, predictions and error (`materials.png`), the
training curves (`curves.png`), and where the time went.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemdl.configs import StemdlConfig
from stemdl.datasets.generate import GenerationReport
from stemdl.datasets.verify import VerifyReport
from stemdl.train.loop import TrainResult
from stemdl.train.metrics import METRIC_NAMES
from stemdl.train.run_log import read_metrics
from stemdl.train.scoring import NOISE_FREE, SplitArrays, dose_label


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


def plot_materials(test: SplitArrays, predictions: dict[str, torch.Tensor],
                   arrangements: list[str], best: str, png: Path, units: str = "") -> Path:
    """One row per held-out material (its first test sample): mean CBED pattern, truth, each
    arrangement's prediction, the nearest-neighbour baseline, and the best model's error;
    with `units` (e.g. 'V·Å'), colour bars of the truth (shared by the predictions) and of the
    error in those units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    materials = sorted(set(test.material_id.tolist()))
    rows = [int(np.flatnonzero(test.material_id == m)[0]) for m in materials]
    names = [*arrangements, *(n for n in ("aligned_nearest_neighbour", "icom")
                              if n in predictions)]
    columns = 3 + len(names)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.1 * columns, 2.1 * len(rows)),
                             squeeze=False)
    for r, (row, material) in enumerate(zip(rows, materials, strict=True)):
        truth = test.potential[row, 0]
        limits = (float(truth.min()), float(truth.max()))
        error = predictions[best][row, 0] - truth
        span = float(error.abs().max()) or 1.0
        panels = [("mean CBED", test.cbed[row].mean(dim=0), "magma", None),
                  ("truth", truth, "viridis", limits)]
        panels += [(name, predictions[name][row, 0], "viridis", limits) for name in names]
        panels.append((f"error ({best})", error, "RdBu_r", (-span, span)))
        for c, (title, image, cmap, lim) in enumerate(panels):
            ax = axes[r, c]
            vmin, vmax = lim if lim is not None else (None, None)
            shown = ax.imshow(image.numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
            if units and title in ("truth", f"error ({best})"):
                bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
                bar.ax.tick_params(labelsize=5)
                bar.set_label(units, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(material, fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _metric_table(metrics: dict[str, Any], key: str) -> list[str]:
    """One row per model and baseline of `metrics` (the test figures, or `validation`)."""
    rows = {**{f"model `{n}`": v for n, v in metrics["models"].items()},
            **{f"baseline `{n}`": v for n, v in metrics["baselines"].items()}}
    lines = ["| | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---|" * len(METRIC_NAMES)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[key][m]:.4g}" for m in METRIC_NAMES)
                     + " |")
    return lines


def _margins(metrics: dict[str, Any]) -> list[str]:
    best = metrics["best_arrangement"]
    model = metrics["models"][best][NOISE_FREE]
    lines = []
    for name, values in metrics["baselines"].items():
        base = values[NOISE_FREE]
        lines.append(f"- `{best}` vs `{name}`: Pearson r {model['pearson_r']:.3f} vs "
                     f"{base['pearson_r']:.3f} ({model['pearson_r'] - base['pearson_r']:+.3f}); "
                     f"relative L2 {model['rel_l2']:.3f} vs {base['rel_l2']:.3f} "
                     f"({model['rel_l2'] / max(base['rel_l2'], 1e-12):.2f}×)")
    return lines


def _per_material(metrics: dict[str, Any]) -> list[str]:
    best = metrics["best_arrangement"]
    per = metrics["per_material"]
    baselines = [n for n in metrics["baselines"] if n in per]
    lines = [f"| material | samples | `{best}` r | `{best}` rel. L2 | `{best}` SSIM | "
             + " | ".join(f"{n} r" for n in baselines) + " |",
             "|---|---|---|---|---|" + "---|" * len(baselines)]
    for material, values in per[best].items():
        lines.append(f"| `{material}` | {values['samples']} | {values['pearson_r']:.3f} | "
                     f"{values['rel_l2']:.3f} | {values['ssim']:.3f} | "
                     + " | ".join(f"{per[n][material]['pearson_r']:.3f}" for n in baselines)
                     + " |")
    return lines


def _selection(metrics: dict[str, Any]) -> list[str]:
    """How the checkpoints and the best arrangement were chosen, and the validation figures."""
    if "validation" not in metrics:
        return []
    val = metrics["validation"]
    chosen = metrics["selection"]["checkpoints"]
    lines = ["## Selection, on the validation split", "",
             f"{metrics['selection']['rule']}. Validation: {val['samples']} samples of "
             f"{len(val['materials'])} materials that neither training nor the test split "
             "holds. Checkpoints: "
             + ", ".join(f"`{n}` {c['file']} (step {c['step']})" for n, c in chosen.items())
             + ".", "", *_metric_table(val, NOISE_FREE), ""]
    return lines


def _physical(metrics: dict[str, Any]) -> list[str]:
    """The section on V·Å and thickness (issue 20), when the models predict physical units."""
    if metrics.get("target_units") != "V·Å":
        return []
    names = ("rel_l2_v_a", "mae_v_a", "thickness_mae_a", "thickness_mae_pct")
    definitions = metrics["definitions"]
    lines = ["## Physical units (V·Å, Å)", "",
             "Maps in V·Å (one scale for the dataset, from the training split) and the "
             "specimen thickness per window. " + "; ".join(
                 f"`{n}`: {definitions[n]}" for n in names if n in definitions) + ".", ""]
    rows = {**{f"model `{n}`": v for n, v in metrics["models"].items()},
            **{f"baseline `{n}`": v for n, v in metrics["baselines"].items()}}
    for key in (NOISE_FREE, *metrics["doses"]):
        label = "noise-free" if key == NOISE_FREE else dose_label(key)
        lines += [f"{label}:", "", "| | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for name, values in rows.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{values[key][m]:.4g}" if m in values[key] else "–" for m in names) + " |")
        lines.append("")
    best = metrics["best_arrangement"]
    lines += [f"Per held-out material (`{best}`, noise-free):", "",
              "| material | samples | rel. L2 V·Å | MAE V·Å | thickness MAE Å | thickness MAE % |",
              "|---|---|---|---|---|---|"]
    for material, values in metrics["per_material"][best].items():
        lines.append(f"| `{material}` | {values['samples']} | "
                     + " | ".join(f"{values[m]:.3g}" if m in values else "–" for m in names)
                     + " |")
    lines.append("")
    uncertainty = metrics.get("uncertainty")
    if uncertainty:
        lines += ["Uncertainty: " + uncertainty["definition"] + ".", "",
                  "| model | k | validation coverage | test coverage | test coverage (k = 1) | "
                  "thickness test coverage |", "|---|---|---|---|---|---|"]
        for name, entry in uncertainty.items():
            if name == "definition":
                continue
            thickness = entry.get("thickness_test_coverage_2sigma")
            lines.append(f"| `{name}` | {entry['sigma_factor']:.3g} | "
                         f"{entry['validation_coverage_2sigma']:.3f} | "
                         f"{entry['test_coverage_2sigma']:.3f} | "
                         f"{entry['test_coverage_2sigma_raw']:.3f} | "
                         + (f"{thickness:.3f}" if thickness is not None else "–") + " |")
        lines.append("")
    return lines


def render_report(config: StemdlConfig, metrics: dict[str, Any], generation: GenerationReport,
                  verification: VerifyReport, results: dict[str, TrainResult], curves: Path,
                  materials: Path) -> str:
    """report.md of a `stemdl run` (see the module docstring)."""
    best = metrics["best_arrangement"]
    lines = [
        f"# stemdl run: `{config.name}`",
        "",
        "CBED stacks simulated with abTEM multislice, stored as a sharded Zarr v3 store, "
        "verified, and inverted into projected potential by an FC-DenseNet. The test split "
        f"holds {len(metrics['test_materials'])} materials ({metrics['test_samples']} samples) "
        "whose compositions training never saw.",
        "",
        "## Test metrics, noise-free",
        "",
        *_metric_table(metrics, NOISE_FREE),
        "",
        f"Best arrangement: `{best}`. `channels` feeds the P patterns as input channels (the "
        "paper); `scan_pixels` makes each probe position a pixel whose channels are its pooled "
        "pattern. Relative L2 is " + metrics["definitions"]["rel_l2"] + ".",
        "",
        *_margins(metrics),
        "",
        *_selection(metrics),
        *_physical(metrics),
    ]
    for key in metrics["doses"]:
        lines += [f"## Test metrics at {dose_label(key)} (Poisson noise)", "",
                  *_metric_table(metrics, key), ""]
    lines += [
        "## Per held-out material",
        "",
        *_per_material(metrics),
        "",
        f"![truth, predictions and error per test material]({materials.name})",
        "",
        "## Training",
        "",
        f"![training curves]({curves.name})",
        "",
        *[f"- `{name}`: {result.summary()}" for name, result in results.items()],
        "",
        "## Data",
        "",
        "```",
        generation.summary(),
        verification.summary(),
        "```",
        "",
        "## Wall time",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {stage} | {seconds:.1f} |" for stage, seconds in metrics["wall_s"].items()],
        "",
    ]
    return "\n".join(lines)
