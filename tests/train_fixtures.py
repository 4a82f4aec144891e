"""Helpers for the train/ tests: a real simulated store, configs, and training subprocesses.

The store is the `tiny` preset simulated for real (abTEM multislice through datasets.generate),
made once per test session and shared with the datasets/ tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from stemdl.configs import StemdlConfig, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]


def tiny_store(root: Path) -> Path:
    """The `tiny` preset (24 samples, 6 shards) simulated for real, once per session.

    The same store the datasets/ tests use (`datasets_fixtures.real_tiny_store`): one
    generation per test session instead of two. Train tests only read it.
    """
    from datasets_fixtures import real_tiny_store

    return real_tiny_store(root)


def tiny_config(model: dict[str, Any] | None = None, **train: Any) -> StemdlConfig:
    """The tiny preset with `model:` and `train:` fields overridden."""
    data = load_config("tiny").to_dict()
    data["model"].update(model or {})
    data["train"].update(train)
    return config_from_dict(data)


def write_config(config: StemdlConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def train_command(config_path: Path, store: Path, out_dir: Path, resume: bool = False
                  ) -> list[str]:
    """`python -c ...` that runs `train_main` as one process (no launcher variables)."""
    code = (
        "import logging, sys; from pathlib import Path; "
        "logging.basicConfig(level=logging.INFO); "
        "from configs import load_config; from train.loop import train_main; "
        f"print(train_main(load_config({str(config_path)!r}), {str(store)!r}, "
        f"Path({str(out_dir)!r}), resume={resume}).summary())"
    )
    return [sys.executable, "-c", code]


def clean_env() -> dict[str, str]:
    """This environment without launcher variables, so a child trains as a single process."""
    launcher = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_", "PMI_", "OMPI_", "JSM_", "LSB_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_training(config_path: Path, store: Path, out_dir: Path, resume: bool = False,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(train_command(config_path, store, out_dir, resume), cwd=REPO,
                            env=clean_env(), text=True, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"training failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result
