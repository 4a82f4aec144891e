"""α–β–γ model of stemdl's data-parallel step, fitted here and projected to 27,600 V100 GPUs.

    python -m benchmarks.scaling_model            # table to stdout, plot, JSON of the fit
    python -m benchmarks.scaling_model --markdown # the tables as Markdown (for RESULTS.md)

Why: on a 2-core machine the paper's claim (0.93 weak-scaling efficiency on 27,600 GPUs,
thanks to a response cache instead of a coordinator and to graph-aware grouping) cannot be
measured, only argued. This script makes the argument explicit and checkable: every term is
a formula with named constants, the software constants are fitted to what
`benchmarks/control_plane.py` measured on real gloo ranks (and the tests check that the
fitted allreduce term reproduces those measurements before anything is extrapolated), the
hardware constants are published figures for Summit, each with its source below.

The step (weak scaling, `b` samples per GPU, the `paper` preset's FC-DenseNet)
-------------------------------------------------------------------------------
compute      T_f = b·F_fwd / R,  T_b = b·(F_train − F_fwd) / R   (F from train.flops)
ready times  gradient of a layer is ready when backward has done the FLOPs of every layer
             after it (layers visited in reverse forward order, 2·forward FLOPs each)
messages     graph-aware groups (the preset's group_bytes, cut in ready order, as
             train.allreduce_grouping does) or one message per tensor; fp16 halves the bytes
allreduce    t(n, P) = σ + intra-node ring on NVLink + inter-node tree/ring on InfiniBand
               intra  = 2(g−1)·α_nvl + 2(g−1)/g · n / B_nvl              (g GPUs a node)
               inter  = 2·log2(N)·α_ib  (tree)  or  2(N−1)·α_ib  (ring)
                        + 2(N−1)/N · n / B_ib                               (N nodes)
               γ      = 3n / B_hbm  (reduction reads two operands, writes one)
             σ is the software cost of issuing one collective, fitted here.
orchestration
  cached       groups launch in a fixed order as soon as ready; after backward one
               bit-vector MIN-allreduce (n_tensors + n_groups bytes): t_agree = t(that, P)
  coordinator  a cycle every max(cycle_time, t_cycle(P)); a message ready at time r goes at
               the first cycle that starts after r, once the cycle's negotiation is done:
               t_cycle(P) = c0 + c1·(P − 1) (rank 0 receives and answers P − 1 ready lists)
               + 2·log2(P)·α_ib; c0, c1 fitted here (gloo + Python), or c1 = 1 µs (an
               optimistic C++/MPI coordinator: one small-message overhead per rank)
straggler    a synchronous step ends with the slowest of P GPUs; with per-GPU step jitter of
             coefficient of variation cv, E[max] ≈ T·(1 + cv·√(2·ln P)) (Gaussian tail).
             cv is NOT measured for Summit: shown as 0 and as 1 %.
efficiency   E(P) = T_step(1) / T_step(P)

The data path (`--data`): bytes per node from `datasets.storage_estimate` (paper preset),
staged once from the parallel file system (PFS) to node-local NVMe vs read from the PFS at
every step; the per-node read rate a step needs vs what NVMe (and DRAM, if the node's share
fits) delivers.

Sources for the hardware constants (Summit, OLCF; V100)
------------------------------------------------------
- Node: 6 V100 (16 GB HBM2), 2 POWER9, 512 GB DDR4, 1.6 TB NVMe burst buffer; 4,608 nodes;
  each POWER9–GPU and GPU–GPU connection in a socket is NVLink 2.0 of 2 bricks × 25 GB/s
  per direction = 50 GB/s; nodes on a non-blocking fat tree of dual-rail Mellanox EDR
  InfiniBand, 2 × 100 Gb/s = 25 GB/s per node per direction. OLCF Summit User Guide,
  https://docs.olcf.ornl.gov/systems/summit_user_guide.html ("System Overview", "Node
  Architecture", "Burst Buffer"); network: Vazhkudai et al. / IBM J. Res. Dev. 64 (2020)
  "The high-speed networks of the Summit and Sierra supercomputers".
- PFS: Alpine (IBM Spectrum Scale / GPFS), 250 PB, ~2.5 TB/s aggregate sequential I/O:
  OLCF Summit User Guide, "Alpine IBM Spectrum Scale Filesystem".
- NVMe: Samsung PM1725a, ~6 GB/s sequential read, ~2.1 GB/s write (Samsung datasheet;
  the OLCF guide quotes the 1.6 TB capacity). Treat the rates as ±20 %.
- V100 SXM2: 125 TFLOP/s fp16 tensor-core peak, 900 GB/s HBM2: NVIDIA Tesla V100 data
  sheet. The *achieved* rate R used here is the paper's own: 2.15 EFLOP/s (fp16, peak) on
  27,600 GPUs = 77.9 TFLOP/s per GPU (Laanait et al. 2019, arXiv:1909.11150, abstract).
- Latencies: EDR InfiniBand end-to-end MPI small-message latency ~1 µs (Mellanox EDR
  ConnectX-5 product brief: "sub-600 ns" adapter latency, plus a switch hop); NCCL adds
  software per step of a collective: α_ib = 5 µs and α_nvl = 2 µs are *assumptions* of this
  model (order of NCCL's per-step LL-protocol latency), not measurements. NCCL ≥ 2.4 uses
  double binary trees across nodes (NVIDIA, "Massively Scale Your Deep Learning Training
  with NCCL 2.4", 2019, which reports runs on Summit), hence `tree` as the default.
- Horovod: cycle time 5 ms and 64 MiB fusion buffer by default until v0.21.0 (then 1 ms
  and 128 MiB; horovod/horovod#2468, docs/tensor-fusion.rst).
The figures above were read from the cited documents' public text where the search tool
returned them (OLCF node/burst-buffer/NVLink/EDR figures, Horovod defaults, the paper's
abstract); the NVMe rates, V100 datasheet and NCCL blog are quoted from those documents as
commonly cited and were not re-read for this file.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MEASURED_JSON = HERE / "control_plane.json"
FIT_JSON = HERE / "scaling_fit.json"
PLOT_PNG = HERE / "scaling_model.png"
PAPER_GPUS = 27_600
PAPER_EFFICIENCY = 0.93


# ============================================================================ fitted here


@dataclass(frozen=True)
class LinkFit:
    """t(n) = latency_s + n · s_per_byte for one allreduce of n bytes, at one world size."""

    latency_s: float
    s_per_byte: float

    def time(self, nbytes: float) -> float:
        return self.latency_s + nbytes * self.s_per_byte


def fit_link(sweep: dict[Any, float]) -> LinkFit:
    """Least squares in *relative* error, so 256 B and 4 MiB messages weigh alike."""
    sizes = np.array([float(k) for k in sweep])
    times = np.array([float(v) for v in sweep.values()])
    design = np.stack([1.0 / times, sizes / times], axis=1)
    (latency, per_byte), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
    return LinkFit(float(max(latency, 0.0)), float(max(per_byte, 0.0)))


def allreduce_term(sizes_bytes: Sequence[int], fit: LinkFit) -> float:
    """Seconds for these allreduces one after the other (no overlap)."""
    return sum(fit.time(n) for n in sizes_bytes)


@dataclass(frozen=True)
class Check:
    """A recorded step time against the model's `local + allreduce term`."""

    world: int
    workload: str
    variant: str
    measured_s: float
    predicted_s: float

    @property
    def error(self) -> float:
        return (self.predicted_s - self.measured_s) / self.measured_s

    def __str__(self) -> str:
        return (f"{self.world} ranks {self.workload} {self.variant}: measured "
                f"{self.measured_s:.4f} s, predicted {self.predicted_s:.4f} s "
                f"({self.error:+.0%})")


