"""Launch per allocation: join the process group, find this node, stage its data once.

Sequence on every rank (see docs/train-on-a-cluster.md for job scripts):

1. `detect_distributed_env(os.environ)`: rank, world size, local rank, rendezvous (torchrun,
   SLURM, LSF/jsrun, MPI, or a single process).
2. Device: GPU `local_rank` when CUDA is present (NCCL), else the CPU (gloo).
3. `torch.distributed.init_process_group` over TCP at MASTER_ADDR:MASTER_PORT.
4. Node layout: every rank publishes its host name (one all-gather); ranks with the same host
   form a node, nodes are numbered by their lowest rank. This works the same under every
   launcher, including jsrun, which exports no node index.
5. Staging (with a stage directory): the lowest rank of each node copies that node's shards of
   the shared store into the node-local directory with `datasets.stage.stage_node`, the others
   wait at a barrier, then every rank reads the node-local store. Its ranks split the node's
   shards among themselves (local rank of local world size); without staging, all ranks split
   the shared store. The barrier is an all-gather of every node's verdict on the job's own
   process group, so it must finish within `COLLECTIVE_TIMEOUT` (an hour: at the paper's scale a
   node copies ~100 GB, minutes at NVMe speed). Why not a separate gloo group with a longer
   timeout: gloo connects every pair of ranks, which does not scale to thousands of ranks.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from stemdl.datasets.stage import StageError, stage_node
from stemdl.train.cluster_env import DistributedEnv, detect_distributed_env

log = logging.getLogger(__name__)

COLLECTIVE_TIMEOUT = timedelta(hours=1)


@dataclass(frozen=True)
class NodeLayout:
    """Where this rank sits among the nodes of the job."""

    node: int
    nodes: int
    local_index: int  # 0 = the rank that stages for the node
    local_size: int


@dataclass(frozen=True)
class DataPartition:
    """Which store this rank reads and as which reader of how many."""

    store_url: str
    reader: int
    readers: int
    staged: bool


@dataclass
class LaunchContext:
    """A joined process (group): what the training loop needs to know about the job."""

    env: DistributedEnv
    device: torch.device
    backend: str | None  # None: one process, no process group
    layout: NodeLayout
    owns_group: bool = False  # created by `launch`, so destroyed by `close`

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def pick_device(env: DistributedEnv) -> torch.device:
    """GPU `local_rank` (modulo the visible GPUs) when CUDA works, else the CPU."""
    if torch.cuda.is_available():
        index = env.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        # Fixed input sizes: let cuDNN pick the fastest convolution algorithms once. (GPU runs
        # are then not bitwise reproducible; exact resume is a CPU fp32 guarantee.)
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", index)
    return torch.device("cpu")


def node_layout(world_size: int) -> NodeLayout:
    """Group ranks by host name (one all-gather of strings)."""
    host = socket.gethostname()
    if world_size == 1 or not dist.is_initialized():
        return NodeLayout(node=0, nodes=1, local_index=0, local_size=1)
    hosts: list[str] = [""] * world_size
    dist.all_gather_object(hosts, host)
    nodes = list(dict.fromkeys(hosts))  # in order of each host's lowest rank
    ranks_here = [r for r, h in enumerate(hosts) if h == host]
    return NodeLayout(node=nodes.index(host), nodes=len(nodes),
                      local_index=ranks_here.index(dist.get_rank()), local_size=len(ranks_here))


def launch(env: DistributedEnv | None = None, timeout: timedelta = COLLECTIVE_TIMEOUT
           ) -> LaunchContext:
    """Steps 1–4 of the module docstring. A process group that already exists (created by the
    caller) is used as it is and left open."""
    env = env or detect_distributed_env(os.environ)
    device = pick_device(env)
    if dist.is_available() and dist.is_initialized():
        return LaunchContext(env=env, device=device, backend=str(dist.get_backend()),
                             layout=node_layout(env.world_size))
    if not env.is_distributed:
        return LaunchContext(env=env, device=device, backend=None, layout=node_layout(1))
    backend = "nccl" if device.type == "cuda" else "gloo"
    log.info("rank %d/%d (%s): joining %s at %s:%d", env.rank, env.world_size, env.launcher,
             backend, env.master_addr, env.master_port)
    dist.init_process_group(
        backend, init_method=f"tcp://{env.master_addr}:{env.master_port}", rank=env.rank,
        world_size=env.world_size, timeout=timeout,
        device_id=device if device.type == "cuda" else None,
    )
    return LaunchContext(env=env, device=device, backend=backend,
                         layout=node_layout(env.world_size), owns_group=True)


def partition_data(context: LaunchContext, store_url: str, stage_dir: Path | None, *,
                   allow_partial: bool = False) -> DataPartition:
    """Step 5: stage this node's shards (lowest local rank), wait for every node, then say
    which store this rank reads and as which reader. Staging refuses shards of this node that
    are not done in the source unless `allow_partial`."""
    if stage_dir is None:
        return DataPartition(store_url, context.rank, context.world_size, staged=False)
    layout = context.layout
    local_dir = Path(stage_dir)
    error: str | None = None
    if layout.local_index == 0:
        try:
            report = stage_node(store_url, local_dir, layout.node, layout.nodes,
                                allow_partial=allow_partial)
            log.info("staged: %s", report.summary())
        except Exception as failure:  # reported to every rank below, then raised everywhere
            error = f"node {layout.node}: staging failed: {failure}"
    if context.backend is not None:
        # The barrier carries the verdicts, so a failure on one node stops every rank.
        verdicts: list[str | None] = [None] * context.world_size
        dist.all_gather_object(verdicts, error)
        errors = [v for v in verdicts if v]
        error = errors[0] if errors else None
    if error:
        raise StageError(error)
    return DataPartition(str(local_dir), layout.local_index, layout.local_size, staged=True)
