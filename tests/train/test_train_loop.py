"""End to end on real ranks: 2 gloo processes stage the tiny store, train, validate, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from stemdl.configs import config_from_dict
from stemdl.train.checkpoint import load_checkpoint
from stemdl.train.evaluate import evaluate_main
from stemdl.train.local_ranks import run_local_ranks
from stemdl.train.loop import train_main
from stemdl.train.run_log import read_metrics

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_store) -> Path:
    return tiny_store


def train_on_rank(rank: int, world: int, config: dict[str, Any], store: str, out: str,
                  stage: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    result = train_main(config_from_dict(config), store, Path(out), stage_dir=Path(stage))
    return {"initial": result.initial_validation, "final": result.validation,
            "steps": result.steps, "world": result.world_size, "loss": result.final_train_loss,
            "summary": result.summary()}


@pytest.mark.slow
def test_two_gloo_ranks_stage_train_and_lower_the_validation_loss(store: Path,
                                                                  tmp_path: Path, tiny_config) -> None:
    config = tiny_config(epochs=20, lr=0.01, validate_every=40, checkpoint_every=40)
    out, stage = tmp_path / "run", tmp_path / "node-local"
    results = run_local_ranks(train_on_rank, 2, (config.to_dict(), str(store), str(out),
                                                 str(stage)), timeout_s=300)
    first, second = results
    assert first["world"] == 2 and first["steps"] > 10
    # Global numbers: every rank reports the same (allreduced) metrics.
    assert first["final"] == second["final"] and first["loss"] == second["loss"]
    before, after = first["initial"]["mse"], first["final"]["mse"]
    assert after < 0.9 * before, first["summary"]
    assert first["final"]["pearson_r"] > first["initial"]["pearson_r"] + 0.1
    assert first["final"]["samples"] > 0

    # Staged once for the node, as a store of its own that holds every shard (one node).
    assert (stage / "zarr.json").is_file()
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["step"] == first["steps"] and checkpoint["world_size"] == 2
    validation = read_metrics(out, "validation")
    assert [row["step"] for row in validation] == [0, 40, 80]  # from the untrained model on
    assert list((out / "tb").glob("events.out.tfevents.*"))

    # The saved model, evaluated alone on the shared store, scores what training reported.
    again = evaluate_main(out / "checkpoint.pt", str(store), split="validation")
    assert again["samples"] == first["final"]["samples"]
    assert again["mse"] == pytest.approx(first["final"]["mse"], rel=1e-4)
    test = evaluate_main(out / "checkpoint.pt", str(store), split="test")
    assert test["samples"] > 0 and set(test) >= {"mse", "psnr_db", "ssim", "rel_l2", "pearson_r"}


def test_scan_pixels_arrangement_trains_and_evaluates(store: Path, tmp_path: Path, tiny_config) -> None:
    config = tiny_config(model={"arrangement": "scan_pixels", "scan_pixel_pool": 4},
                            max_steps=3, validate_at_start=False)
    result = train_main(config, str(store), tmp_path / "run")
    assert result.steps == 3 and result.validation["samples"] > 0
    metrics = evaluate_main(tmp_path / "run" / "checkpoint.pt", str(store), split="test")
    assert metrics["samples"] > 0


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_epochs_with_loader_workers_that_drop_short_batches(store: Path, tmp_path: Path, tiny_config) -> None:
    """With loader workers each dropping its own short batch, an epoch can hold fewer than
    samples // batch_size batches, and how many changes with the epoch's shard order; the
    trainer must take the fewest any epoch gives and finish every epoch (no StopIteration)."""
    data = tiny_config(batch_size=3, epochs=4, validate_at_start=False).to_dict()
    data["loader"].update(num_workers=2, shuffle_buffer=2)
    config = config_from_dict(data)
    from stemdl.datasets.loader import ShardStream

    stream = ShardStream(str(store), config.loader, split="train", seed=config.train.seed,
                         batch_size=3, drop_last=True)
    per_epoch = [stream.batches_per_epoch(epoch) for epoch in range(4)]
    assert min(per_epoch) < stream.num_samples() // 3  # the case this test is about
    result = train_main(config, str(store), tmp_path / "run")
    assert result.steps == result.total_steps == 4 * min(per_epoch)


@pytest.mark.slow
def test_stemdl_train_under_torchrun(store: Path, tmp_path: Path, clean_env, tiny_config, write_config) -> None:
    """The user's launch: `torchrun --nproc-per-node 2 stemdl train CONFIG --data STORE
    --stage-dir DIR` (here `python -m torch.distributed.run ... pipeline.py`): both ranks
    read the launcher's variables, train together, and the job prints one summary."""
    import subprocess
    import sys

    config = write_config(tiny_config(max_steps=4, validate_at_start=False,
                                            checkpoint_every=2), tmp_path / "tiny.yaml")
    out, stage = tmp_path / "run", tmp_path / "node-local"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", str(REPO / "pipeline.py"), "train", str(config),
               "--data", str(store), "--stage-dir", str(stage), "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, env=clean_env(), text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("trained 4/4 steps on 2 rank(s)") == 1, result.stdout
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["step"] == 4 and checkpoint["world_size"] == 2
    assert (stage / "zarr.json").is_file()
