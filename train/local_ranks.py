"""Run a function on N real `torch.distributed` ranks on this machine (tests, benchmarks).

Each rank is its own spawned Python process with an initialized process group (gloo by
default) on 127.0.0.1 and a free port, as torchrun would set it up, so collectives are real.
A rank that raises, dies or overruns the time limit makes `run_local_ranks` raise with the
rank's traceback instead of hanging the caller.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue as queue_module
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any


class RankFailure(RuntimeError):
    """One or more local ranks raised, died, or ran out of time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _rank_entry(fn: Callable[..., Any], rank: int, world_size: int, port: int, backend: str,
                args: Sequence[Any], timeout_s: float, results: Any) -> None:
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world_size)})
    try:
        device_id = None
        if backend == "nccl":  # one GPU per rank, bound before the group is made
            import torch

            torch.cuda.set_device(rank)
            device_id = torch.device("cuda", rank)
        try:
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                    world_size=world_size, timeout=timedelta(seconds=timeout_s),
                                    device_id=device_id)
        except Exception as error:  # only a taken port is retried; anything else is re-raised
            if "EADDRINUSE" in str(error) or "address already in use" in str(error).lower():
                results.put((rank, False, PORT_TAKEN + traceback.format_exc()))
                return
            raise
        # Plain pickle, not the queue's ForkingPickler: torch would pass tensors as shared-memory
        # handles that die with this process.
        outcome = (rank, True, pickle.dumps(fn(rank, world_size, *args)))
    except BaseException:  # report everything, including KeyboardInterrupt, to the parent
        outcome = (rank, False, traceback.format_exc())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    results.put(outcome)


PORT_TAKEN = "port taken: "  # a rank's outcome when rank 0 could not listen on the port
PORT_ATTEMPTS = 3


def run_local_ranks(fn: Callable[..., Any], world_size: int, args: Sequence[Any] = (), *,
                    backend: str = "gloo", timeout_s: float = 120.0) -> list[Any]:
    """`[fn(rank, world_size, *args) for each rank]`, each in its own process, in rank order.

    `fn` must be importable by name (a module-level function) because ranks are spawned.
    Collectives inside time out after `timeout_s`; the whole call fails after 1.5 × that.

    The port is free when `free_port` picks it, but rank 0 listens on it only seconds later
    (a spawned process imports torch first); meanwhile any process's outgoing connection may
    be given it as its local port. Rank 0 then fails with EADDRINUSE and the others would
    wait out the timeout: instead the ranks are stopped and started again on another port
    (`PORT_ATTEMPTS` in all).
    """
    for attempt in range(PORT_ATTEMPTS):
        outcomes = _run_ranks(fn, world_size, args, backend, timeout_s, free_port())
        taken = [r for r, (ok, payload) in outcomes.items()
                 if not ok and str(payload).startswith(PORT_TAKEN)]
        if not taken or attempt == PORT_ATTEMPTS - 1:
            break
    failures = [f"--- rank {r} ---\n{payload}" for r, (ok, payload) in sorted(outcomes.items())
                if not ok]
    if failures:
        raise RankFailure("\n".join(failures))
    return [pickle.loads(outcomes[r][1]) for r in range(world_size)]


def _run_ranks(fn: Callable[..., Any], world_size: int, args: Sequence[Any], backend: str,
               timeout_s: float, port: int) -> dict[int, tuple[bool, Any]]:
    """Start the ranks on `port` and collect each one's (ok, payload); stops them all as soon
    as one reports that the port was taken."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_rank_entry, name=f"rank{rank}",
                    args=(fn, rank, world_size, port, backend, tuple(args), timeout_s, results))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    outcomes: dict[int, tuple[bool, Any]] = {}
    deadline = time.monotonic() + 1.5 * timeout_s
    try:
        while len(outcomes) < world_size:
            try:
                rank, ok, payload = results.get(timeout=0.1)
                outcomes[rank] = (ok, payload)
                if not ok and str(payload).startswith(PORT_TAKEN):
                    break  # the others cannot meet it: stop them (below), try another port
                continue
            except queue_module.Empty:
                pass
            for rank, proc in enumerate(procs):
                if rank not in outcomes and proc.exitcode not in (None, 0):
                    outcomes[rank] = (False, f"rank {rank} died with exit code {proc.exitcode}")
            if time.monotonic() > deadline:
                missing = sorted(set(range(world_size)) - set(outcomes))
                raise RankFailure(f"ranks {missing} did not finish within {1.5 * timeout_s:.0f} s")
    finally:
        port_taken = any(not ok and str(payload).startswith(PORT_TAKEN)
                         for ok, payload in outcomes.values())
        for proc in procs:
            proc.join(timeout=0 if port_taken else 10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return outcomes
