"""Rank, world size, local rank and rendezvous from launcher environments (pure functions)."""

from __future__ import annotations

import pytest

from stemdl.train.cluster_env import (
    DEFAULT_PORT,
    LaunchEnvError,
    detect_distributed_env,
    expand_hostlist,
    lsf_compute_hosts,
)


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node01", ["node01"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("a[8-11]", ["a8", "a9", "a10", "a11"]),
        ("gpu[009-011]", ["gpu009", "gpu010", "gpu011"]),
        ("login1,node[1-2],io5", ["login1", "node1", "node2", "io5"]),
        ("r[1-2]n[01-02]", ["r1n01", "r1n02", "r2n01", "r2n02"]),
        ("cn[1-2]-ib", ["cn1-ib", "cn2-ib"]),
        ("x[3,1-2],x1", ["x3", "x1", "x2"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node01]", "node[5-3]", "node[a-b]"])
def test_bad_hostlists_are_refused(bad: str) -> None:
    with pytest.raises(LaunchEnvError, match="hostlist"):
        expand_hostlist(bad)


def test_torchrun() -> None:
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
           "GROUP_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29400",
           "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}  # srun torchrun: torchrun wins
    got = detect_distributed_env(env)
    assert (got.launcher, got.rank, got.world_size, got.local_rank) == ("torchrun", 5, 8, 1)
    assert (got.master_addr, got.master_port, got.node_rank, got.num_nodes) == ("n1", 29400, 1, 2)


def test_slurm_srun() -> None:
    env = {"SLURM_PROCID": "6", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "8",
           "SLURM_LOCALID": "2", "SLURM_NODEID": "1", "SLURM_STEP_NUM_NODES": "2",
           "SLURM_JOB_NODELIST": "gpu[07-08,11]", "SLURM_STEP_NODELIST": "gpu[07-08]",
           "SLURM_JOB_ID": "123456"}
    got = detect_distributed_env(env)
    assert (got.launcher, got.rank, got.world_size, got.local_rank) == ("slurm", 6, 8, 2)
    assert (got.master_addr, got.node_rank, got.num_nodes) == ("gpu07", 1, 2)
    assert got.master_port == 20000 + 123456 % 20000
    assert detect_distributed_env({**env, "MASTER_PORT": "1234"}).master_port == 1234


def test_slurm_without_step_variables_uses_the_job_ones() -> None:
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "c[100-101]"}
    got = detect_distributed_env(env)
    assert (got.world_size, got.master_addr, got.num_nodes) == (4, "c100", 1)


def test_lsf_jsrun_skips_the_launch_node() -> None:
    env = {"JSM_NAMESPACE_RANK": "7", "JSM_NAMESPACE_SIZE": "12", "JSM_NAMESPACE_LOCAL_RANK": "1",
           "LSB_MCPU_HOSTS": "batch3 1 a01n05 42 a01n06 42", "LSB_JOBID": "99",
           "OMPI_COMM_WORLD_RANK": "7", "OMPI_COMM_WORLD_SIZE": "12"}
    got = detect_distributed_env(env)
    assert (got.launcher, got.rank, got.world_size, got.local_rank) == ("lsf", 7, 12, 1)
    assert (got.master_addr, got.num_nodes, got.master_port) == ("a01n05", 2, 20099)


def test_lsf_open_mpi_variables_and_lsb_hosts() -> None:
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "LSB_HOSTS": "login2 h1 h1 h2 h2"}
    got = detect_distributed_env(env)
    assert (got.launcher, got.rank, got.world_size, got.local_rank) == ("lsf", 3, 4, 1)
    assert got.master_addr == "h1"
    assert lsf_compute_hosts({"LSB_HOSTS": "h1 h1"}) == ["h1"]


def test_mpi_needs_master_addr() -> None:
    env = {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0"}
    with pytest.raises(LaunchEnvError, match="MASTER_ADDR"):
        detect_distributed_env(env)
    got = detect_distributed_env({**env, "MASTER_ADDR": "head", "MASTER_PORT": "4000"})
    assert (got.launcher, got.rank, got.world_size, got.master_addr, got.master_port) == (
        "mpi", 2, 4, "head", 4000)
    openmpi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "MASTER_ADDR": "h"}
    assert detect_distributed_env(openmpi).launcher == "mpi"


def test_nothing_set_is_one_process() -> None:
    got = detect_distributed_env({})
    assert (got.launcher, got.rank, got.world_size, got.local_rank) == ("single", 0, 1, 0)
    assert got.master_port == DEFAULT_PORT and not got.is_distributed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "4", "WORLD_SIZE": "4"}, "outside world size"),
        ({"RANK": "x", "WORLD_SIZE": "4"}, "RANK='x' is not an integer"),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "two"}, "SLURM_NTASKS"),
    ],
)
def test_inconsistent_environments_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(LaunchEnvError, match=message):
        detect_distributed_env(env)
