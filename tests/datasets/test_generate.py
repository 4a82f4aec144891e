"""Generation with Dask on the real simulator: round trip, resume after SIGKILL, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from distributed import LocalCluster

from stemdl.configs import config_from_dict, load_config
from stemdl.datasets.generate import generate
from stemdl.datasets.inspect import read_sample
from stemdl.datasets.plan import ConfigMismatchError
from stemdl.datasets.records import read_field
from stemdl.datasets.store import open_stemdl_store
from stemdl.datasets.verify import verify_store
from stemdl.simulate import build_catalogue, simulate_sample

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_store) -> Path:
    return tiny_store


def test_generated_store_holds_what_the_simulator_returns(reference: Path, assert_records_equal) -> None:
    config = load_config("tiny")
    report = verify_store(str(reference))
    assert report.complete and not report.failed_samples, report.summary()
    catalogue = build_catalogue(config.simulation)
    for index in (0, 13):
        sample = simulate_sample(config.simulation, index, catalogue)
        stored = read_sample(str(reference), index)
        np.testing.assert_array_equal(stored["cbed"], sample.cbed.astype(np.float16))
        np.testing.assert_array_equal(stored["potential"], sample.potential)
        assert_records_equal(stored["record"], sample.record)  # every SampleRecord field
    attrs = dict(zarr.open_group(str(reference), mode="r").attrs)
    table = attrs["splits"]
    listed = sorted(m for materials in table.values() for m in materials)
    assert listed == sorted(m.material_id for m in catalogue.materials)
    assert not set(table["train"]) & (set(table["validation"]) | set(table["test"]))


def test_another_config_is_refused(reference: Path, run_python, write_config) -> None:
    data = load_config("tiny").to_dict()
    data["simulation"]["seed"] = 8
    with pytest.raises(ConfigMismatchError, match=r"simulation\.seed: store has 7, requested 8"):
        generate(config_from_dict(data), str(reference), progress=False)
    # The same refusal through the command line, with exit status 2.
    config_path = write_config(config_from_dict(data), reference.parent / "seed8.yaml")
    result = run_python(["-m", "stemdl.pipeline", "simulate", str(config_path), "--out",
                            str(reference)])
    assert result.returncode == 2 and "simulation.seed" in result.stderr, result.stderr
    assert verify_store(str(reference)).complete


def _done_shards(store: Path) -> int:
    try:
        return int(np.asarray(zarr.open_group(str(store), mode="r")["shard_done"][:]).sum())
    except Exception:
        return 0


def _worker_processes(client_pid: int) -> list[psutil.Process]:
    """The Dask worker processes under a client (spawned, or forked by its fork server:
    datasets/worker_start.py). A process that ends while it is looked at
    (a zombie not yet reaped has no command line: psutil raises) is skipped, not an error:
    the listing used to raise there, a race with whatever the client reaps."""
    workers = []
    for process in psutil.Process(client_pid).children(recursive=True):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in command:  # a spawned worker
            workers.append(process)
        elif "forkserver" in command and process.ppid() != client_pid:
            workers.append(process)  # forked by the fork server (the client's child), not it
    return workers


@pytest.mark.slow
def test_sigkill_worker_then_client_then_resume_is_bit_identical(
        reference: Path, tmp_path: Path, files_except_creation_time, wait_for) -> None:
    store = tmp_path / "killed.zarr"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "stemdl.pipeline", "simulate", "tiny", "--out", str(store),
         "--workers", "2", "--no-progress"], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # 300 s: a bound on a hang, not a speed check (beside another job a tiny shard can take
        # minutes on 2 cores; 120 s timed out once there)
        wait_for(lambda: _done_shards(store) >= 1, 300, "the first shard")
        # SIGKILL one Dask worker process: Dask reschedules its task, the run goes on.
        workers = _worker_processes(proc.pid)
        assert workers, "no worker processes found"
        workers[-1].send_signal(signal.SIGKILL)
        done_then = _done_shards(store)
        wait_for(lambda: _done_shards(store) > done_then, 300, "a shard after the worker kill")
        # SIGKILL the client, mid-run; its worker processes notice and exit on their own.
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"worker processes outlived the client: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    partial = verify_store(str(store))
    assert partial.ok, partial.summary()  # nothing half-written is marked done
    assert 0 < len(partial.shards_done) < 6 and partial.shards_incomplete, partial.summary()

    report = generate(load_config("tiny"), str(store), n_workers=2, progress=False)
    assert report.complete
    assert report.shards_already_done == len(partial.shards_done)
    assert sorted(report.shards_written) == partial.shards_incomplete  # only those re-simulated
    assert files_except_creation_time(store) == files_except_creation_time(reference)


@pytest.mark.slow
def test_failing_sample_and_bad_cif_do_not_stop_generation(tmp_path: Path, poisoned_simulator) -> None:
    cif_dir = tmp_path / "cifs"
    cif_dir.mkdir()
    (cif_dir / "broken.cif").write_text("data_broken\n_cell_length_a banana\n")
    data = load_config("tiny").to_dict()
    data["simulation"]["structures"]["cif_dir"] = str(cif_dir)
    data["dataset"].update(num_samples=8, shard_size=4)
    config = config_from_dict(data)
    store = tmp_path / "poisoned.zarr"
    report = generate(config, str(store), n_workers=2, progress=False, retries=1,
                      simulator=poisoned_simulator)
    assert report.complete, report.summary()
    assert [i for i, _ in report.failed_samples] == list(poisoned_simulator.indices)
    assert "poisoned sample 5" in report.failed_samples[0][1]
    assert any("broken.cif" in source for source, _ in report.catalogue_skipped)
    assert "failed sample 5" in report.summary()

    check = verify_store(str(store))
    assert check.complete, check.summary()
    assert [i for i, _ in check.failed_samples] == [5]
    stemdl_store = open_stemdl_store(str(store))
    assert list(read_field(stemdl_store, "status")) == [1, 1, 1, 1, 1, 2, 1, 1]
    assert "poisoned sample 5" in str(read_field(stemdl_store, "failure_reason", [5])[0])
    assert read_field(stemdl_store, "index", [5])[0] == 5
    assert any("broken.cif" in source for source, _ in stemdl_store.attrs["catalogue_skipped"])


def test_joins_an_existing_cluster(tmp_path: Path, small_config, synthetic) -> None:
    config = small_config(num_samples=6, shard_size=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        report = generate(config, str(tmp_path / "s.zarr"), scheduler_address=cluster.scheduler_address,
                          progress=False, simulator=synthetic)
        assert report.complete and sorted(report.shards_written) == [0, 1, 2]
        with pytest.raises(ValueError, match="n_workers sizes the local cluster"):
            generate(config, str(tmp_path / "t.zarr"), scheduler_address=cluster.scheduler_address,
                     n_workers=2, progress=False, simulator=synthetic)
    assert verify_store(str(tmp_path / "s.zarr")).complete


def test_catalogue_travels_to_workers_unchanged() -> None:
    """Generation sends the client's catalogue to the workers (pickled) instead of each
    rebuilding it; what arrives must be the same catalogue, fingerprint and splits included."""
    import pickle

    from stemdl.datasets.fingerprint import catalogue_fingerprint

    catalogue = build_catalogue(load_config("tiny").simulation)
    arrived = pickle.loads(pickle.dumps(catalogue))
    assert catalogue_fingerprint(arrived) == catalogue_fingerprint(catalogue)
    assert dict(arrived.splits) == dict(catalogue.splits)
    with pytest.raises(TypeError):  # still read-only after the trip
        arrived.splits["x"] = "train"  # type: ignore[index]


def test_complete_store_starts_no_cluster(reference: Path) -> None:
    """Re-running on a finished store must not start (or join) a cluster: an address where no
    scheduler listens would make it fail or hang if it tried."""
    began = time.perf_counter()
    report = generate(load_config("tiny"), str(reference), progress=False,
                      scheduler_address="tcp://127.0.0.1:9")
    assert report.complete and not report.shards_written
    assert report.shards_already_done == report.num_shards
    assert time.perf_counter() - began < 20


def test_the_only_worker_dying_loses_nothing(tmp_path: Path, small_config) -> None:
    """The only worker is SIGKILLed in its second shard, after it received the catalogue: its
    nanny starts a new one, Dask recomputes the catalogue's task there (scattered data would
    be lost for good, and with it every shard still to do), and the run completes."""
    from stemdl.testing.synthetic_simulator import KillOnceSimulator

    flag = tmp_path / "killed"
    config = small_config(num_samples=6, shard_size=2)
    report = generate(config, str(tmp_path / "s.zarr"), n_workers=1, progress=False,
                      simulator=KillOnceSimulator(str(flag)))
    assert flag.exists(), "the worker was never killed: the test tests nothing"
    assert report.complete, report.summary()
    # A shard the dead worker had finished but not yet reported is run again and found done.
    assert len(report.shards_written) + report.shards_already_done == 3, report.summary()
    assert verify_store(str(tmp_path / "s.zarr")).complete


def test_a_field_added_since_the_store_was_made_compares_as_its_default() -> None:
    """A store made before `scan.shift_a` existed records no such field; its config equals one
    with the default (0, the old behaviour) and differs from one with a shift."""
    from stemdl.datasets.plan import config_differences

    current = load_config("tiny").to_dict()
    recorded = load_config("tiny").to_dict()
    del recorded["simulation"]["scan"]["shift_a"]
    assert config_differences(recorded, current) == []
    current["simulation"]["scan"]["shift_a"] = 1.0
    assert config_differences(recorded, current) == [
        "simulation.scan.shift_a: store has 0.0, requested 1.0"]


WARM_WORKER_SCRIPT = """
import sys
from numba.core.dispatcher import Dispatcher
from stemdl.configs import load_config
from stemdl.datasets.shard import warm_worker
from stemdl.simulate import build_catalogue, simulate_sample

