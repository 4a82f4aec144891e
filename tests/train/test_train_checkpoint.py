"""Checkpoints: atomic writes, untrusted reads, clear refusals; schedule, LARC, metrics."""

from __future__ import annotations

import itertools
import math
import os
import pickle
from pathlib import Path

import pytest
import torch

from stemdl.configs.training import TrainConfig
from stemdl.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stemdl.train.lr_schedule import lr_factor
from stemdl.train.metrics import MetricSums, per_sample_metrics
from stemdl.train.optim import apply_larc

STATE = {"model": {"w": torch.arange(4.0)}, "step": 3, "epoch": 1, "batch_in_epoch": 2,
         "config": {"name": "x", "train": {"lr": 0.1}}}


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(STATE, tmp_path / "ckpt.pt")
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], STATE["model"]["w"])
    assert (state["step"], state["config"]) == (3, STATE["config"])
    assert not [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]  # no temporary left


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(STATE, tmp_path / "ckpt.pt")
    before = path.read_bytes()

    def dies_half_way(obj: object, handle: object) -> None:
        handle.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # the job is killed mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**STATE, "step": 4}, path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(STATE, tmp_path / "ckpt.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /dev/null",))


def test_code_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "stemdl-checkpoint", "version": 1, "model": Payload()}, path)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"model": {}}, "not a stemdl checkpoint"),
        ({"format": "stemdl-checkpoint", "version": 99}, "version 99"),
        ({"format": "stemdl-checkpoint", "version": 1, "model": {}}, "lacks step"),
    ],
)
def test_wrong_content_is_named(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "c.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_not_a_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_warmup_then_cosine_and_step_decay() -> None:
    cosine = TrainConfig(lr=1.0, warmup_steps=4, decay="cosine")
    factors = [lr_factor(s, 14, cosine) for s in range(14)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10)))
    step = TrainConfig(warmup_steps=0, decay="step", decay_step_every=3)
    assert [lr_factor(s, 100, step) for s in (0, 2, 3, 6, 9)] == [1, 1, 0.5, 0.25, 0.125]
    assert lr_factor(50, 60, TrainConfig(warmup_steps=0, decay="none")) == 1.0


def test_larc_limits_each_layers_step_to_a_trust_fraction_of_its_norm() -> None:
    big = torch.nn.Parameter(torch.ones(10))  # |w| = sqrt(10)
    small = torch.nn.Parameter(torch.ones(10))
    big.grad = torch.full((10,), 100.0)  # would move the layer far more than trust·|w|
    small.grad = torch.full((10,), 1e-6)  # tiny step: left alone (factor capped at 1)
    optimizer = torch.optim.SGD([big, small], lr=0.1)
    apply_larc(optimizer, trust=0.01)
    step_norm = 0.1 * big.grad.norm()
    assert step_norm == pytest.approx(0.01 * math.sqrt(10), rel=1e-4)
    assert torch.allclose(small.grad, torch.full((10,), 1e-6))


def test_metrics_of_a_perfect_and_of_a_useless_prediction() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(3, 2, 16, 16, generator=gen)
    perfect = per_sample_metrics(target, target)
    assert torch.allclose(perfect["mse"], torch.zeros(3))
    assert torch.allclose(perfect["ssim"], torch.ones(3), atol=1e-5)
    assert torch.allclose(perfect["pearson_r"], torch.ones(3), atol=1e-5)
    assert (perfect["psnr_db"] > 100).all()
    noise = torch.randn(3, 2, 16, 16, generator=gen)
    useless = per_sample_metrics(noise, target)
    assert (useless["ssim"].abs() < 0.3).all() and (useless["pearson_r"].abs() < 0.3).all()
    assert torch.allclose(useless["rel_l2"], (noise - target).flatten(1).norm(dim=1)
                          / target.flatten(1).norm(dim=1))


def test_metric_sums_weight_every_sample_equally() -> None:
    target = torch.randn(5, 1, 8, 8)
    pred = target + 0.1 * torch.randn(5, 1, 8, 8)
    split = MetricSums(torch.device("cpu"))
    split.add(pred[:2], target[:2])
    split.add(pred[2:], target[2:])
    whole = per_sample_metrics(pred, target)
    means = split.means()
    assert means["samples"] == 5
    for name, values in whole.items():
        assert means[name] == pytest.approx(values.double().mean().item(), rel=1e-6)
