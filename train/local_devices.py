"""Which devices a single-machine run (`stemdl run`) trains and scores on.

Pure choices from what torch reports (`torch.cuda.is_available`, `torch.cuda.device_count`),
so a test can fake the device count:

* ranks: one training rank per visible GPU. Two processes on one GPU (what the CPU default
  of two local ranks did on a one-GPU machine) share its memory and streams and only add
  spawn time and an allreduce; one rank trains in the calling process. Without CUDA, the CPU
  default of two gloo ranks stays (benchmarks/default_run.py measured 1 and 2 on 2 cores).
* backend: NCCL between GPU ranks, gloo between CPU ranks. NCCL refuses two ranks on one GPU,
  so asking for more ranks than visible GPUs is a usage error, said before anything runs.
* scoring device: the first GPU when there is one (the test split's forward passes and the
  nearest-neighbour baseline's distances), else the CPU.
"""

from __future__ import annotations

import torch

from stemdl.configs import UsageError

# Local training processes without a GPU (benchmarks/default_run.py measured 1 and 2).
CPU_DEFAULT_RANKS = 2


def visible_gpus() -> int:
    """The CUDA devices torch can use here (0 without CUDA)."""
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def default_ranks() -> int:
    """One rank per visible GPU, or `CPU_DEFAULT_RANKS` without one."""
    gpus = visible_gpus()
    return gpus if gpus > 0 else CPU_DEFAULT_RANKS


def rank_backend(ranks: int) -> str:
    """The process-group backend for `ranks` local ranks; refuses more ranks than GPUs."""
    gpus = visible_gpus()
    if gpus == 0:
        return "gloo"
    if ranks > gpus:
        raise UsageError(f"{ranks} ranks but {gpus} visible GPU{'s' if gpus != 1 else ''}: "
                         "a GPU trains one rank (NCCL refuses two on one device); use "
                         f"--ranks {gpus} or fewer, or hide the GPUs (CUDA_VISIBLE_DEVICES=) "
                         "to train on CPU ranks")
    return "nccl"


def scoring_device() -> torch.device:
    """Where `stemdl run` scores the models and baselines: the first GPU, else the CPU."""
    return torch.device("cuda", 0) if visible_gpus() > 0 else torch.device("cpu")
