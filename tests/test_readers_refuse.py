"""Readers trust nothing: missing, incomplete or mismatched data is refused with a message
naming what is wrong, through the real command line on real stores, never trained on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from stemdl.datasets.records import read_field
from stemdl.datasets.store import StemdlStore, open_stemdl_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def stemdl(clean_env):  # type: ignore[no-untyped-def]
    """`stemdl(*ARGS)`: `python -m stemdl.pipeline ARGS` as one process (no launcher
    variables)."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stemdl.pipeline", *args], cwd=REPO,
                              env=clean_env(), text=True, capture_output=True, timeout=timeout)

    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_store) -> Path:
    return tiny_store


@pytest.fixture(scope="module")
def quick_config(tmp_path_factory: pytest.TempPathFactory, tiny_config, write_config) -> Path:
    """tiny with two steps and no validation at start: what a refusal test needs to run."""
    path = tmp_path_factory.mktemp("configs") / "quick.yaml"
    return write_config(tiny_config(max_steps=2, validate_at_start=False), path)


@pytest.fixture(scope="module")
def checkpoint(reference: Path, quick_config: Path,
               tmp_path_factory: pytest.TempPathFactory, stemdl) -> Path:
    """A checkpoint trained (two steps) on the intact store."""
    out = tmp_path_factory.mktemp("run")
    result = stemdl("train", str(quick_config), "--data", str(reference), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "checkpoint.pt"


@pytest.fixture
def store(reference: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store.zarr"
    shutil.copytree(reference, copy)
    return copy


def shard_splits(stemdl_store: StemdlStore) -> dict[int, set[str]]:
    """The splits of the samples of each shard."""
    splits = read_field(stemdl_store, "split")
    out: dict[int, set[str]] = {k: set() for k in range(stemdl_store.num_shards)}
    for index, split in enumerate(splits):
        out[index // stemdl_store.shard_size].add(str(split))
    return out


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit status 2 with a one-line message (no traceback) that contains every needle."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr[-3000:])


def test_missing_shard_file_is_refused_by_every_reader(
        store: Path, quick_config: Path, checkpoint: Path, tmp_path: Path, stemdl) -> None:
    lost = store / "cbed" / "c" / "1" / "0" / "0" / "0"
    lost.unlink()
    out = tmp_path / "run"
    assert_refused(stemdl("train", str(quick_config), "--data", str(store), "--out", str(out)),
                   str(lost), "missing")
    assert not (out / "checkpoint.pt").exists()
    assert_refused(stemdl("evaluate", str(checkpoint), "--data", str(store), "--split", "train"),
                   str(lost), "missing")
    assert_refused(stemdl("inspect", str(store)), str(lost), "missing")
    assert_refused(stemdl("inspect", str(store), "--sample", "5", "--png", str(tmp_path / "p.png")),
                   str(lost), "missing")
    verify = stemdl("verify", str(store))
    assert verify.returncode == 1
    assert f"shard 1, array cbed ({lost}): shard file missing" in verify.stdout, verify.stdout
    assert "CRC" not in verify.stdout, verify.stdout


def test_overwritten_sample_is_refused_by_the_loader(store: Path) -> None:
    """The per-sample CRC-32C guards what the chunk checksums cannot: a sample rewritten
    (with valid chunk checksums) behind the store's back, or read as fill values."""
    from stemdl.datasets.loader import ShardStream
    from stemdl.datasets.shard_files import ShardDecodeError

    group = zarr.open_group(str(store), mode="r+")
    group["cbed"][6] = group["cbed"][6] * 0.5  # decodes fine, but is not what was simulated
    stream = ShardStream(str(store), split=None, shuffle=False)
    with pytest.raises(ShardDecodeError, match=r"sample 6 of cbed does not match its recorded"):
        list(stream)


def test_incomplete_store_is_refused_unless_allowed(
        store: Path, quick_config: Path, checkpoint: Path, tmp_path: Path, stemdl) -> None:
    """A killed `simulate` leaves shards not marked done: named, and refused by default."""
    stemdl_store = open_stemdl_store(str(store), mode="r+")
    # Two shards of node 0 of 2 (even) that hold no validation sample, so that what is left
    # can still be trained on when allowed.
    by_shard = shard_splits(stemdl_store)
    lost = [k for k in range(0, stemdl_store.num_shards, 2) if "validation" not in by_shard[k]][:2]
    assert len(lost) == 2, by_shard
    for shard in lost:
        stemdl_store.set_done(shard, False)
    named = f"shards {lost[0]}, {lost[1]}"
    out = tmp_path / "run"
    assert_refused(stemdl("train", str(quick_config), "--data", str(store), "--out", str(out)),
                   "incomplete", named, "--allow-partial")
    assert_refused(stemdl("evaluate", str(checkpoint), "--data", str(store)), "incomplete", named)
    assert_refused(stemdl("stage", str(store), "--to", str(tmp_path / "local"), "--node", "0",
                          "--nodes", "2"), "incomplete", named)
    assert not (tmp_path / "local").exists()

    allowed = stemdl("train", str(quick_config), "--data", str(store), "--out", str(out),
                     "--allow-partial")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "PARTIAL store" in allowed.stderr and named in allowed.stderr, allowed.stderr
    staged = stemdl("stage", str(store), "--to", str(tmp_path / "local"), "--node", "0",
                    "--nodes", "2", "--allow-partial")
    assert staged.returncode == 0 and f"PARTIAL: {named}" in staged.stdout, staged.stdout


def test_a_split_without_samples_is_an_error_not_nan(
        store: Path, quick_config: Path, tmp_path: Path, stemdl) -> None:
    stemdl_store = open_stemdl_store(str(store), mode="r+")
    with_validation = [k for k, splits in shard_splits(stemdl_store).items()
                       if "validation" in splits]
    assert with_validation
    for shard in with_validation:
        stemdl_store.set_done(shard, False)
    result = stemdl("train", str(quick_config), "--data", str(store), "--out",
                    str(tmp_path / "run"), "--allow-partial")
    assert_refused(result, "no validation samples")
    assert "nan" not in result.stdout.lower()


def test_model_of_another_sample_shape_is_refused_before_any_work(
        store: Path, checkpoint: Path, tmp_path: Path, stemdl) -> None:
    out = tmp_path / "run"
    result = stemdl("train", "small", "--data", str(store), "--out", str(out))
    assert_refused(result, "does not fit the model", "cbed (16, 24, 24)", "cbed (64, 33, 33)")
    assert not out.exists()  # refused before the run wrote anything
    # A checkpoint trained on the tiny store, given a store of other patterns.
    other = tmp_path / "other.zarr"
    shutil.copytree(store, other)
    group = zarr.open_group(str(other), mode="r+")
    config = dict(group.attrs["config"])
    config["simulation"] = {**config["simulation"],
                            "detector": {**config["simulation"]["detector"], "pattern_px": [16, 16]}}
    group.attrs["config"] = config
    assert_refused(stemdl("evaluate", str(checkpoint), "--data", str(other)),
                   f"checkpoint {checkpoint}", "cbed (16, 16, 16)", "takes cbed (16, 24, 24)")


@pytest.mark.parametrize("content", [b"", b"\x00garbage, not a torch file" * 20])
def test_unreadable_checkpoint_is_described(store: Path, tmp_path: Path, content: bytes, stemdl) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    result = stemdl("evaluate", str(path), "--data", str(store))
    assert_refused(result, str(path), "not a readable checkpoint")
    assert "could run code" not in result.stderr


@pytest.mark.slow
def test_one_rank_refusing_its_data_stops_every_rank(store: Path, quick_config: Path,
                                                     tmp_path: Path, clean_env) -> None:
    """Rank 1 of 2 reads shards 1, 3, 5: without its file it refuses, and rank 0, whose data
    is intact, stops too, saying why, instead of waiting for rank 1 in the next collective
    (torchrun's agent would kill it; srun, jsrun or mpirun would leave it waiting)."""
    lost = store / "cbed" / "c" / "1" / "0" / "0" / "0"
    lost.unlink()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", str(REPO / "pipeline.py"), "train", str(quick_config),
               "--data", str(store), "--out", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=tmp_path, env=clean_env(), text=True,
                            capture_output=True, timeout=240)
    assert result.returncode != 0
    assert f"{lost}" in result.stderr and "missing" in result.stderr, result.stderr[-3000:]
    assert "rank 0: another rank refused its data" in result.stderr, result.stderr[-3000:]