def fits_by_world(runs: list[dict[str, Any]]) -> dict[int, LinkFit]:
    """One fit per world size: of the run whose sweep is fastest (least disturbed)."""
    best: dict[int, dict[str, float]] = {}
    for run in runs:
        world, sweep = run["meta"]["world"], run.get("sweep")
        if sweep and (world not in best or sum(sweep.values()) < sum(best[world].values())):
            best[world] = sweep
    return {world: fit_link(sweep) for world, sweep in sorted(best.items())}


def validate_recorded(runs: list[dict[str, Any]]) -> list[Check]:
    """Per-tensor (no overlap) step = local step + Σ allreduce(tensor), with the α–β fit of
    the same run's sweep (same machine load): the term to trust before extrapolating."""
    checks = []
    for run in runs:
        meta = run["meta"]
        if "sweep" not in run:
            continue
        fit = fit_link(run["sweep"])
        predicted = run["local"]["step_s"] + allreduce_term(meta["tensor_bytes"], fit)
        checks.append(Check(meta["world"], meta["workload"], "per-tensor",
                            run["per-tensor"]["step_s"], predicted))
    return checks


@dataclass(frozen=True)
class SoftwareCosts:
    """Software constants; defaults are the fit of benchmarks/control_plane.json recorded in
    RESULTS.md (`fit_software` recomputes them from the JSON)."""

    launch_s: float = 63e-6  # issuing one collective (CPU side)
    coordinator_fixed_s: float = 0.0  # one negotiation cycle, rank 0, P = 1 extrapolated
    coordinator_per_rank_s: float = 1.27e-3  # rank 0's cost per other rank per cycle
    cycle_time_s: float = 0.005  # Horovod's HOROVOD_CYCLE_TIME before v0.21.0


