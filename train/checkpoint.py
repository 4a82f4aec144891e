"""Checkpoints: written atomically, read as untrusted data, refused clearly when wrong.

Why atomic: a job killed while writing (wall-clock limit, node failure) must never leave a
half-written file where the last good checkpoint was. The state is written to a temporary
file in the same directory, flushed to disk, and renamed over the old one (`os.replace` is
atomic on POSIX), then the directory entry is flushed as well.

Why `weights_only=True`: `torch.load` otherwise unpickles arbitrary Python, so opening a
checkpoint from someone else would run their code. Everything stored here is tensors, numbers,
strings, lists and dicts (the config as its JSON dict), which the restricted unpickler accepts.

Contents (one dict): `format`, `version`, `model`, `optimizer`, `scaler`, `scheduler`, `ema`,
`step`, `epoch`, `batch_in_epoch` (the data position to continue from), `rng` (how randomness is
derived; see `train.loop`), `config` (the whole run config), `metrics` (latest validation).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from stemdl.configs import StemdlError

FORMAT = "stemdl-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "step", "epoch", "batch_in_epoch", "config")
CHECKPOINT_NAME = "checkpoint.pt"
# The checkpoint of the validation with the highest `SELECTION_METRIC` (`train.loop`): the one
# to score and to predict with. `checkpoint.pt` stays the last one (to resume from).
BEST_CHECKPOINT_NAME = "best.pt"
SELECTION_METRIC = "pearson_r"


class CheckpointError(StemdlError, ValueError):
    """A file that is not a usable stemdl checkpoint; the message says why."""


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write `state` to `path` atomically (tmp + fsync + os.replace); returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"format": FORMAT, "version": VERSION, **state}
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def _first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type when it has none (EOFError())."""
    lines = str(error).splitlines()
    return lines[0] if lines else type(error).__name__


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; `CheckpointError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    # `save_checkpoint` always writes torch's zip format; anything else (an empty file, a cut
    # copy, another format) is named for what it is before the unpickler says something
    # misleading about it.
    size = path.stat().st_size
    if size == 0 or not zipfile.is_zipfile(path):
        what = "empty (0 bytes)" if size == 0 else f"not a torch zip archive ({size} bytes)"
        raise CheckpointError(f"{path} is not a readable checkpoint: the file is {what}; it was "
                              "cut short or is not a stemdl checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain data, so it is refused "
            f"(loading it could run code): {_first_line(error)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a torch "
                              f"file?): {_first_line(error)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a stemdl checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this "
                              f"stemdl reads version {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}")
    return state
