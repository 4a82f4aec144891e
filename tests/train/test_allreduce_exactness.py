"""GroupedAllreduce against PyTorch DDP and against one process on the concatenated batch.

Every scenario runs a few optimizer steps on real gloo ranks (2 and 3 processes). At every step,
the gradients after `synchronize()` must equal DDP's gradients on the same data (allclose,
fp32), and the reference gradient of one process that sees every rank's data; the weights after
the optimizer step must agree too. Step 0 exercises the schedule being learned; later steps the
cached schedule with launches during backward. One spawn per world size runs every scenario; the
tests below read their verdicts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stemdl.train.grouped_allreduce import GroupedAllreduce
from stemdl.train.local_ranks import run_local_ranks

BATCH = 4
IN_FEATURES = 6


# ---------------------------------------------------------------------------- models


def random_mlp(seed: int) -> nn.Module:
    """Depth, widths and activations drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    depth = int(torch.randint(2, 6, (1,), generator=gen))
    widths = [IN_FEATURES] + [int(w) for w in torch.randint(3, 24, (depth,), generator=gen)]
    acts = [nn.Tanh, nn.ReLU, nn.GELU, nn.SiLU]
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bool(i % 2 == 0)))
        layers.append(acts[int(torch.randint(0, 4, (1,), generator=gen))]())
    layers.append(nn.Linear(widths[-1], 3))
    torch.manual_seed(seed)
    for module in layers:
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    return nn.Sequential(*layers)


class SmallConvNet(nn.Module):
    """Conv + GroupNorm + transposed conv: the layer kinds of the FC-DenseNet."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        c = 2 * int(torch.randint(2, 6, (1,), generator=gen))
        self.body = nn.Sequential(
            nn.Conv2d(2, c, 3, padding=1), nn.GroupNorm(2, c), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(c, 3, 3, stride=2, padding=1, output_padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(x.shape[0], 2, 3, 1).expand(-1, -1, -1, 4)).mean(dim=(2, 3))


class Branchy(nn.Module):
    """Unused parameters: `never` on every rank, `a`/`b` by rank parity, `rare` on rank 0 at
    step 1 only (unused everywhere the step before, so no group waits for it)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Linear(IN_FEATURES, 16)
        self.a = nn.Linear(16, 3)
        self.b = nn.Linear(16, 3)
        self.never = nn.Linear(16, 3)
        self.rare = nn.Linear(16, 3)
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, rank: int, step: int) -> torch.Tensor:
        h = torch.tanh(self.trunk(x))
        out = self.a(h) if rank % 2 == 0 else self.b(h)
        if step == 1 and rank == 0:  # unused everywhere at step 0, arrives late at step 1
            out = out + self.rare(h)
        return self.head(torch.relu(out))


class LateGate(nn.Module):
    """`gate` scales the input on rank 1 at step 2 only. No rank used it at step 1, so its group
    does not wait for it; its gradient arrives after the trunk's, i.e. after the group was packed:
    the late-gradient (correction) path."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.gate = nn.Parameter(torch.ones(IN_FEATURES))
        self.trunk = nn.Linear(IN_FEATURES, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor, rank: int, step: int) -> torch.Tensor:
        if step == 2 and rank == 1:
            x = x * self.gate
        return self.head(torch.tanh(self.trunk(x)))


class Tied(nn.Module):
    """Shared parameters: one Linear applied twice and a weight tied to a transposed use."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Linear(IN_FEATURES, 8, bias=False)
        self.shared = nn.Linear(8, 8)
        self.alias = self.shared  # registered twice under two names
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.shared(self.embed(x)))
        h = torch.tanh(self.alias(h))
        back = h @ self.embed.weight  # tied: embed.weight used a second time, transposed
        return self.out(h) + back[:, :3]


# ---------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    build: Callable[[int], nn.Module]
    branchy: bool = False  # forward takes (x, rank, step)
    micro_batches: int = 1
    reducer: dict[str, Any] = field(default_factory=dict)
    steps: int = 3
    corrections: bool = False  # must take the late-gradient path at least once


SCENARIOS = [
    *(Scenario(f"mlp{s}", lambda seed, s=s: random_mlp(100 + s),
               reducer={"group_bytes": [1, 64, 2**20][s % 3]}) for s in range(3)),
    Scenario("mlp_num_groups", lambda seed: random_mlp(7), reducer={"num_groups": 3}),
    Scenario("conv", lambda seed: SmallConvNet(5), reducer={"group_bytes": 256}),
    Scenario("unused_per_param_groups", Branchy, branchy=True, steps=4,
             reducer={"group_bytes": 1}, corrections=True),
    Scenario("unused_one_group", Branchy, branchy=True, steps=4, reducer={"group_bytes": 2**30}),
    Scenario("late_gradient", LateGate, branchy=True, steps=4, reducer={"group_bytes": 2**30},
             corrections=True),
    Scenario("unused_two_groups", Branchy, branchy=True, steps=4, reducer={"num_groups": 2}),
    Scenario("shared", Tied, reducer={"group_bytes": 128}),
    Scenario("accumulation", lambda seed: random_mlp(11), micro_batches=3,
             reducer={"group_bytes": 64}),
    Scenario("accumulation_unused", Branchy, branchy=True, micro_batches=2, steps=4,
             reducer={"group_bytes": 64}),
]


