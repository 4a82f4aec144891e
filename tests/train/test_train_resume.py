"""Kill a training process (SIGKILL), resume it, and get the uninterrupted run's loss curve.

CPU, fp32, one process: the resumed run must repeat the lost steps bit for bit, so the per-step
training losses and the final weights are compared for exact equality, not closeness.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from stemdl.configs import config_from_dict
from stemdl.train.checkpoint import load_checkpoint
from stemdl.train.loop import train_main
from stemdl.train.run_log import read_metrics

REPO = Path(__file__).resolve().parents[2]

SETTINGS = {"epochs": 3, "log_every": 1, "checkpoint_every": 3, "validate_every": 1000,
            "validate_at_start": False}
MODEL = {"dropout": 0.2}  # so the resumed run must also reproduce the random state
KILL_AFTER_STEP = 7


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_store) -> Path:
    return tiny_store


def _logged_steps(out_dir: Path) -> list[int]:
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        if row["kind"] == "train":
            steps.append(row["step"])
    return steps


def _kill_mid_run(train_command, clean_env, config_path: Path, store: Path, out_dir: Path) -> int:
    """Start training, SIGKILL it once step KILL_AFTER_STEP is logged; the last step logged."""
    proc = subprocess.Popen(train_command(config_path, store, out_dir), cwd=REPO,
                            env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while max(_logged_steps(out_dir), default=0) < KILL_AFTER_STEP:
            if proc.poll() is not None:
                raise RuntimeError(f"training exited ({proc.returncode}) before it was killed")
            if time.monotonic() > deadline:
                raise TimeoutError("training did not reach the kill step in time")
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    return max(_logged_steps(out_dir))


@pytest.mark.slow
def test_killed_and_resumed_run_matches_the_uninterrupted_run(store: Path, tmp_path: Path, run_training, tiny_config, write_config, clean_env, train_command) -> None:
    config_path = write_config(tiny_config(model=MODEL, **SETTINGS),
                                  tmp_path / "config.yaml")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_training(config_path, store, straight)
    reference = read_metrics(straight, "train")
    total = reference[-1]["step"]

    last_before_kill = _kill_mid_run(train_command, clean_env, config_path, store, killed)
    assert last_before_kill < total, "the run finished before it could be killed"
    checkpoint_step = load_checkpoint(killed / "checkpoint.pt")["step"]
    assert 0 < checkpoint_step <= last_before_kill
    assert last_before_kill - checkpoint_step < 3 + 2  # at most checkpoint_every steps lost (+race)

    run_training(config_path, store, killed, resume=True)
    resumed = read_metrics(killed, "train")
    assert [row["step"] for row in resumed] == [row["step"] for row in reference]
    for mine, theirs in zip(resumed, reference, strict=True):
        assert mine["loss"] == theirs["loss"], f"step {mine['step']}: {mine} vs {theirs}"
        assert mine["lr"] == theirs["lr"]

    final_a = load_checkpoint(straight / "checkpoint.pt")
    final_b = load_checkpoint(killed / "checkpoint.pt")
    assert final_a["step"] == final_b["step"] == total
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name
    for key in ("epoch", "batch_in_epoch"):
        assert final_a[key] == final_b[key]


def test_an_existing_run_is_not_overwritten_without_resume(store: Path, tmp_path: Path, tiny_config) -> None:
    config = tiny_config(max_steps=2, validate_at_start=False)
    result = train_main(config, str(store), tmp_path / "run")
    assert result.steps == 2 and (tmp_path / "run" / "checkpoint.pt").is_file()
    with pytest.raises(FileExistsError, match="exists: pass --resume"):
        train_main(config, str(store), tmp_path / "run")
    other = tiny_config(max_steps=3, validate_at_start=False).to_dict()
    other["model"]["growth_rate"] = 5
    with pytest.raises(ValueError, match="another `model:` section"):
        train_main(config_from_dict(other), str(store), tmp_path / "run", resume=True)
    again = train_main(tiny_config(max_steps=3, validate_at_start=False), str(store),
                       tmp_path / "run", resume=True)
    assert (again.resumed_from_step, again.steps) == (2, 3)
