"""Fixtures of the train/ tests: training as a child process (one rank, no launcher)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _train_command(config_path: Path, store: Path, out_dir: Path, resume: bool = False
                   ) -> list[str]:
    code = (
        "import logging, sys; from pathlib import Path; "
        "logging.basicConfig(level=logging.INFO); "
        "from stemdl.configs import load_config; from stemdl.train.loop import train_main; "
        f"print(train_main(load_config({str(config_path)!r}), {str(store)!r}, "
        f"Path({str(out_dir)!r}), resume={resume}).summary())"
    )
    return [sys.executable, "-c", code]


@pytest.fixture(scope="session")
def train_command() -> Callable[..., list[str]]:
    """`train_command(config_path, store, out_dir, resume=False)`: `python -c ...` that runs
    `train_main` as one process."""
    return _train_command


@pytest.fixture(scope="session")
def run_training(clean_env: Callable[[], dict[str, str]]
                 ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_training(config_path, store, out_dir, resume=False, timeout=300)`: train in a
    child process without launcher variables; raises with its stderr if it fails."""

    def run(config_path: Path, store: Path, out_dir: Path, resume: bool = False,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(_train_command(config_path, store, out_dir, resume), cwd=REPO,
                                env=clean_env(), text=True, capture_output=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"training failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    return run
