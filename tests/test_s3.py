"""Stores on a real S3 endpoint: moto's server mode (`ThreadedMotoServer`, an HTTP S3 API on
127.0.0.1), reached by s3fs over the network exactly as AWS, MinIO or Ceph would be; nothing on
the client side is mocked. Every command runs as a user runs it, `python -m stemdl.pipeline`,
with the endpoint and credentials in the standard AWS variables or in `--storage-options`.

The failure tests are fast; the end-to-end one (simulate, SIGKILL, resume, verify, repair,
inspect, stage, train from the staged copy, predict from S3) is marked slow.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stemdl.configs import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]
BUCKET = "stemdl-test"
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EC2_METADATA_DISABLED")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on a free port with one bucket, and this process's AWS variables
    pointing at it (restored after the module); yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port())
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    nowhere = tmp_path_factory.mktemp("aws") / "absent"
    saved = {name: os.environ.get(name) for name in AWS_VARIABLES}
    for name in AWS_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true",  # no instance-metadata lookups
                      AWS_SHARED_CREDENTIALS_FILE=str(nowhere),  # nor ~/.aws of the machine
                      AWS_CONFIG_FILE=str(nowhere))
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _env(**changes: str | None) -> dict[str, str]:
    """This environment (AWS variables at the server) without launcher variables, changed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_", "PMI_", "OMPI_"))}
    env.setdefault("OMP_NUM_THREADS", "1")
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def stemdl(*args: str, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stemdl.pipeline", *args], cwd=REPO,
                          env=env or _env(), text=True, capture_output=True, timeout=timeout)


def _objects(prefix: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return fs.find(f"{BUCKET}/{prefix}")


def _one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 2, one line on stderr (no traceback, no retry chatter) containing `expected`."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-3000:])
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_wrong_endpoint_is_one_clear_message_quickly(s3_endpoint: str) -> None:
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    began = time.monotonic()
    result = stemdl("simulate", "tiny", "--out", f"s3://{BUCKET}/wrong-endpoint.zarr",
                    "--no-progress", env=_env(AWS_ENDPOINT_URL=closed))
    elapsed = time.monotonic() - began
    _one_line_error(result, "cannot reach the S3 endpoint", closed, "AWS_ENDPOINT_URL")
    assert elapsed < 60, f"{elapsed:.0f} s: retries hid the failure"  # ~5 s with 3 attempts
    assert _objects("wrong-endpoint.zarr") == []
    # The same through --storage-options, which wins over the variables.
    result = stemdl("inspect", f"s3://{BUCKET}/wrong-endpoint.zarr", "--storage-options",
                    f'{{"endpoint_url": "{closed}"}}')
    _one_line_error(result, "cannot reach the S3 endpoint", closed)


def test_missing_credentials_are_one_clear_message(s3_endpoint: str) -> None:
    result = stemdl("simulate", "tiny", "--out", f"s3://{BUCKET}/no-credentials.zarr",
                    "--no-progress",
                    env=_env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None))
    _one_line_error(result, "no S3 credentials", "AWS_ACCESS_KEY_ID", "--storage-options")
    assert _objects("no-credentials.zarr") == []


def test_missing_bucket_is_one_clear_message(s3_endpoint: str) -> None:
    for command in (["simulate", "tiny", "--out", "s3://no-such-bucket/store.zarr",
                     "--no-progress"], ["verify", "s3://no-such-bucket/store.zarr"]):
        _one_line_error(stemdl(*command), "bucket 'no-such-bucket' does not exist", s3_endpoint)


