"""Scoring on held-out materials: a trained model against two baselines, per sample and material.

Why baselines: a Pearson r means little alone. A model that has learnt nothing about the
specimen still scores above zero if it predicts the average look of a target, and a model that
only recognizes the training material closest to the input would score well on a test set of
near-copies. So every model is reported beside

* `mean_target`: the mean (standardized) training target, the same map for every sample;
* `nearest_neighbour`: the target of the training sample whose normalized CBED stack is
  closest (Euclidean distance over the whole stack, as the network sees it).

Both use the same loader normalization as the model, on the same test samples. The metrics are
`train.metrics.per_sample_metrics` on standardized targets (per sample and channel:
zero mean, unit variance), so relative L2 = ‖pred − true‖ / ‖true − mean(true)‖ per sample.

At a finite electron dose (`dose_e_per_a2`), the test patterns get Poisson noise
(`datasets.transforms`, seeded per sample, the same noise for every predictor); the training
references of the nearest-neighbour baseline stay noise-free.

This loads whole splits into memory: meant for the sizes `stemdl run` trains on (hundreds of
samples), not for a paper-scale store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stemdl.configs.dataset import LoaderConfig
from stemdl.datasets.loader import make_dataloader
from stemdl.datasets.records import read_fields
from stemdl.datasets.store import open_stemdl_store
from stemdl.train.loop import EmptySplitError
from stemdl.train.metrics import METRIC_NAMES, per_sample_metrics

NOISE_FREE = "noise_free"  # the key of the metrics without electron-dose noise


def dose_key(dose: float | None) -> str:
    """The metrics key of a dose: 'noise_free' or e.g. 'dose_1e+05_e_per_a2'."""
    return NOISE_FREE if dose is None else f"dose_{dose:.0e}_e_per_a2"


def dose_label(key: str) -> str:
    """For people: 'dose_1e+05_e_per_a2' → '1e+05 e/Å²'."""
    return key.removeprefix("dose_").replace("_e_per_a2", " e/Å²")
RELATIVE_L2_DEFINITION = ("‖pred − true‖ / ‖true − mean(true)‖ per sample (targets standardized "
                          "per sample and channel), averaged over samples")


@dataclass(frozen=True)
class SplitArrays:
    """Every sample of one split as the network sees it (normalized), with its material."""

    cbed: torch.Tensor  # (N, P, H, W) float32
    potential: torch.Tensor  # (N, C, H', W') float32
    index: np.ndarray  # (N,) global sample index
    material_id: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return int(self.cbed.shape[0])


def load_split(store_url: str, loader: LoaderConfig, split: str,
               dose_e_per_a2: float | None = None, seed: int = 0) -> SplitArrays:
    """All samples of `split`, normalized as in training (no augmentation), in index order;
    with `dose_e_per_a2`, with Poisson noise at that dose."""
    changes: dict[str, object] = {"augment": "none", "num_workers": 0, "decode_threads": 0}
    if dose_e_per_a2 is not None:
        changes.update(dose_e_per_a2=dose_e_per_a2, noise="always")
    cfg = loader.model_copy(update=changes)
    batches = list(make_dataloader(store_url, cfg, split=split, batch_size=64, shuffle=False,
                                   drop_last=False, seed=seed))
    if not batches:
        raise EmptySplitError(f"{store_url} has no samples of split {split!r}")
    cbed = torch.cat([b["cbed"] for b in batches])
    potential = torch.cat([b["potential"] for b in batches])
    index = torch.cat([torch.as_tensor(b["index"]) for b in batches]).numpy()
    order = np.argsort(index, kind="stable")
    index = index[order]
    store = open_stemdl_store(store_url)
    materials = read_fields(store, ["material_id"], index)["material_id"]
    return SplitArrays(cbed[order], potential[order], index, np.asarray(materials, dtype=str))


@torch.no_grad()
def predict(model: nn.Module, cbed: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """The model's predictions for `cbed` (on the CPU), computed on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(cbed[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, cbed.shape[0], batch_size)])


def mean_target_prediction(train: SplitArrays, count: int) -> torch.Tensor:
    """The mean training target, repeated `count` times."""
    mean = train.potential.mean(dim=0, keepdim=True)
    return mean.expand(count, *mean.shape[1:]).clone()


def nearest_neighbour_prediction(train: SplitArrays, cbed: torch.Tensor, chunk: int = 64,
                                 device: torch.device | str = "cpu"
                                 ) -> tuple[torch.Tensor, np.ndarray]:
    """For each stack of `cbed`, the target of the closest training stack, and which one.
    The distances (float64) are computed on `device`."""
    references = train.cbed.reshape(len(train), -1).to(device, torch.float64)
    nearest = []
    for start in range(0, cbed.shape[0], chunk):
        queries = cbed[start:start + chunk].reshape(-1, references.shape[1])
        nearest.append(torch.cdist(queries.to(device, torch.float64), references)
                       .argmin(dim=1).cpu())
    chosen = torch.cat(nearest)
    return train.potential[chosen].clone(), chosen.numpy()


def sample_metrics(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """Every metric for every sample, as float64 arrays."""
    values = per_sample_metrics(prediction, target)
    return {name: values[name].double().numpy() for name in METRIC_NAMES}


def summarize(per_sample: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over samples (and the count)."""
    out = {name: float(np.mean(values)) for name, values in per_sample.items()}
    out["samples"] = len(next(iter(per_sample.values())))
    return out


def by_material(per_sample: dict[str, np.ndarray], materials: np.ndarray
                ) -> dict[str, dict[str, float]]:
    """Means per material id (sorted), with each material's sample count."""
    result = {}
    for material in sorted(set(materials.tolist())):
        mask = materials == material
        result[material] = summarize({k: v[mask] for k, v in per_sample.items()})
    return result
