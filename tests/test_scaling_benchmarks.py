"""The scaling study's measuring sticks are fair and its model is tied to measurement.

1. `benchmarks.coordinator.CoordinatorAllreduce` (rank 0 negotiates every cycle) computes the
   same gradients as `GroupedAllreduce` on real gloo ranks, so comparing their step times
   compares orchestration only.
2. The α–β allreduce term of `benchmarks.scaling_model`, fitted on an allreduce sweep, predicts
   a *different* measurement (the per-tensor allreduces of a 100-tensor model, sizes not in the
   sweep) on the same ranks, before the model is used to extrapolate; and the recorded
   2–8-rank step times of `benchmarks/control_plane.json` are reproduced by the same term.
3. The scaling model's projection and the data-wait reader behave as documented.
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import scaling_model
from benchmarks.control_plane import DeepMLP, allreduce_sweep, collectives_alone
from benchmarks.coordinator import CoordinatorAllreduce
from stemdl.train.grouped_allreduce import GroupedAllreduce
from stemdl.train.local_ranks import run_local_ranks

REPO = Path(__file__).resolve().parents[1]

RESULTS_JSON = REPO / "benchmarks" / "control_plane.json"
# Held-out prediction on a live, shared 2-core machine: generous, but a model that got the
# per-collective latency or the bandwidth wrong by 2x fails it.
LIVE_TOLERANCE = 0.5
# Recorded runs (benchmarks/control_plane.json, 2-8 ranks): see RESULTS.md for the figures.
RECORDED_TOLERANCE = 0.40
# Fit sizes for the live check: none is a size of DeepMLP's tensors (512 B and 64 KiB).
HELD_OUT_SWEEP_BYTES = (256, 4096, 16384, 262144, 1048576)


# ---------------------------------------------------------------------------- 1. fairness


class ConvStack(nn.Module):
    """Conv, GroupNorm, transposed conv (the FC-DenseNet's layer kinds), ~20 tensors."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        layers: list[nn.Module] = [nn.Conv2d(3, 8, 3, padding=1)]
        for _ in range(4):
            layers += [nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)]
        layers += [nn.ConvTranspose2d(8, 2, 2, stride=2)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _same_gradients(rank: int, world: int) -> list[str]:
    torch.set_num_threads(1)
    base = ConvStack()
    ours, theirs = base, copy.deepcopy(base)
    grouped = GroupedAllreduce(ours, group_bytes=512)
    coordinator = CoordinatorAllreduce(theirs, group_bytes=512, cycle_time_s=0.001)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (ours, theirs)]
    problems = []
    for step in range(4):
        gen = torch.Generator().manual_seed(100 * step + rank)
        x, y = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 2, 16, 16, generator=gen)
        F.mse_loss(ours(x), y).backward()
        grouped.synchronize()
        F.mse_loss(theirs(x), y).backward()
        coordinator.synchronize()
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            if not torch.allclose(p.grad, q.grad, rtol=1e-6, atol=1e-8):
                diff = (p.grad - q.grad).abs().max().item()
                problems.append(f"rank {rank} step {step} {name}: max diff {diff:.3g}")
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    stats = coordinator.snapshot()
    coordinator.close()
    if stats.groups != grouped.stats.groups or stats.groups < 3:
        problems.append(f"groups differ: coordinator {stats.groups}, grouped {grouped.stats.groups}")
    if stats.cycles < 3:  # the three cached steps each negotiated at least once
        problems.append(f"coordinator negotiated only {stats.cycles} cycles")
    return problems


def test_coordinator_computes_the_same_gradients_as_grouped_allreduce() -> None:
    per_rank = run_local_ranks(_same_gradients, 2, timeout_s=60)
    problems = [p for rank in per_rank for p in rank]
    assert not problems, "\n".join(problems[:10])


# ---------------------------------------------------------------------------- 2. the model


def _fit_then_predict(rank: int, world: int) -> dict[str, object]:
    """Fit α–β on a sweep; measure the 100 per-tensor allreduces of DeepMLP. Interleaved in
    three rounds, so that load from other work on the machine hits both alike."""
    torch.set_num_threads(1)
    sizes = [p.numel() * 4 for p in DeepMLP().parameters()]
    sweeps, measured = [], []
    for _ in range(3):
        sweeps.append(allreduce_sweep(reps=3, sizes=HELD_OUT_SWEEP_BYTES))
        measured.append(collectives_alone(sizes, blocking=True, reps=1))
    sweep = {str(k): statistics.median(s[k] for s in sweeps) for k in sweeps[0]}
    return {"sweep": sweep, "sizes": sizes, "measured": statistics.median(measured)}


