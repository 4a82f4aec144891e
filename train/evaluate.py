"""`evaluate_main(checkpoint, store_url, split)`: metrics of a trained model on one split.

The model is rebuilt from the config stored in the checkpoint (as a JSON dict, validated again
by `configs.config_from_dict`), and the weights are read with `weights_only=True`, so a
checkpoint from elsewhere cannot run code. When the checkpoint has EMA weights, those are
evaluated (they are what validation reported during training).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from stemdl.configs import ConfigError, StemdlConfig, config_from_dict
from stemdl.datasets.loader import make_dataloader
from stemdl.datasets.physical_scale import thickness_by_index
from stemdl.train.arrangements import build_model
from stemdl.train.checkpoint import CheckpointError, load_checkpoint
from stemdl.train.loop import EmptySplitError
from stemdl.train.precision import resolve_precision
from stemdl.train.store_fit import check_store_fits
from stemdl.train.validation import evaluate_split

log = logging.getLogger(__name__)


def load_trained_model(checkpoint: Path, device: torch.device) -> tuple[nn.Module, StemdlConfig]:
    """The model of a checkpoint (EMA weights when present) in eval mode, and its config."""
    state = load_checkpoint(Path(checkpoint), map_location=device)
    try:
        config = config_from_dict(state["config"], source=f"{checkpoint} (stored config)")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    model = build_model(config.model, config.simulation.sample_shape,
                        physical=not config.loader.standardize_targets).to(device)
    weights = state.get("ema") or state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{checkpoint}: weights do not fit the stored model config: "
                              f"{(str(error).splitlines() or [type(error).__name__])[0]}") from None
    return model.eval(), config


def evaluate_main(checkpoint: Path, store_url: str, split: str = "test",
                  device: str | torch.device | None = None,
                  allow_partial: bool = False) -> dict[str, float]:
    """MSE, PSNR, SSIM, relative L2, Pearson r (means over the split) and the sample count;
    for a model in V·Å also `train.physical_metrics` (relative L2 and MAE in V·Å, thickness
    MAE in Å and %), and `units` ('V·Å' or 'standardized').

    The store must fit the checkpoint's model (`StoreShapeError` naming both shapes) and be
    complete (unless `allow_partial`, which is then logged)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_trained_model(checkpoint, device)
    check_store_fits(str(store_url), config.simulation.sample_shape, f"checkpoint {checkpoint}")
    loader = make_dataloader(str(store_url), config.loader, split=split,
                             batch_size=config.train.batch_size, shuffle=False, drop_last=False,
                             seed=config.train.seed, allow_partial=allow_partial)
    note = loader.dataset.partial_note  # type: ignore[attr-defined]
    if note:
        log.warning("%s", note)
    if loader.dataset.num_samples() == 0:  # type: ignore[attr-defined]
        raise EmptySplitError(f"{store_url} has no samples of split {split!r}"
                         + (" in the shards that are done" if note else ""))
    precision = resolve_precision(config.train.precision, device)
    thickness = None
    if getattr(model, "has_thickness", False):
        thickness = torch.from_numpy(thickness_by_index(str(store_url)))
    metrics = evaluate_split(model, loader, device, precision, thickness)
    metrics["units"] = model.units  # type: ignore[assignment]
    return metrics