def fit_software(runs: list[dict[str, Any]]) -> SoftwareCosts:
    """Coordinator cycle cost vs P (bare gather + broadcast at 2, 4, 8 ranks; per world the
    least disturbed of its runs, the usual estimate of a latency under interference)."""
    best: dict[int, float] = {}
    for run in runs:
        world, cycle = run["meta"]["world"], run["meta"]["coordinator_cycle_s"]
        best[world] = min(cycle, best.get(world, math.inf))
    worlds = np.array(sorted(best), dtype=float)
    cycles = np.array([best[w] for w in sorted(best)])
    slope, intercept = np.polyfit(worlds - 1, cycles, 1)
    launch = [run["meta"]["launch_s"] for run in runs if "launch_s" in run["meta"]]
    return SoftwareCosts(
        launch_s=float(np.median(launch)) if launch else SoftwareCosts.launch_s,
        coordinator_fixed_s=float(max(intercept, 0.0)),
        coordinator_per_rank_s=float(max(slope, 0.0)),
    )


# ============================================================================ published


@dataclass(frozen=True)
class SummitLike:
    """A Summit node and network (sources in the module docstring)."""

    gpus_per_node: int = 6
    nvlink_bytes_per_s: float = 50e9
    nvlink_latency_s: float = 2e-6  # assumption (NCCL step over NVLink)
    ib_bytes_per_s: float = 25e9  # dual-rail EDR, per node, per direction
    ib_latency_s: float = 5e-6  # assumption (NCCL step across nodes, EDR ~1 µs of it)
    hbm_bytes_per_s: float = 900e9
    gpu_flops_per_s: float = 2.15e18 / PAPER_GPUS  # the paper's achieved rate per GPU
    pfs_bytes_per_s: float = 2.5e12  # Alpine GPFS aggregate
    nvme_read_bytes_per_s: float = 6.0e9
    nvme_write_bytes_per_s: float = 2.1e9
    nvme_bytes: float = 1.6e12
    dram_bytes: float = 512 * 2**30
    tree: bool = True  # NCCL double binary trees across nodes


def allreduce_time(nbytes: float, p: int, m: SummitLike, software: SoftwareCosts) -> float:
    """One allreduce of `nbytes` over `p` GPUs (hierarchical: NVLink in a node, IB across)."""
    if p <= 1:
        return 0.0
    g = min(p, m.gpus_per_node)
    nodes = math.ceil(p / m.gpus_per_node)
    t = software.launch_s + 3 * nbytes / m.hbm_bytes_per_s
    t += 2 * (g - 1) * m.nvlink_latency_s + 2 * (g - 1) / g * nbytes / m.nvlink_bytes_per_s
    if nodes > 1:
        hops = 2 * math.log2(nodes) if m.tree else 2 * (nodes - 1)
        t += hops * m.ib_latency_s + 2 * (nodes - 1) / nodes * nbytes / m.ib_bytes_per_s
    return t


