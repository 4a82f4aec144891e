"""Generate a store with Dask: plan it, then one task per shard that is not yet done.

`generate(config, store_url)` plans the store (or checks that an existing one was made with the
same simulation and dataset config), submits `datasets.shard.simulate_shard` once per shard
whose `shard_done` flag is not set, and waits with a progress bar (shards, samples/s).

Why it resumes bit-identically: a task writes its shard's files and only then its done flag, and
a sample is a pure function of (config, index). Killing the client or any worker at any moment
leaves some shards not marked done; running the same command again simulates exactly those and
writes the same bytes an uninterrupted run would have.

Failures: a task that raises is retried by Dask (`retries`). If it still fails, it runs once
more with `record_failures=True`, which stores the failing samples as failed (with the reason)
and completes the shard. A shard that cannot be completed even then (a crashing worker) stays
not done and is listed in the report; the run goes on. A failure that retrying cannot fix
(disk full, permission denied, a store of another config or catalogue: see
`datasets.shard.deterministic_failure`) is not retried: the run stops at the first one,
cancels the shards not started, and reports it once.

Refused up front: a `memory://` store (the workers are other processes and cannot reach it),
and a store another client is generating into (`datasets/store_lock.py`).

Cluster: by default a `distributed.LocalCluster` with one single-threaded worker process per
core; on a GPU machine one worker per GPU, pinned to it, plus CPU workers only when asked
(`cpu_workers`; `datasets/worker_plan.py`); `scheduler_address` or `scheduler_file` joins an existing cluster instead (dask-jobqueue,
dask-mpi, dask-cuda …), whose workers must be able to import stemdl and reach the store URL.
The cluster starts, and its workers import abTEM, while the client builds the catalogue and
plans the store; the client's catalogue then travels to the workers with the tasks (no worker
rebuilds it, or needs the CIF directory). A store already complete starts no cluster.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import Any

import dask
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster, as_completed, wait
from tqdm.auto import tqdm

from stemdl.configs import SimulationConfig, StemdlConfig, UsageError
from stemdl.datasets.plan import plan_store
from stemdl.datasets.shard import (
    ShardResult,
    Simulator,
    catalogue_for,
    simulate_shard_task,
    warm_worker,
)
from stemdl.datasets.storage import (
    StoreError,
    check_remote,
    is_local,
    normalize_store_url,
    user_storage_options,
)
from stemdl.datasets.store import as_config, open_stemdl_store
from stemdl.datasets.store_lock import store_lock
from stemdl.datasets.worker_plan import WorkerSpec, worker_plan
from stemdl.datasets.worker_start import FORKSERVER_CONFIG, use_forkserver, worker_env
from stemdl.simulate.device import cuda_device_count


@dataclass
class GenerationReport:
    """What a `generate` call did; `complete` is True when every shard is done."""

    store_url: str
    num_samples: int
    num_shards: int
    shards_already_done: int = 0
    shards_written: list[int] = field(default_factory=list)
    shards_failed: dict[int, str] = field(default_factory=dict)
    failed_samples: list[tuple[int, str]] = field(default_factory=list)
    catalogue_skipped: list[tuple[str, str]] = field(default_factory=list)
    samples_simulated: int = 0
    elapsed_s: float = 0.0
    stopped: str | None = None  # a deterministic failure that stopped the run (reported once)
    shards_not_attempted: list[int] = field(default_factory=list)
    samples_by_device: dict[str, int] = field(default_factory=dict)  # "cpu"/"gpu" -> samples

    @property
    def complete(self) -> bool:
        return not self.shards_failed and not self.stopped and (
            self.shards_already_done + len(self.shards_written) == self.num_shards
        )

    @property
    def samples_per_s(self) -> float:
        return self.samples_simulated / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"store {self.store_url}: {self.num_samples} samples in {self.num_shards} shards",
            f"  shards already done: {self.shards_already_done}, written now: "
            f"{len(self.shards_written)}, failed: {len(self.shards_failed)}",
            f"  simulated {self.samples_simulated} samples in {self.elapsed_s:.1f} s "
            f"({self.samples_per_s:.2f} samples/s)",
        ]
        if len(self.samples_by_device) > 1:  # mixed workers: say who computed what
            lines.append("  samples by device: " + ", ".join(
                f"{device} {count}" for device, count in sorted(self.samples_by_device.items())))
        for index, reason in self.failed_samples:
            lines.append(f"  failed sample {index}: {reason}")
        if self.stopped:
            not_done = sorted([*self.shards_failed, *self.shards_not_attempted])
            lines.append(f"  STOPPED: {self.stopped}")
            lines.append(f"  shards NOT done: {_shard_list(not_done)} (a failure that retrying "
                         "cannot fix: the shards were not retried)")
        else:
            for shard, reason in sorted(self.shards_failed.items()):
                lines.append(f"  shard {shard} NOT done: {reason}")
        for source, reason in self.catalogue_skipped:
            lines.append(f"  skipped structure {source}: {reason}")
        if self.complete:
            lines.append("  complete")
        elif self.stopped:
            lines.append("  INCOMPLETE: fix the cause above (free space, permissions, the store "
                         "URL), then run the same command again: done shards are kept")
        else:
            lines.append("  INCOMPLETE: run the same command again (it retries the shards not "
                         "done and keeps the rest)")
        return "\n".join(lines)


def _shard_list(shards: list[int], shown: int = 20) -> str:
    more = f" … and {len(shards) - shown} more" if len(shards) > shown else ""
    return ", ".join(map(str, shards[:shown])) + more


# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting any glibc malloc
# threshold switches off glibc's dynamic mmap threshold, so every multislice buffer (tens of MB)
# is mmap'ed and unmapped again, and each reuse page-faults the whole buffer back in (with
# abTEM's multislice a `small` sample took about twice as long; stemdl's engine reuses its
# buffers, and both settings together now cost a few percent: benchmarks/worker_settings.py,
# benchmarks/RESULTS.md). Simulation reuses the same buffer sizes sample after sample, so the
# default allocator is what it needs. The thread caps
# (OMP/MKL/OpenBLAS = 1) stay. The worker's statistical profiler (a thread that takes the GIL
# every 10 ms to walk the task's stack, for the dashboard's profile page) is off: generation
# tasks are one known function. Workers of an existing cluster are started by their own nanny
# and config: see docs/generate-on-a-cluster.md.
LOCAL_WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
}


def _check_cluster_args(scheduler_address: str | None, scheduler_file: str | None,
                        n_workers: int | None, cpu_workers: int | None = None) -> None:
    if scheduler_address and scheduler_file:
        raise UsageError("give scheduler_address or scheduler_file, not both")
    if (scheduler_address or scheduler_file) and (n_workers is not None
                                                  or cpu_workers is not None):
        raise UsageError("n_workers sizes the local cluster; it cannot be used with an existing "
                         "cluster (scheduler_address / scheduler_file)")
    if n_workers is not None and n_workers < 1:
        raise UsageError(f"n_workers must be >= 1, got {n_workers}")


@contextlib.contextmanager
def dask_client(scheduler_address: str | None = None, scheduler_file: str | None = None,
                n_workers: int | None = None, cpu_workers: int | None = None,
                device: str = "auto") -> Iterator[Client]:
    """A client to an existing cluster, or to a local cluster sized to this machine (closed
    after): one worker per core, or one per GPU (`datasets.worker_plan`; `device` is
    `simulation.device`)."""
    _check_cluster_args(scheduler_address, scheduler_file, n_workers, cpu_workers)
    if scheduler_address or scheduler_file:
        client = Client(scheduler_address, scheduler_file=scheduler_file)
        try:
            yield client
        finally:
            client.close()
        return
    plan = worker_plan(cuda_device_count(), device, n_workers, cpu_workers)
    settings = LOCAL_WORKER_CONFIG if any(spec.gpu for spec in plan) else {
        **LOCAL_WORKER_CONFIG, **FORKSERVER_CONFIG}
    with dask.config.set(settings), local_cluster(plan) as cluster:
        # Not `with Client(...)`: that sets a context variable which must be reset in the
        # thread that set it, and generation starts the cluster in a thread of its own.
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()  # first: its results released, no worker leaves "lost" tasks behind
            close_workers_first(cluster)


def local_cluster(plan: list[WorkerSpec]) -> SpecCluster:
    """A LocalCluster of single-threaded worker processes; with GPU workers in the plan, a
    SpecCluster of the same workers, each started with its own environment (its GPU)."""
    if not any(spec.gpu for spec in plan):
        # Workers forked from one process that imported abTEM once (datasets/worker_start.py;
        # `dask_client` keeps FORKSERVER_CONFIG set while the cluster lives, so a worker that
        # its nanny restarts is forked too).
        forked = dask.config.get("distributed.worker.multiprocessing-method") == "forkserver"
        if forked:
            use_forkserver()
        return LocalCluster(n_workers=len(plan), threads_per_worker=1, processes=True,
                            dashboard_address=":0", silence_logs=logging.ERROR,
                            env=worker_env() if forked else None)
    workers = {spec.name: {"cls": Nanny, "options": {"nthreads": 1, "env": spec.env,
                                                      "silence_logs": logging.ERROR}}
               for spec in plan}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR,
                       name="stemdl-gpu")


def close_workers_first(cluster: SpecCluster, timeout_s: float = 30.0) -> None:
    """Close every worker of `cluster`, and wait until the scheduler has seen them go, before
    the scheduler closes. Why: a worker still alive when the scheduler closes sends its next
    heartbeat to a closed port and logs "Failed to communicate with scheduler during
    heartbeat" as an ERROR with a traceback (seen on a GPU machine, where workers take longer
    to close). After `timeout_s` the cluster's own close goes on (and kills what is left)."""
    cluster.scale(0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not cluster.workers and not cluster.scheduler_info.get("workers"):
            return
        time.sleep(0.05)


@contextlib.contextmanager
def _client_started_in_background(scheduler_address: str | None, scheduler_file: str | None,
                                  n_workers: int | None, cpu_workers: int | None,
                                  simulator: Simulator | None, simulation: SimulationConfig
                                  ) -> Iterator[Callable[[], Client]]:
    """Start (or join) the cluster and warm the simulator in its workers (abTEM imported, the
    config's kernels compiled: `shard.warm_worker`), in a thread, while the caller builds the
    catalogue and plans the store; yields a function that waits for the client. Why: cluster
    start-up and importing abTEM in every worker take seconds each, and so does the
    catalogue; run one after the other they were half of a 96-sample run."""
    with contextlib.ExitStack() as opened, \
            ThreadPoolExecutor(1, thread_name_prefix="stemdl-dask-start") as pool:

        def start() -> Client:
            client = opened.enter_context(dask_client(scheduler_address, scheduler_file,
                                                      n_workers, cpu_workers,
                                                      simulation.device))
            client.run(warm_worker, simulator, simulation.model_dump_json())
            return client

        started = pool.submit(start)
        try:
            yield started.result
        finally:
            wait_for([started])  # what the thread opened is closed by `opened`, after it ends


def _store_is_complete(url: str) -> bool:
    """True when `url` is a planned stemdl store with every shard done (then no cluster is
    started); anything else, including an unreadable store, is left to `plan_store` to judge."""
    try:
        store = open_stemdl_store(url, mode="r")
        return bool(store.attrs.get("planning_complete")) and bool(store.done_mask().all())
    except Exception:  # broad: only decides whether to start a cluster; plan_store then judges
        return False


def _catalogue_on_worker(catalogue: Any) -> Any:
    """The task whose result is the catalogue on the workers (see `_run_tasks`)."""
    return catalogue


def _run_tasks(client: Client, todo: list[int], config_dict: dict[str, Any], url: str,
               retries: int, simulator: Simulator | None, catalogue: Any,
               report: GenerationReport, progress: bool, shard_size: int,
               num_samples: int) -> None:
    # The client's catalogue (0.7 MB for `small`), passed to every task by reference instead
    # of every worker rebuilding it (seconds) from the config. It is the result of one task
    # that returns its argument, not scattered data: Dask can run that task again when every
    # worker holding the result has died (scattered data would be lost, and with it every
    # shard still to do). Workers fetch it from one another when their first task needs it.
    shared_catalogue = client.submit(_catalogue_on_worker, catalogue, pure=False,
                                     key=f"catalogue-{time.time_ns()}")
    # `--storage-options` given to this client (endpoint, credentials) go to every task: a
    # worker is another process, maybe on another machine, and has only its environment.
    options = user_storage_options() or None
    futures = {}
    for k in todo:
        future = client.submit(simulate_shard_task, config_dict, url, k, simulator=simulator,
                               catalogue=shared_catalogue, storage_options=options,
                               retries=retries, pure=False,
                               key=f"simulate_shard-{k}-{time.time_ns()}")
        futures[future] = (k, False)
    began = time.perf_counter()
    samples_done = 0
    bar = tqdm(total=len(todo), unit="shard", desc="simulating", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    pending = as_completed(list(futures))
    with bar:
        for future in pending:
            shard, last_chance = futures.pop(future)
            try:
                result: ShardResult = future.result()
            except Exception as error:  # broad: a task's own error, any type, is retried
                if not last_chance:
                    retry = client.submit(simulate_shard_task, config_dict, url, shard,
                                          record_failures=True, simulator=simulator,
                                          catalogue=shared_catalogue,
                                          storage_options=options, pure=False,
                                          key=f"simulate_shard-final-{shard}-{time.time_ns()}")
                    futures[retry] = (shard, True)
                    pending.add(retry)
                    continue
                report.shards_failed[shard] = f"{type(error).__name__}: {error}"
                bar.update(1)
                continue
            if result.fatal is not None:
                # The same on every shard (a full disk, an unwritable store): stop here, say
                # it once, and leave the rest for a run after the cause is fixed.
                report.shards_failed[shard] = result.fatal
                report.stopped = report.stopped or result.fatal
                bar.update(1)
                samples_done += _drain_after_stop(client, futures, report)
                break
            samples_done += _record(report, shard, result)
            bar.update(1)
            rate = samples_done / max(time.perf_counter() - began, 1e-9)
            bar.set_postfix_str(f"{samples_done}/{num_samples} samples, {rate:.2f} samples/s")
    report.samples_simulated = samples_done
    report.failed_samples.sort()


def _drain_after_stop(client: Client, futures: dict[Any, tuple[int, bool]],
                      report: GenerationReport) -> int:
    """After a deterministic failure: cancel the tasks not started, and wait for the running
    ones (a worker closed mid-task logs a traceback per heartbeat), keeping what they did.
    Returns the samples they wrote."""
    processing = {key for keys in client.processing().values() for key in keys}
    running = [future for future in futures if future.key in processing]
    queued = [future for future in futures if future.key not in processing]
    client.cancel(queued)
    report.shards_not_attempted = sorted(futures[future][0] for future in queued)
    wait(running)
    written = 0
    for future in running:
        shard = futures[future][0]
        try:
            result: ShardResult = future.result()
        except Exception as error:  # broad: a task's own error, any type, is reported per shard
            report.shards_failed[shard] = f"{type(error).__name__}: {error}"
            continue
        if result.fatal is not None:
            report.shards_failed[shard] = result.fatal
        else:
            written += _record(report, shard, result)
    futures.clear()
    return written


def _record(report: GenerationReport, shard: int, result: ShardResult) -> int:
    """Add a finished shard to the report; returns the samples it simulated now."""
    report.failed_samples.extend(result.failures)
    if result.already_done:
        report.shards_already_done += 1
        return 0
    report.shards_written.append(shard)
    for device, count in result.devices.items():
        report.samples_by_device[device] = report.samples_by_device.get(device, 0) + count
    return result.num_samples


def generate(config: StemdlConfig | dict[str, Any], store_url: str, *, scheduler_address: str | None = None,
             scheduler_file: str | None = None, n_workers: int | None = None,
             cpu_workers: int | None = None, progress: bool = True, retries: int = 2,
             simulator: Simulator | None = None) -> GenerationReport:
    """Create or finish the store at `store_url` for `config`; see the module docstring."""
    began = time.perf_counter()
    config = as_config(config)
    url = normalize_store_url(store_url)
    if retries < 0:
        raise UsageError(f"retries must be >= 0, got {retries}")
    if url.startswith("memory://"):
        # An in-memory filesystem lives in one process; Dask workers (processes of a
        # LocalCluster, or other machines) would each write into their own, and no shard
        # would ever reach this one. Re-running cannot help, so refuse before any work.
        raise StoreError(
            f"{url!r}: a memory:// store lives in this process's memory, and Dask workers are "
            "other processes that cannot reach it; generate into a local path or a shared "
            "URL (file://, s3://, ...)")
    _check_cluster_args(scheduler_address, scheduler_file, n_workers, cpu_workers)
    if not is_local(url):
        check_remote(url)  # a wrong endpoint, no credentials, no bucket: said before any work
    if not (scheduler_address or scheduler_file):  # a refused worker plan ('gpu' without a
        # GPU) is said before any store is created, not from the cluster's thread after
        worker_plan(cuda_device_count(), config.simulation.device, n_workers, cpu_workers)
    with store_lock(url), contextlib.ExitStack() as cluster:  # one generating client per store
        # (datasets/store_lock.py). A store left complete needs no cluster; otherwise the
        # cluster starts while the catalogue is built and the store planned.
        wait_for_client = None if _store_is_complete(url) else cluster.enter_context(
            _client_started_in_background(scheduler_address, scheduler_file, n_workers,
                                          cpu_workers, simulator, config.simulation))
        # Built only once the store's config is known to match (a refusal should not wait
        # seconds for it); cached per process, so the tasks below get this very object.
        store = plan_store(config, url, lambda: catalogue_for(config, simulator))
        done = store.done_mask()
        todo = [k for k in range(store.num_shards) if not done[k]]
        skipped = store.attrs.get("catalogue_skipped", [])
        report = GenerationReport(url, store.num_samples, store.num_shards,
                                  shards_already_done=int(done.sum()),
                                  catalogue_skipped=[(str(s), str(r)) for s, r in skipped])
        if todo:
            wait_for_client = wait_for_client or cluster.enter_context(
                _client_started_in_background(scheduler_address, scheduler_file, n_workers,
                                              cpu_workers, simulator, config.simulation))
            client = wait_for_client()
            if progress:
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            _run_tasks(client, todo, config.to_dict(), url, retries, simulator,
                       catalogue_for(config, simulator), report, progress, store.shard_size,
                       store.num_samples)
    report.shards_written.sort()
    report.elapsed_s = time.perf_counter() - began
    return report
