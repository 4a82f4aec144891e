"""`stemdl run`'s device choices with a faked CUDA device count: ranks, backend, scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stemdl.configs import UsageError, load_config
from stemdl.end_to_end import run_all
from stemdl.train.local_devices import (
    CPU_DEFAULT_RANKS,
    default_ranks,
    rank_backend,
    scoring_device,
)


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch):
    """`fake_gpus(n)`: torch reports n CUDA devices (0: no CUDA) for the rest of the test."""

    def fake(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return fake


def test_without_a_gpu_two_gloo_ranks_and_the_cpu(fake_gpus) -> None:
    fake_gpus(0)
    assert default_ranks() == CPU_DEFAULT_RANKS == 2
    assert rank_backend(2) == "gloo" and rank_backend(8) == "gloo"
    assert scoring_device() == torch.device("cpu")


@pytest.mark.parametrize("gpus", [1, 4])
def test_one_nccl_rank_per_gpu_and_scoring_on_the_first(fake_gpus, gpus: int) -> None:
    fake_gpus(gpus)
    assert default_ranks() == gpus  # one GPU: training in this process, no spawned ranks
    assert rank_backend(gpus) == "nccl" and rank_backend(1) == "nccl"
    assert scoring_device() == torch.device("cuda", 0)
    with pytest.raises(UsageError, match=f"{gpus + 1} ranks but {gpus} visible GPU"):
        rank_backend(gpus + 1)


def test_run_refuses_two_ranks_on_one_gpu_before_simulating(fake_gpus, tmp_path: Path) -> None:
    fake_gpus(1)
    with pytest.raises(UsageError, match="2 ranks but 1 visible GPU"):
        run_all(load_config("tiny"), tmp_path / "run", ranks=2)
    assert not (tmp_path / "run" / "store.zarr").exists()
