"""GroupedAllreduce: clear, fast errors instead of hangs; compression; statistics."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from stemdl.train.allreduce_grouping import ModelMismatchError, cut_into_groups
from stemdl.train.grouped_allreduce import GroupedAllreduce
from stemdl.train.local_ranks import run_local_ranks


def _model(width: int, extra: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 2)]
    if extra:
        layers.append(nn.Linear(2, 2))
    return nn.Sequential(*layers)


def mismatches(rank: int, world: int) -> list[tuple[str, float]]:
    """Three ways for rank 1 to differ; every rank must raise, quickly, and say where."""
    outcomes = []
    cases = [
        {"model": _model(8 if rank != 1 else 9), "kwargs": {}},
        {"model": _model(8, extra=rank == 1), "kwargs": {}},
        {"model": _model(8), "kwargs": {"group_bytes": 4096 if rank != 1 else 8192}},
    ]
    for case in cases:
        start = time.monotonic()
        try:
            GroupedAllreduce(case["model"], **case["kwargs"])
            outcomes.append(("no error", time.monotonic() - start))
        except ModelMismatchError as error:
            outcomes.append((str(error), time.monotonic() - start))
        dist.barrier()
    return outcomes


def test_model_mismatch_fails_on_every_rank_within_seconds() -> None:
    start = time.monotonic()
    per_rank = run_local_ranks(mismatches, 2, timeout_s=20)
    assert time.monotonic() - start < 60
    for outcomes in per_rank:
        (shape, shape_s), (extra, extra_s), (setting, setting_s) = outcomes
        assert "'0.weight'" in shape and "rank 1" in shape and "[9, 4]" in shape, shape
        assert "'3.weight'" in extra and "rank 1" in extra, extra
        assert "group_bytes" in setting and "8192" in setting, setting
        assert max(shape_s, extra_s, setting_s) < 5


def compressed(rank: int, world: int, compression: str) -> tuple[list[torch.Tensor], list[
        torch.Tensor], int, int]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    plain = GroupedAllreduce(model, group_bytes=1024)
    half = GroupedAllreduce(model, group_bytes=1024, compression=compression)
    x = torch.randn(8, 16, generator=torch.Generator().manual_seed(rank))
    grads = []
    for reducer in (plain, half):
        with half.no_sync() if reducer is plain else plain.no_sync():
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
        reducer.synchronize()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads[0], grads[1], plain.stats.bytes_per_step, half.stats.bytes_per_step


@pytest.mark.parametrize("compression", ["fp16", "bf16"])
def test_half_precision_compression_halves_bytes_and_keeps_the_average(compression: str) -> None:
    tolerance = {"fp16": 2e-3, "bf16": 2e-2}[compression]
    for exact, approx, full_bytes, half_bytes in run_local_ranks(
            compressed, 2, (compression,), timeout_s=30):
        assert half_bytes * 2 == full_bytes
        for a, b in zip(exact, approx, strict=True):
            assert b.dtype == torch.float32
            assert torch.allclose(a, b, rtol=tolerance, atol=tolerance * a.abs().max().item())
            assert not torch.equal(a, b) or a.abs().max() == 0  # the wire really was 16-bit


def misuse(rank: int, world: int) -> str:
    model = _model(8)
    reducer = GroupedAllreduce(model)
    x = torch.randn(3, 4)
    model(x).sum().backward()
    reducer.synchronize()  # learns the grouping
    model(x).sum().backward()
    try:
        model(x).sum().backward()  # forgot synchronize()
    except RuntimeError as error:
        return str(error)
    return "no error"


def test_backward_twice_without_synchronize_is_a_clear_error() -> None:
    message = run_local_ranks(misuse, 1, timeout_s=30)[0]
    assert "twice since the last synchronize()" in message and "rank 0" in message


def test_grouping_by_bytes_and_by_count() -> None:
    params = [torch.zeros(n) for n in (10, 10, 10, 10, 30)] + [torch.zeros(5, dtype=torch.float64)]
    order = [4, 3, 5, 2, 1, 0]
    by_bytes = cut_into_groups(order, params, group_bytes=80, num_groups=None)
    assert [g.members for g in by_bytes] == [(4,), (5,), (3, 2), (1, 0)]
    assert by_bytes[2].offsets == (0, 10) and by_bytes[2].numel == 20
    by_count = cut_into_groups(order, params, group_bytes=1, num_groups=2)
    assert [g.members for g in by_count] == [(4, 3), (5,), (2, 1, 0)]
    assert {g.dtype for g in by_count} == {torch.float32, torch.float64}


def test_one_process_without_a_process_group_is_a_no_op() -> None:
    model = _model(8)
    reducer = GroupedAllreduce(model)
    model(torch.randn(2, 4)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    reducer.synchronize()
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters(), strict=True))
    assert reducer.stats.steps == 1 and reducer.world_size == 1


def _sum_of_ranks(rank: int, world: int) -> int:
    value = torch.tensor([float(rank)])
    dist.all_reduce(value)
    return int(value.item())


def test_a_port_taken_before_rank_0_listens_is_retried_on_another(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`free_port` picks a port that is free then; by the time rank 0 listens, another
    process may hold it. That run is stopped at once and the ranks start on a new port."""
    import socket

    from stemdl.train import local_ranks

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        real, picked = local_ranks.free_port, []

        def pick() -> int:
            picked.append(taken.getsockname()[1] if not picked else real())
            return picked[-1]

        monkeypatch.setattr(local_ranks, "free_port", pick)
        began = time.monotonic()
        assert run_local_ranks(_sum_of_ranks, 2, timeout_s=60) == [1, 1]
        assert time.monotonic() - began < 45  # not the 60 s rendezvous timeout
        assert len(picked) == 2, picked  # the taken port was tried, and given up