# ============================================================================ the workload


@dataclass(frozen=True)
class Workload:
    """What one GPU does per step: FLOPs, and its gradient tensors in ready order."""

    name: str
    forward_flops: float  # per sample
    training_flops: float  # per sample
    batch_per_gpu: int
    tensor_bytes: tuple[int, ...]  # fp32, in the order backward produces them
    ready_fraction: tuple[float, ...]  # of backward done when each is ready
    group_bytes: int
    sample_bytes: int


def paper_workload(preset: str = "paper") -> Workload:
    """The preset's FC-DenseNet on the meta device: FLOPs (train.flops) and ready order."""
    import torch
    from torch import nn

    from stemdl.configs import load_config
    from stemdl.train.arrangements import build_model_from_config
    from stemdl.train.flops import _COUNTED, _layer_flops, count_flops

    config = load_config(preset)
    shape = config.simulation.sample_shape
    with torch.device("meta"):
        model = build_model_from_config(config)
    cost = count_flops(model, shape.input_shape)
    # Backward visits modules in reverse forward order; a module's parameters are ready once
    # its backward (≈ 2 × its forward FLOPs) is done.
    order: list[tuple[nn.Module, int]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        flops = _layer_flops(module, inputs[0], out) if isinstance(module, _COUNTED) else 0
        order.append((module, flops))

    leaves = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    handles = [m.register_forward_hook(hook) for m in leaves]
    with torch.no_grad():
        model(torch.zeros((1, *shape.input_shape), device="meta"))
    for handle in handles:
        handle.remove()
    total = sum(2 * f for _, f in order)
    done, sizes, ready = 0.0, [], []
    for module, flops in reversed(order):
        done += 2 * flops
        for param in module.parameters(recurse=False):
            sizes.append(param.numel() * 4)
            ready.append(done / total)
    sample = shape.num_patterns * shape.pattern_px[0] * shape.pattern_px[1] * 2  # float16
    return Workload(preset, float(cost.forward_flops), float(cost.training_flops),
                    config.train.batch_size, tuple(sizes), tuple(ready),
                    config.train.group_bytes, sample)


def messages(w: Workload, grouped: bool) -> list[tuple[int, float]]:
    """(fp32 bytes, ready fraction) per collective: groups closed at `group_bytes` in ready
    order (as `cut_into_groups` does), or one per tensor."""
    if not grouped:
        return list(zip(w.tensor_bytes, w.ready_fraction, strict=True))
    out, filled, last = [], 0, 0.0
    for nbytes, ready in zip(w.tensor_bytes, w.ready_fraction, strict=True):
        filled, last = filled + nbytes, ready
        if filled >= w.group_bytes:
            out.append((filled, last))
            filled = 0
    if filled:
        out.append((filled, last))
    return out


# ============================================================================ the step


@dataclass(frozen=True)
class StepTime:
    compute_s: float
    exposed_comm_s: float  # after backward: collectives and orchestration not hidden
    straggler_s: float
    comm_s: float = 0.0  # the collectives' own time, hidden or not

    @property
    def hidden_fraction(self) -> float:
        return 1.0 - self.exposed_comm_s / self.comm_s if self.comm_s > 0 else 1.0

    @property
    def total_s(self) -> float:
        return self.compute_s + self.exposed_comm_s + self.straggler_s


def coordinator_cycle_s(p: int, m: SummitLike, software: SoftwareCosts) -> float:
    return (software.coordinator_fixed_s + software.coordinator_per_rank_s * (p - 1)
            + 2 * math.log2(max(p, 2)) * m.ib_latency_s)


def step_time(p: int, w: Workload, m: SummitLike, software: SoftwareCosts, *,
              scheme: str = "cached", grouped: bool = True, fp16: bool = False,
              jitter_cv: float = 0.0) -> StepTime:
    """Modelled step on `p` GPUs (see the module docstring)."""
    t_f = w.batch_per_gpu * w.forward_flops / m.gpu_flops_per_s
    t_b = w.batch_per_gpu * (w.training_flops - w.forward_flops) / m.gpu_flops_per_s
    if p <= 1:
        return StepTime(t_f + t_b, 0.0, 0.0)
    wire = 0.5 if fp16 else 1.0
    msgs = messages(w, grouped)
    cast = (6 / m.hbm_bytes_per_s) if fp16 else 0.0  # fp32 → fp16 and back, per fp32 byte/4
    end = busy = 0.0
    if scheme == "cached":
        for nbytes, ready in msgs:
            start = max(ready * t_b, end)
            took = allreduce_time(nbytes * wire, p, m, software) + nbytes / 4 * cast
            end, busy = start + took, busy + took
        agree = allreduce_time(len(w.tensor_bytes) + len(msgs), p, m, software)
        end, busy = max(end, t_b) + agree, busy + agree
    elif scheme == "coordinator":
        negotiate = coordinator_cycle_s(p, m, software)
        period = max(software.cycle_time_s, negotiate)
        for nbytes, ready in msgs:
            cycle_start = math.ceil(ready * t_b / period) * period
            start = max(cycle_start + negotiate, end)
            took = allreduce_time(nbytes * wire, p, m, software) + nbytes / 4 * cast
            end, busy = start + took, busy + took
    else:
        raise ValueError(f"scheme must be 'cached' or 'coordinator', got {scheme!r}")
    exposed = max(0.0, end - t_b)
    compute = t_f + t_b
    straggler = (compute + exposed) * jitter_cv * math.sqrt(2 * math.log(p))
    return StepTime(compute, exposed, straggler, busy)


def efficiency(p: int, w: Workload, m: SummitLike, software: SoftwareCosts,
               **options: Any) -> float:
    """Weak-scaling efficiency T_step(1) / T_step(p)."""
    return (step_time(1, w, m, software, **options).total_s
            / step_time(p, w, m, software, **options).total_s)


# ============================================================================ the data path


@dataclass(frozen=True)
class DataPath:
    nodes: int
    bytes_per_node: float
    stage_s: float  # once, PFS → NVMe
    step_s: float
    need_per_node_bytes_per_s: float  # to feed every GPU of a node one batch per step
    pfs_direct_efficiency: float  # if every step read the shared store
    nvme_efficiency: float  # reading the staged copy from NVMe
    fits_nvme: bool
    fits_dram: bool


def data_path(p: int, w: Workload, m: SummitLike, software: SoftwareCosts,
              total_bytes: float, **options: Any) -> DataPath:
    """Node-local staging vs reading the shared store each step (see module docstring)."""
    nodes = max(1, math.ceil(p / m.gpus_per_node))
    per_node = total_bytes / nodes
    stage = max(total_bytes / m.pfs_bytes_per_s, per_node / m.nvme_write_bytes_per_s)
    step = step_time(p, w, m, software, **options).total_s
    gpus = min(p, m.gpus_per_node)
    need = gpus * w.batch_per_gpu * w.sample_bytes / step
    pfs_share = m.pfs_bytes_per_s / nodes
    return DataPath(nodes, per_node, stage, step, need, min(1.0, pfs_share / need),
                    min(1.0, m.nvme_read_bytes_per_s / need), per_node <= m.nvme_bytes,
                    per_node <= 0.8 * m.dram_bytes)


# ============================================================================ report


SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("cached, grouped, fp16", {"scheme": "cached", "grouped": True, "fp16": True}),
    ("cached, grouped", {"scheme": "cached", "grouped": True}),
    ("cached, grouped 8 MiB, fp16", {"scheme": "cached", "grouped": True, "fp16": True,
                                     "group_mib": 8}),
    ("cached, per-tensor", {"scheme": "cached", "grouped": False}),
    ("coordinator (c1 fitted here), grouped", {"scheme": "coordinator", "grouped": True}),
    ("coordinator (c1 = 1 µs), grouped", {"scheme": "coordinator", "grouped": True,
                                          "c1": 1e-6}),
    ("coordinator (c1 = 1 µs), per-tensor", {"scheme": "coordinator", "grouped": False,
                                             "c1": 1e-6}),
]
GPU_COUNTS = [1, 6, 96, 1_536, 6_144, PAPER_GPUS]


