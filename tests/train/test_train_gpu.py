"""On a GPU (skipped without CUDA): NCCL, bf16 autocast, fp16 with dynamic loss scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from stemdl.configs import config_from_dict
from stemdl.train.checkpoint import load_checkpoint
from stemdl.train.evaluate import evaluate_main
from stemdl.train.grouped_allreduce import GroupedAllreduce
from stemdl.train.local_ranks import run_local_ranks
from stemdl.train.loop import train_main

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_store) -> Path:
    return tiny_store


def train_on_gpu(rank: int, world: int, config: dict[str, Any], store: str, out: str
                 ) -> dict[str, Any]:
    result = train_main(config_from_dict(config), store, Path(out))
    return {"device": result.device, "precision": result.precision, "steps": result.steps,
            "initial": result.initial_validation, "final": result.validation,
            "backend": torch.distributed.get_backend()}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_one_gpu_nccl_run(store: Path, tmp_path: Path, precision: str, tiny_config) -> None:
    config = tiny_config(precision=precision, epochs=20, lr=0.01, validate_every=1000,
                            checkpoint_every=1000)
    result = run_local_ranks(train_on_gpu, 1, (config.to_dict(), str(store), str(tmp_path)),
                             backend="nccl", timeout_s=300)[0]
    assert (result["device"], result["precision"], result["backend"]) == (
        "cuda:0", precision, "nccl")
    assert result["final"]["mse"] < result["initial"]["mse"]
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    if precision == "fp16":
        assert checkpoint["scaler"]["scale"] > 0  # dynamic loss scaling was on
    metrics = evaluate_main(tmp_path / "checkpoint.pt", str(store), split="test", device="cuda")
    assert metrics["samples"] > 0


def reduce_on_gpu(rank: int, world: int, compression: str | None) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8)).cuda()
    reducer = GroupedAllreduce(model, group_bytes=4096, compression=compression)
    reference = None
    for _ in range(3):
        model(torch.randn(16, 64, device="cuda")).square().mean().backward()
        reference = [p.grad.clone() for p in model.parameters()]
        reducer.synchronize()
        worst = max((p.grad - r).abs().max().item()
                    for p, r in zip(model.parameters(), reference, strict=True))
        model.zero_grad(set_to_none=True)
    assert reducer.stats.groups > 1
    return worst


@pytest.mark.parametrize("compression", [None, "fp16", "bf16"])
def test_grouped_allreduce_on_nccl(compression: str | None) -> None:
    worst = run_local_ranks(reduce_on_gpu, 1, (compression,), backend="nccl", timeout_s=120)[0]
    assert worst <= (0 if compression is None else 1e-2)