def batch(rank: int, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * step + 10 * rank + micro)
    return torch.randn(BATCH, IN_FEATURES, generator=gen), torch.randn(BATCH, 3, generator=gen)


def loss_of(model: nn.Module, scenario: Scenario, rank: int, step: int, micro: int) -> torch.Tensor:
    x, y = batch(rank, step, micro)
    out = model(x, rank, step) if scenario.branchy else model(x)
    return F.mse_loss(out, y)


def reference_gradients(model: nn.Module, scenario: Scenario, world: int, step: int) -> None:
    """One process, every rank's data: the concatenated batch, or the mean of per-rank losses
    when the forward depends on the rank (the same function: equal per-rank batch sizes)."""
    for micro in range(scenario.micro_batches):
        if scenario.branchy:
            loss = sum(loss_of(model, scenario, r, step, micro) for r in range(world)) / world
        else:
            xs, ys = zip(*(batch(r, step, micro) for r in range(world)), strict=True)
            loss = F.mse_loss(model(torch.cat(xs)), torch.cat(ys))
        loss.backward()


def compare(tag: str, ours: nn.Module, other: nn.Module, what: str) -> list[str]:
    problems = []
    for (name, p), (_, q) in zip(ours.named_parameters(), other.named_parameters(), strict=True):
        a, b = (p.grad, q.grad) if what == "grad" else (p.detach(), q.detach())
        if (a is None) != (b is None):
            problems.append(f"{tag} {what} {name}: ours {'None' if a is None else 'set'}, "
                            f"other {'None' if b is None else 'set'}")
        elif a is not None and not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
            problems.append(f"{tag} {what} {name}: max diff {(a - b).abs().max().item():.3g}")
    return problems


def run_scenario(scenario: Scenario, rank: int, world: int,
                 ddp_group: dist.ProcessGroup) -> list[str]:
    base = scenario.build(0)
    ours, ddp_model, single = base, copy.deepcopy(base), copy.deepcopy(base)
    reducer = GroupedAllreduce(ours, **scenario.reducer)
    # DDP gets a process group of its own: two reducers on one group would interleave their
    # collectives differently on different ranks.
    ddp = DistributedDataParallel(ddp_model, process_group=ddp_group,
                                  find_unused_parameters=scenario.branchy)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
                  for m in (ours, ddp_model, single)]
    problems: list[str] = []
    for step in range(scenario.steps):
        for micro in range(scenario.micro_batches):
            last = micro == scenario.micro_batches - 1
            with reducer.no_sync() if not last else _nothing():
                loss_of(ours, scenario, rank, step, micro).backward()
            with ddp.no_sync() if not last else _nothing():
                loss_of(ddp, scenario, rank, step, micro).backward()
        reducer.synchronize()
        reference_gradients(single, scenario, world, step)
        tag = f"{scenario.name} rank {rank} step {step}"
        problems += compare(tag, ours, ddp_model, "grad")
        problems += compare(tag + " (vs single process)", ours, single, "grad")
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        problems += compare(tag, ours, ddp_model, "weights")
    stats = reducer.snapshot()
    if stats.steps != scenario.steps or stats.groups < 1:
        problems.append(f"{scenario.name}: stats {stats}")
    if scenario.corrections and stats.corrections == 0:
        problems.append(f"{scenario.name}: the late-gradient path was not taken: {stats}")
    reducer.remove()
    return problems


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def all_scenarios(rank: int, world: int) -> dict[str, list[str]]:
    torch.set_num_threads(1)
    verdicts = {}
    ddp_group = dist.new_group(backend="gloo")
    for scenario in SCENARIOS:
        verdicts[scenario.name] = run_scenario(scenario, rank, world, ddp_group)
        dist.barrier()
    return verdicts


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def verdicts(request: pytest.FixtureRequest) -> dict[str, list[str]]:
    per_rank = run_local_ranks(all_scenarios, request.param, timeout_s=120)
    merged: dict[str, list[str]] = {}
    for rank_verdicts in per_rank:
        for name, problems in rank_verdicts.items():
            merged.setdefault(name, []).extend(problems)
    return merged


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_matches_ddp_and_single_process(verdicts: dict[str, list[str]], name: str) -> None:
    problems = verdicts[name]
    assert not problems, "\n".join(problems[:10])