def test_storage_options_give_endpoint_and_credentials(s3_endpoint: str, tmp_path: Path) -> None:
    """With no AWS variables at all, `--storage-options` alone reaches the server: an absent
    store is then refused as absent (the bucket was reached), not as unreachable."""
    options = (f'{{"endpoint_url": "{s3_endpoint}", "key": "testing", "secret": "testing", '
               '"client_kwargs": {"region_name": "us-east-1"}}')
    env = _env(AWS_ENDPOINT_URL=None, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
    result = stemdl("inspect", f"s3://{BUCKET}/absent.zarr", "--storage-options", options,
                    env=env)
    line = _one_line_error(result, "no Zarr v3 group", f"s3://{BUCKET}/absent.zarr")
    assert "cannot reach" not in line and "credentials" not in line, line
    bad = stemdl("inspect", f"s3://{BUCKET}/absent.zarr", "--storage-options", "{endpoint}")
    _one_line_error(bad, "--storage-options is not valid JSON")


def _done_shards(url: str) -> int:
    from stemdl.datasets.store import open_stemdl_store

    try:
        return int(open_stemdl_store(url).done_mask().sum())
    except Exception:  # not planned yet
        return 0


@pytest.mark.slow
def test_the_whole_path_on_s3(s3_endpoint: str, tmp_path: Path, write_config, wait_for) -> None:  # type: ignore[no-untyped-def]
    from stemdl.datasets.inspect import read_sample
    from stemdl.datasets.storage import filesystem, shard_key
    from stemdl.datasets.store import open_stemdl_store
    from stemdl.simulate import build_catalogue, simulate_sample

    url = f"s3://{BUCKET}/store.zarr"
    data = load_config("tiny").to_dict()
    data["dataset"]["num_samples"] = 48  # 12 shards on one worker: seconds to kill it in
    data["train"].update(max_steps=2, validate_at_start=False)
    config = config_from_dict(data)
    config_path = write_config(config, tmp_path / "tiny48.yaml")

    # simulate, SIGKILLed (client and its Dask workers) after its first shard; then resume
    log = tmp_path / "killed.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stemdl.pipeline", "simulate", str(config_path), "--out",
             url, "--workers", "1", "--no-progress"], cwd=REPO, env=_env(),
            start_new_session=True, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _done_shards(url) >= 1 or proc.poll() is not None, 180,
                  "the first shard on S3")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = _done_shards(url)
    assert 0 < killed_at < 12, (killed_at, log.read_text()[-3000:])
    partial = stemdl("verify", url)  # what was written is good; it is not claimed complete
    assert partial.returncode == 1 and "not yet generated" in partial.stdout, partial.stdout
    assert "PROBLEM" not in partial.stdout, partial.stdout
    refused = stemdl("stage", url, "--to", str(tmp_path / "early"), "--node", "0",
                     "--nodes", "1")
    _one_line_error(refused, "incomplete")

    resumed = stemdl("simulate", str(config_path), "--out", url, "--workers", "1",
                     "--no-progress")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]
    done_then = _done_shards(url)
    assert done_then == 12
    assert f"shards already done: {killed_at}, written now: {12 - killed_at}" in resumed.stdout, \
        resumed.stdout
    catalogue = build_catalogue(config.simulation)
    for index in (0, 47):  # the S3 store holds what the simulator computes
        stored = read_sample(url, index)
        sample = simulate_sample(config.simulation, index, catalogue)
        np.testing.assert_array_equal(stored["cbed"], sample.cbed.astype(np.float16))
        np.testing.assert_array_equal(stored["potential"], sample.potential)

    # verify, then damage one shard object in the bucket and repair it
    assert (ok := stemdl("verify", url)).returncode == 0, ok.stdout + ok.stderr[-2000:]
    fs, root = filesystem(url)
    key = f"{root}/{shard_key(open_stemdl_store(url).array('cbed'), 5)}"
    good = fs.cat_file(key)
    bad = bytearray(good)
    bad[len(bad) // 3] ^= 0xFF
    fs.pipe_file(key, bytes(bad))
    found = stemdl("verify", url)
    assert found.returncode == 1 and "shard 5" in found.stdout, found.stdout
    repaired = stemdl("verify", url, "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr[-2000:]
    assert fs.cat_file(key) == good  # re-simulated bit for bit

    # inspect, stage to node-local disk, train from the staged copy, predict from S3
    shown = stemdl("inspect", url, "--sample", "3", "--png", str(tmp_path / "s3.png"))
    assert shown.returncode == 0 and "48" in shown.stdout, shown.stdout + shown.stderr[-2000:]
    assert (tmp_path / "s3.png").stat().st_size > 0
    local = tmp_path / "node-local" / "store.zarr"
    staged = stemdl("stage", url, "--to", str(local), "--node", "0", "--nodes", "1")
    assert staged.returncode == 0, staged.stdout + staged.stderr[-2000:]
    for index in (3, 40):
        np.testing.assert_array_equal(read_sample(str(local), index)["cbed"],
                                      read_sample(url, index)["cbed"])
    run = tmp_path / "run"
    trained = stemdl("train", str(config_path), "--data", str(local), "--out", str(run))
    assert trained.returncode == 0, trained.stdout + trained.stderr[-3000:]
    predicted = stemdl("predict", str(run / "checkpoint.pt"), url, "--sample", "3", "--out",
                       str(tmp_path / "pred"), "--no-progress")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr[-3000:]
    assert (tmp_path / "pred" / "potential.zarr").is_dir()
