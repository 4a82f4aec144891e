"""Who am I in this allocation? Rank, world size, local rank and rendezvous from the environment.

One process per GPU (or per CPU slot) is started by a launcher, and every launcher describes the
process in its own variables. `detect_distributed_env` reads them, in this order (the first that
applies wins, because launchers nest: `srun torchrun ...` sets both):

| launcher | rank / world / local rank | rendezvous host |
|---|---|---|
| torchrun | RANK, WORLD_SIZE, LOCAL_RANK | MASTER_ADDR, MASTER_PORT |
| SLURM srun | SLURM_PROCID, SLURM_STEP_NUM_TASKS or SLURM_NTASKS, SLURM_LOCALID | first host of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST |
| LSF jsrun | JSM_NAMESPACE_RANK/_SIZE/_LOCAL_RANK or OMPI_COMM_WORLD_RANK/_SIZE/_LOCAL_RANK (with LSB_*) | first compute host of LSB_MCPU_HOSTS / LSB_HOSTS |
| MPI | PMI_RANK, PMI_SIZE (MPICH, Intel MPI), or OMPI_COMM_WORLD_* (Open MPI mpirun) | MASTER_ADDR (required) |
| nothing | one process | 127.0.0.1 |

Everything here is a pure function of an environment mapping, so it is tested without any
cluster. MASTER_ADDR / MASTER_PORT, when set, override the derived rendezvous on every launcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import hostlist

from stemdl.configs import StemdlError

DEFAULT_PORT = 29500


class LaunchEnvError(StemdlError, ValueError):
    """The environment describes a launch that cannot work; the message says which variable."""


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" | "slurm" | "lsf" | "mpi" | "single"
    node_rank: int | None = None  # where the launcher says so
    num_nodes: int | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def expand_hostlist(text: str) -> list[str]:
    """Expand a SLURM hostlist: `node[01-03,07],gpu-a[1-2]b` → node01 node02 node03 node07 ...

    Parsed by `python-hostlist` (ranges keep their zero padding, several bracket groups in one
    name multiply); duplicates keep their first position. A list it cannot read is a
    `LaunchEnvError` naming it.
    """
    try:
        hosts = hostlist.expand_hostlist(text.strip())
    except hostlist.BadHostlist as error:
        raise LaunchEnvError(f"hostlist {text!r}: {error}") from None
    return list(dict.fromkeys(hosts))


def lsf_compute_hosts(env: Mapping[str, str]) -> list[str]:
    """Hosts of an LSF job without the launch node (`batch*`, `login*`) that runs no ranks.

    LSB_MCPU_HOSTS is `host slots host slots ...`; LSB_HOSTS repeats a host once per slot.
    """
    if env.get("LSB_MCPU_HOSTS"):
        words = env["LSB_MCPU_HOSTS"].split()
        hosts = words[0::2]
    else:
        hosts = env.get("LSB_HOSTS", "").split()
    unique = list(dict.fromkeys(hosts))
    compute = [h for h in unique if not h.startswith(("batch", "login"))]
    return compute or unique


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int:
    """The first of `names` that is set, as an int."""
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise LaunchEnvError(f"{name}={value!r} is not an integer") from None
    if default is None:
        raise LaunchEnvError(f"none of {', '.join(names)} is set")
    return default


def _port(env: Mapping[str, str], job_id_var: str | None) -> int:
    """MASTER_PORT, else a port derived from the job id (two jobs sharing a node differ)."""
    if env.get("MASTER_PORT"):
        return _int(env, "MASTER_PORT")
    if job_id_var and env.get(job_id_var, "").isdigit():
        return 20000 + int(env[job_id_var]) % 20000
    return DEFAULT_PORT


def detect_distributed_env(env: Mapping[str, str]) -> DistributedEnv:
    """Read this process's rank, world size, local rank and rendezvous from `env`."""
    if "RANK" in env and "WORLD_SIZE" in env:
        world, local_world = _int(env, "WORLD_SIZE"), _int(env, "LOCAL_WORLD_SIZE", default=0)
        result = DistributedEnv(
            rank=_int(env, "RANK"), world_size=world, local_rank=_int(env, "LOCAL_RANK", default=0),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"), master_port=_port(env, None),
            launcher="torchrun",
            node_rank=_int(env, "GROUP_RANK", default=0) if local_world else None,
            num_nodes=world // local_world if local_world else None,
        )
    elif "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        nodelist = (env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
                    or env.get("SLURM_NODELIST") or "")
        hosts = expand_hostlist(nodelist) if nodelist else []
        result = DistributedEnv(
            rank=_int(env, "SLURM_PROCID"),
            world_size=_int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
            local_rank=_int(env, "SLURM_LOCALID", default=0),
            master_addr=env.get("MASTER_ADDR") or (hosts[0] if hosts else "127.0.0.1"),
            master_port=_port(env, "SLURM_JOB_ID"),
            launcher="slurm",
            node_rank=_int(env, "SLURM_NODEID", default=0),
            num_nodes=_int(env, "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES",
                           default=max(len(hosts), 1)),
        )
    elif "JSM_NAMESPACE_RANK" in env or (
            "OMPI_COMM_WORLD_RANK" in env and ("LSB_HOSTS" in env or "LSB_MCPU_HOSTS" in env)):
        hosts = lsf_compute_hosts(env)
        result = DistributedEnv(
            rank=_int(env, "JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK"),
            world_size=_int(env, "JSM_NAMESPACE_SIZE", "OMPI_COMM_WORLD_SIZE"),
            local_rank=_int(env, "JSM_NAMESPACE_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                            default=0),
            master_addr=env.get("MASTER_ADDR") or (hosts[0] if hosts else "127.0.0.1"),
            master_port=_port(env, "LSB_JOBID"),
            launcher="lsf",
            num_nodes=len(hosts) or None,
        )
    elif "PMI_RANK" in env or "OMPI_COMM_WORLD_RANK" in env:
        world = _int(env, "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
        if world > 1 and not env.get("MASTER_ADDR"):
            raise LaunchEnvError(
                "launched by MPI (PMI_RANK / OMPI_COMM_WORLD_RANK) without MASTER_ADDR: export "
                "MASTER_ADDR=<host of rank 0> (and MASTER_PORT) before mpirun, e.g. with -x"
            )
        result = DistributedEnv(
            rank=_int(env, "PMI_RANK", "OMPI_COMM_WORLD_RANK"),
            world_size=world,
            local_rank=_int(env, "MPI_LOCALRANKID", "PMI_LOCAL_RANK",
                            "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK", default=0),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_port(env, None),
            launcher="mpi",
        )
    else:
        result = DistributedEnv(rank=0, world_size=1, local_rank=0, master_addr="127.0.0.1",
                                master_port=_port(env, None), launcher="single",
                                node_rank=0, num_nodes=1)
    if not 0 <= result.rank < result.world_size:
        raise LaunchEnvError(f"{result.launcher}: rank {result.rank} is outside world size "
                             f"{result.world_size}")
    if result.local_rank < 0:
        raise LaunchEnvError(f"{result.launcher}: negative local rank {result.local_rank}")
    return result
