"""Generation refuses what cannot work and says once what went wrong: an unreachable store
URL, a changed catalogue on resume, a full disk (not retried), through real processes."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ase.build import bulk

from stemdl.configs import config_from_dict
from stemdl.datasets import shard as shard_module
from stemdl.datasets.fingerprint import CatalogueMismatchError
from stemdl.datasets.generate import generate
from stemdl.datasets.plan import plan_store
from stemdl.datasets.shard import catalogue_for, simulate_shard
from stemdl.datasets.store_lock import store_lock
from stemdl.datasets.verify import verify_store


def test_memory_store_is_refused_before_any_work(run_python) -> None:
    result = run_python(["-m", "stemdl.pipeline", "simulate", "tiny", "--out", "memory://x/s.zarr"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "memory://" in result.stderr and "cannot reach" in result.stderr, result.stderr
    assert "run the same command again" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_second_client_is_told_who_holds_the_store(tmp_path: Path, run_python) -> None:
    store = str(tmp_path / "store.zarr")
    with store_lock(store):  # this process is the first client
        result = run_python(["-m", "stemdl.pipeline", "simulate", "tiny", "--out", store,
                                "--workers", "1", "--no-progress"])
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-3000:])
    assert f"{store} is locked" in result.stderr, result.stderr
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in result.stderr, result.stderr
    assert not Path(store).exists()  # refused before planning


def test_changed_cif_directory_is_refused_on_resume(tmp_path: Path, run_python, small_config, write_cif, write_config) -> None:
    cifs = tmp_path / "cifs"
    cifs.mkdir()
    write_cif(cifs / "al.cif", bulk("Al", "fcc", a=4.05, cubic=True))
    data = small_config(num_samples=8, shard_size=4).to_dict()
    data["simulation"]["structures"]["cif_dir"] = str(cifs)
    config = config_from_dict(data)
    config_path = write_config(config, tmp_path / "cif.yaml")
    store = str(tmp_path / "store.zarr")
    # What a killed `stemdl simulate` leaves: planned, one shard of two done.
    plan_store(config, store, catalogue_for(config))
    simulate_shard(config, store, 0)
    write_cif(cifs / "ni.cif", bulk("Ni", "fcc", a=3.52, cubic=True))

    result = run_python(["-m", "stemdl.pipeline", "simulate", str(config_path), "--out", store,
                            "--workers", "1", "--no-progress"])
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-3000:])
    assert "catalogue differs" in result.stderr and "added: cif-ni-" in result.stderr, result.stderr
    # A worker that sees the new directory (a fresh process: no cached catalogue) refuses too.
    shard_module._catalogue.cache_clear()
    shard_module._fingerprint.cache_clear()
    with pytest.raises(CatalogueMismatchError, match="added: cif-ni-"):
        simulate_shard(config, store, 1)
    (cifs / "ni.cif").unlink()
    shard_module._catalogue.cache_clear()
    shard_module._fingerprint.cache_clear()
    assert not verify_store(store).shards_done[1:]  # nothing was mixed in


@contextlib.contextmanager
def full_disk(mount_point: Path, size: str = "4m") -> Iterator[Path]:
    """A small tmpfs at `mount_point` (needs root; skipped where mounting is not allowed)."""
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(directory: Path) -> None:
    """Write until the file system says it is full."""
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    assert shutil.disk_usage(directory).free < 65536


def test_full_disk_stops_once_without_retries(tmp_path: Path,
                                              capfd: pytest.CaptureFixture[str], small_config, synthetic) -> None:
    config = small_config(num_samples=24, shard_size=4)
    counts = tmp_path / "simulated.txt"
    counts.touch()
    with full_disk(tmp_path / "disk") as disk:
        store = str(disk / "store.zarr")
        plan_store(config, store, synthetic.build_catalogue(config.simulation))
        fill(disk)
        # Real worker processes; the simulator counts every sample they simulate.
        report = generate(config, store, n_workers=2, progress=False,
                          simulator=dataclasses.replace(synthetic, count_file=str(counts)))
    summary = report.summary()
    assert not report.complete, summary
    assert summary.count("No space left on device") == 1, summary
    assert "STOPPED" in summary and "were not retried" in summary, summary
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr, stderr[-3000:]
    simulated = counts.read_text().split()
    # Without the fix every shard ran 1 + 2 retries + 1 final attempt: 96 simulations of 24
    # samples. Now no sample is simulated twice (how many shards start before the client
    # hears of the first failure depends on the machine's speed).
    assert simulated and len(simulated) == len(set(simulated)), sorted(simulated)