def scenario_efficiency(p: int, w: Workload, m: SummitLike, software: SoftwareCosts,
                        options: dict[str, Any], jitter_cv: float = 0.0) -> float:
    opts, sw, w = _apply(options, software, w)
    return efficiency(p, w, m, sw, jitter_cv=jitter_cv, **opts)


def _apply(options: dict[str, Any], software: SoftwareCosts, w: Workload
           ) -> tuple[dict[str, Any], SoftwareCosts, Workload]:
    """Split a scenario's overrides (c1, group_mib) from step_time's keyword options."""
    opts = dict(options)
    c1 = opts.pop("c1", None)
    group_mib = opts.pop("group_mib", None)
    if c1 is not None:
        software = replace(software, coordinator_per_rank_s=c1)
    if group_mib is not None:
        w = replace(w, group_bytes=int(group_mib * 2**20))
    return opts, software, w


def efficiency_table(w: Workload, m: SummitLike, software: SoftwareCosts,
                     jitter_cv: float) -> str:
    head = "| scheme | " + " | ".join(f"{p:,} GPUs" for p in GPU_COUNTS) + " |"
    lines = [head, "|---|" + "---:|" * len(GPU_COUNTS)]
    for name, options in SCENARIOS:
        cells = [f"{scenario_efficiency(p, w, m, software, options, jitter_cv):.3f}"
                 for p in GPU_COUNTS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown(w: Workload, m: SummitLike, software: SoftwareCosts, p: int) -> str:
    lines = [f"| scheme (at {p:,} GPUs) | compute s | collectives s | exposed comm s | "
             "hidden | straggler s (cv 1 %) | step s | efficiency |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, options in SCENARIOS:
        opts, sw, wl = _apply(options, software, w)
        s = step_time(p, wl, m, sw, jitter_cv=0.01, **opts)
        one = step_time(1, wl, m, sw, **opts).total_s
        # For the coordinator the exposed time includes waiting for cycles: no hidden share.
        hidden = f"{s.hidden_fraction:.2f}" if opts["scheme"] == "cached" else "–"
        lines.append(f"| {name} | {s.compute_s:.3f} | {s.comm_s:.4f} | "
                     f"{s.exposed_comm_s:.4f} | {hidden} | {s.straggler_s:.4f} | "
                     f"{s.total_s:.3f} | {one / s.total_s:.3f} |")
    return "\n".join(lines)


def data_table(w: Workload, m: SummitLike, software: SoftwareCosts, total_bytes: float) -> str:
    lines = ["| GPUs | nodes | GiB per node | stage once (s) | per-node read need (GB/s) | "
             "efficiency reading PFS each step | reading staged NVMe | node share fits NVMe "
             "/ DRAM |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in GPU_COUNTS[1:]:
        d = data_path(p, w, m, software, total_bytes, scheme="cached", fp16=True)
        stage = f"{d.stage_s:,.0f}" if d.fits_nvme else "– (share > NVMe)"
        lines.append(f"| {p:,} | {d.nodes:,} | {d.bytes_per_node / 2**30:,.0f} | "
                     f"{stage} | {d.need_per_node_bytes_per_s / 1e9:.1f} | "
                     f"{d.pfs_direct_efficiency:.3f} | {d.nvme_efficiency:.2f} | "
                     f"{'yes' if d.fits_nvme else 'no'} / {'yes' if d.fits_dram else 'no'} |")
    return "\n".join(lines)


def plot(w: Workload, m: SummitLike, software: SoftwareCosts, total_bytes: float,
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gpus = np.unique(np.round(np.logspace(0, math.log10(PAPER_GPUS), 60)).astype(int))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, options in SCENARIOS:
        left.plot(gpus, [scenario_efficiency(int(p), w, m, software, options) for p in gpus],
                  label=name)
    left.plot(gpus, [scenario_efficiency(int(p), w, m, software, SCENARIOS[0][1], 0.01)
                     for p in gpus], "k--", label="cached, grouped, fp16 + 1 % jitter")
    left.scatter([PAPER_GPUS], [PAPER_EFFICIENCY], color="red", zorder=5,
                 label="paper: 0.93 at 27,600")
    left.set(xscale="log", ylim=(0, 1.05), xlabel="GPUs (6 per node)",
             ylabel="weak-scaling efficiency",
             title=f"`{w.name}` FC-DenseNet, batch {w.batch_per_gpu}/GPU, Summit-like")
    left.legend(fontsize=7, loc="lower left")
    left.grid(alpha=0.3)
    nodes_p = gpus[gpus >= 6]
    paths = [data_path(int(p), w, m, software, total_bytes, scheme="cached", fp16=True)
             for p in nodes_p]
    right.plot(nodes_p, [d.pfs_direct_efficiency for d in paths],
               label="read the shared PFS every step")
    right.plot(nodes_p, [d.nvme_efficiency for d in paths], label="read staged NVMe")
    right.plot(nodes_p, [1.0 if d.fits_dram else d.nvme_efficiency for d in paths], ":",
               label="staged, node share held in DRAM after epoch 1")
    fits = [p for p, d in zip(nodes_p, paths, strict=True) if d.fits_nvme]
    if fits:
        right.axvline(fits[0], color="grey", lw=0.8)
        right.text(fits[0], 0.3, " node share fits\n 1.6 TB NVMe", fontsize=7)
    right.set(xscale="log", yscale="log", xlabel="GPUs", ylabel="data-limited efficiency",
              title="data path (compute from the cached/fp16 step)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", type=Path, default=MEASURED_JSON)
    parser.add_argument("--plot", type=Path, default=PLOT_PNG)
    parser.add_argument("--ring", action="store_true", help="rings across nodes, not trees")
    args = parser.parse_args()

    from stemdl.configs import load_config
    from stemdl.datasets import storage_estimate

    software = SoftwareCosts()
    checks: list[Check] = []
    if args.measured.exists():
        runs = json.loads(args.measured.read_text())["runs"]
        software = fit_software(runs)
        checks = validate_recorded(runs)
        fits = fits_by_world(runs)
        FIT_JSON.write_text(json.dumps({
            "software": asdict(software),
            "links": {str(k): asdict(v) for k, v in fits.items()},
            "checks": [{**asdict(c), "error": c.error} for c in checks]}, indent=1))
        print("allreduce fit here (gloo, localhost): " + ", ".join(
            f"P={k}: {v.latency_s * 1e6:.0f} µs + {v.s_per_byte * 1e9:.2f} ns/B"
            for k, v in sorted(fits.items())))
        print("software: " + ", ".join(f"{k}={v:.3g}" for k, v in asdict(software).items()))
        for check in checks:
            print("  check:", check)
    machine = SummitLike(tree=not args.ring)
    w = paper_workload()
    estimate = storage_estimate(load_config("paper"))
    grads = sum(w.tensor_bytes)
    print(f"\n`paper` model: {len(w.tensor_bytes)} tensors, {grads / 2**20:.0f} MiB fp32 "
          f"gradients, {len(messages(w, True))} groups of ≥ {w.group_bytes / 2**20:.0f} MiB; "
          f"{w.training_flops / 1e12:.1f} TFLOP per training sample, batch "
          f"{w.batch_per_gpu}/GPU: compute {step_time(1, w, machine, software).total_s:.3f} s "
          f"per step at {machine.gpu_flops_per_s / 1e12:.1f} TFLOP/s")
    print(f"\nefficiency, no jitter:\n{efficiency_table(w, machine, software, 0.0)}")
    print(f"\nefficiency, 1 % step jitter:\n{efficiency_table(w, machine, software, 0.01)}")
    print(f"\n{breakdown(w, machine, software, PAPER_GPUS)}")
    print(f"\ndata path ({estimate.total_bytes / 2**40:,.0f} TiB, "
          f"{estimate.num_shards:,} shards of {estimate.cbed_shard_file_bytes / 2**30:.0f} GiB "
          f"cbed):\n{data_table(w, machine, software, estimate.total_bytes)}")
    plot(w, machine, software, estimate.total_bytes, args.plot)
    print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
