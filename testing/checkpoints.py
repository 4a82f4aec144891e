"""`untrained_checkpoint(config, path)`: a checkpoint of a freshly initialized model.

For tests of what reads checkpoints (predict, the refusals, the file formats), where what the
model learnt does not matter but the checkpoint must be exactly what training writes.
"""

from __future__ import annotations

from pathlib import Path

from stemdl.configs import StemdlConfig


def untrained_checkpoint(config: StemdlConfig, path: Path) -> Path:
    """Save an untrained model of `config` at `path` the way training saves one."""
    from stemdl.train.arrangements import build_model_from_config
    from stemdl.train.checkpoint import save_checkpoint

    model = build_model_from_config(config)
    return save_checkpoint({"model": model.state_dict(), "step": 0, "epoch": 0,
                            "batch_in_epoch": 0, "config": config.to_dict()}, path)