def compiled():
    return {f"{name}.{attr}": len(obj.signatures) for name, module in list(sys.modules.items())
            if name.startswith(("abtem", "stemdl"))
            for attr, obj in list(vars(module).items()) if isinstance(obj, Dispatcher)}

simulation = load_config("tiny").simulation.model_copy(update=dict(UPDATE))
warm_worker(None, simulation.model_dump_json())
before = compiled()
simulate_sample(simulation, 0, build_catalogue(simulation))
after = compiled()
print("compiled by the first sample:", {k: v for k, v in after.items() if v > before.get(k, 0)})
print("compiled by the warm-up:", sum(before.values()))
"""


@pytest.mark.parametrize("update", [{}, {"parametrization": "lobato", "projection": "finite"}])
def test_a_warmed_worker_compiles_nothing_in_its_first_sample(run_python, update) -> None:  # type: ignore[no-untyped-def]
    """`warm_worker` (what generation runs in each worker while the client builds the catalogue)
    compiles the numba kernels of the config's parametrization and projection, so a worker's
    first sample compiles none (they were ~1.5 s of it on the project's VM)."""
    result = run_python(["-c", WARM_WORKER_SCRIPT.replace("UPDATE", repr(update))])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiled by the first sample: {}" in result.stdout, result.stdout
    assert "compiled by the warm-up: 0" not in result.stdout, result.stdout