@pytest.mark.parametrize("world", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_allreduce_term_predicts_a_held_out_measurement(world: int) -> None:
    """Fit and held-out measurement are taken twice at most: a burst of load from another job
    can hit the sweep and not the measurement (seen once, with a second test suite running on
    the 2 cores). A wrong model misses both times; a disturbed measurement rarely twice."""
    outcomes = []
    for _ in range(2):
        per_rank = run_local_ranks(_fit_then_predict, world, timeout_s=90)
        sweep = {k: max(r["sweep"][k] for r in per_rank) for k in per_rank[0]["sweep"]}
        fit = scaling_model.fit_link(sweep)
        predicted = scaling_model.allreduce_term(per_rank[0]["sizes"], fit)
        measured = max(r["measured"] for r in per_rank)
        error = abs(predicted - measured) / measured
        outcomes.append(f"predicted {predicted * 1e3:.1f} ms, measured {measured * 1e3:.1f} ms "
                        f"(error {error:.0%}); fit {fit}")
        if error <= LIVE_TOLERANCE:
            return
    pytest.fail(f"{world} ranks: the α–β term missed 100 per-tensor allreduces twice: "
                + "; ".join(outcomes))


def test_recorded_step_times_are_reproduced_by_the_allreduce_term() -> None:
    if not RESULTS_JSON.exists():
        pytest.skip("run benchmarks/control_plane.py first")
    runs = json.loads(RESULTS_JSON.read_text())["runs"]
    worlds = {run["meta"]["world"] for run in runs}
    assert {2, 4, 8} <= worlds, f"recorded worlds {sorted(worlds)}"
    checks = scaling_model.validate_recorded(runs)
    assert checks, "no recorded run to check"
    bad = [c for c in checks if abs(c.error) > RECORDED_TOLERANCE]
    assert not bad, "\n".join(str(c) for c in bad)


# ---------------------------------------------------------------------------- 3. projections


def test_projection_orders_the_schemes_as_the_argument_says() -> None:
    """At 27,600 GPUs a coordinator costs more than the cache, even a 1 µs-per-rank one;
    fp16 on the wire helps; efficiency does not rise with GPUs; one GPU is the reference."""
    workload = scaling_model.paper_workload()
    machine = scaling_model.SummitLike()
    software = scaling_model.SoftwareCosts()

    def eff(p: int, sw: scaling_model.SoftwareCosts = software, **kw: object) -> float:
        return scaling_model.efficiency(p, workload, machine, sw, **kw)

    cached = eff(27_600, scheme="cached")
    fast_coordinator = replace(software, coordinator_per_rank_s=1e-6)
    assert 0.0 < eff(27_600, scheme="coordinator") < eff(27_600, fast_coordinator,
                                                         scheme="coordinator") < cached <= 1.0
    assert eff(27_600, scheme="cached", fp16=True) > cached
    curve = [eff(p, scheme="cached") for p in (1, 6, 96, 1_536, 27_600)]
    assert curve == sorted(curve, reverse=True), curve
    assert abs(curve[0] - 1.0) < 1e-12
    # The straggler term alone brings the cached scheme from ~0.97 to the paper's ~0.93.
    assert eff(27_600, scheme="cached", jitter_cv=0.01) < cached - 0.03


def test_data_wait_reads_a_run_folder(tmp_path: Path) -> None:
    rows = [{"kind": "train", "step": 10, "data_s": 0.01, "compute_s": 0.15,
             "allreduce_wait_s": 0.04},
            {"kind": "validation", "step": 10, "mse": 1.0},
            {"kind": "train", "step": 30, "data_s": 0.0, "compute_s": 0.2,
             "allreduce_wait_s": 0.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = subprocess.run([sys.executable, "-m", "benchmarks.data_wait",
                             str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                            check=False)
    assert result.returncode == 0, result.stderr
    # 10 steps at 0.01 of 0.2 s + 20 steps at 0 of 0.2 s: 0.1 / 6.0 = 1.67 %
    assert "data wait 1.67% of step time" in result.stdout, result.stdout
