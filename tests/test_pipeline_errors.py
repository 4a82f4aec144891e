"""The error rule, through the command line: every condition a user can cause raises a
`StemdlError` subclass (configs/base.py), which `stemdl` prints as one line and exit status 2,
no traceback; with `-v` it is re-raised, which proves which class it was. Anything else is a
bug and keeps its traceback.

`CASES` holds one CLI case per user-facing `StemdlError` subclass of the package, each with its
bad input built cheaply: a missing file, a bad YAML, a copy of the session's `tiny` store with
one thing broken, an untrained `tiny` checkpoint, launcher variables. `NO_CLI_CASE` names the
few subclasses no single `stemdl` process can reach, with the reason; a meta-test imports every
module of the package and fails on a subclass in neither table.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr

import stemdl
from stemdl import pipeline
from stemdl.configs import ConfigError, StemdlError, UsageError, config_from_dict, load_config
from stemdl.datasets.fingerprint import CatalogueMismatchError
from stemdl.datasets.inspect import SampleIndexError
from stemdl.datasets.integrity import IncompleteStoreError, MissingDataError
from stemdl.datasets.physical_scale import NoTrainingSamplesError
from stemdl.datasets.plan import ConfigMismatchError
from stemdl.datasets.records import RecordError, read_field
from stemdl.datasets.schema import ShardIndexError
from stemdl.datasets.shard import TaskConfigError
from stemdl.datasets.shard_files import ShardDecodeError
from stemdl.datasets.stage import StageError
from stemdl.datasets.storage import StoreAccessError, StoreError, set_storage_options
from stemdl.datasets.store import ArrayMetadataError, open_stemdl_store
from stemdl.datasets.store_lock import StoreLockedError, store_lock
from stemdl.end_to_end import StoreVerificationError
from stemdl.predict.calibration import OutsideTrainingError
from stemdl.predict.file_checks import DamagedFileError
from stemdl.predict.microscope_files import CalibrationError, MicroscopeFileError
from stemdl.predict.scan_checks import DiskCalibrationError
from stemdl.simulate.catalogue import CatalogueError
from stemdl.simulate.device import GpuUnavailableError, cuda_device_count
from stemdl.train.allreduce_grouping import ModelMismatchError
from stemdl.train.checkpoint import CheckpointError
from stemdl.train.cluster_env import LaunchEnvError
from stemdl.train.loop import (
    DataRefusedError,
    EmptySplitError,
    OutputExistsError,
    OutputNotSharedError,
)
from stemdl.train.store_fit import StoreShapeError

LAUNCHER_PREFIXES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_", "PMI_", "OMPI_", "JSM_",
                     "LSB_")


# --- the inputs the cases share (built once per module) ---------------------------------------


@pytest.fixture(scope="module")
def inputs(tiny_store: Path, tiny_config: Callable[..., Any], write_config: Callable[..., Path],
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The real `tiny` store, an untrained `tiny` checkpoint (every refusal comes before any
    training or prediction), a sample of the store exported with its calibration (.hspy) and
    as a bare array (.npy, no calibration), and a two-step `tiny` config."""
    from stemdl.predict.export import export_sample
    from stemdl.predict.microscope_files import record_calibration, stored_scan
    from stemdl.testing.checkpoints import untrained_checkpoint

    root = tmp_path_factory.mktemp("cli-errors")
    config = tiny_config()
    checkpoint = untrained_checkpoint(config, root / "checkpoint.pt")
    record, data = stored_scan(str(tiny_store), 0)
    calibration = record_calibration(record)
    np.save(root / "scan.npy", data)
    return {"store": tiny_store, "checkpoint": checkpoint,
            "hspy": export_sample(str(tiny_store), 0, "hspy", root / "sample.hspy"),
            "npy": root / "scan.npy", "semiangle": calibration["semiangle_mrad"],
            "quick": write_config(tiny_config(max_steps=2, validate_at_start=False),
                                  root / "quick.yaml")}


@dataclass
class Ctx:
    """What a case builds its input with: the shared inputs, a fresh directory, the test's
    monkeypatch, and an exit stack held while the command runs (a lock, say)."""

    inputs: dict[str, Any]
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack

    def copy_store(self) -> Path:
        copy = self.tmp / "store.zarr"
        if not copy.exists():
            shutil.copytree(self.inputs["store"], copy)
        return copy

    def config_file(self, name: str, simulation: dict[str, Any] | None = None) -> Path:
        data = load_config("tiny").to_dict()
        for key, value in (simulation or {}).items():
            *parents, leaf = key.split(".")
            node = data["simulation"]
            for part in parents:
                node = node[part]
            node[leaf] = value
        path = self.tmp / name
        path.write_text(yaml.safe_dump(config_from_dict(data).to_dict()))
        return path


def _shard_files(store: Path, array: str = "cbed") -> list[Path]:
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())


def _damage(path: Path) -> None:
    """Flip bytes inside the first chunk of a shard file (its index, at the end, stays)."""
    data = bytearray(path.read_bytes())
    for offset in range(64, 96):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _shards_holding(store: Path, split: str) -> list[int]:
    handle = open_stemdl_store(str(store))
    splits = read_field(handle, "split")
    return sorted({i // handle.shard_size for i, s in enumerate(splits) if str(s) == split})


def _mark_not_done(store: Path, shards: list[int]) -> None:
    """What a killed `stemdl simulate` leaves: these shards not marked done."""
    handle = open_stemdl_store(str(store), mode="r+")
    for shard in shards:
        handle.set_done(shard, False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _predict(c: Ctx, data: Path | str, *options: str) -> list[str]:
    return ["predict", str(c.inputs["checkpoint"]), str(data), "--out", str(c.tmp / "pred"),
            "--no-progress", *options]


def _calibration(c: Ctx) -> list[str]:
    return ["--energy-kev", "100", "--semiangle-mrad", f"{c.inputs['semiangle']:.6f}"]


# --- the cases ----------------------------------------------------------------------------


def _config_error(c: Ctx) -> list[str]:
    return ["config", str(c.tmp / "no-such-config.yaml")]


def _usage_error(c: Ctx) -> list[str]:
    return ["stage", str(c.inputs["store"]), "--to", str(c.tmp / "local"), "--node", "2",
            "--nodes", "2"]


def _store_error(c: Ctx) -> list[str]:
    return ["inspect", str(c.tmp / "nothing-here.zarr")]


def _store_access_error(c: Ctx) -> list[str]:
    c.stack.callback(set_storage_options, None)  # the CLI sets them for this process
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    return ["verify", "s3://stemdl-cli-errors/store.zarr", "--storage-options",
            f'{{"endpoint_url": "{closed}", "key": "k", "secret": "s"}}']


def _incomplete_store(c: Ctx) -> list[str]:
    store = c.copy_store()
    _mark_not_done(store, [0])
    return ["stage", str(store), "--to", str(c.tmp / "local"), "--node", "0", "--nodes", "1"]


def _missing_data(c: Ctx) -> list[str]:
    store = c.copy_store()
    _shard_files(store)[1].unlink()
    return ["inspect", str(store)]


def _shard_decode(c: Ctx) -> list[str]:
    store = c.copy_store()
    for path in _shard_files(store):
        _damage(path)
    return ["evaluate", str(c.inputs["checkpoint"]), "--data", str(store), "--split", "train"]


def _catalogue_mismatch(c: Ctx) -> list[str]:
    store = c.copy_store()
    from stemdl.datasets.fingerprint import ATTRIBUTE

    zarr.open_group(str(store), mode="r+").attrs[ATTRIBUTE] = "sha256:" + "0" * 64
    return ["simulate", "tiny", "--out", str(store), "--no-progress"]


def _store_locked(c: Ctx) -> list[str]:
    store = c.copy_store()
    c.stack.enter_context(store_lock(str(store)))  # another client generating into it
    return ["simulate", "tiny", "--out", str(store), "--no-progress"]


def _config_mismatch(c: Ctx) -> list[str]:
    return ["simulate", "small", "--out", str(c.copy_store()), "--no-progress"]


def _array_metadata(c: Ctx) -> list[str]:
    store = c.copy_store()
    (store / "cbed" / "zarr.json").unlink()
    return ["inspect", str(store)]


def _stage_error(c: Ctx) -> list[str]:
    store = c.copy_store()
    _damage(_shard_files(store)[0])
    return ["stage", str(store), "--to", str(c.tmp / "local"), "--node", "0", "--nodes", "1"]


def _catalogue_error(c: Ctx) -> list[str]:
    cifs = c.tmp / "cifs"
    cifs.mkdir()
    (cifs / "broken.cif").write_text("data_broken\nthis is not a CIF\n")
    config = c.config_file("no-materials.yaml", {"structures.families": [],
                                                 "structures.cif_dir": str(cifs)})
    return ["simulate", str(config), "--out", str(c.tmp / "new.zarr"), "--workers", "1",
            "--no-progress"]


def _gpu_unavailable(c: Ctx) -> list[str]:
    if cuda_device_count() > 0:
        pytest.skip("this machine has a GPU")
    config = c.config_file("gpu.yaml", {"device": "gpu"})
    return ["simulate", str(config), "--out", str(c.tmp / "new.zarr"), "--no-progress"]


def _launch_env(c: Ctx) -> list[str]:
    for name in list(os.environ):
        if name.startswith(LAUNCHER_PREFIXES):
            c.monkeypatch.delenv(name)
    c.monkeypatch.setenv("RANK", "first")  # what a broken job script exports
    c.monkeypatch.setenv("WORLD_SIZE", "2")
    return ["train", str(c.inputs["quick"]), "--data", str(c.inputs["store"]), "--out",
            str(c.tmp / "run")]


def _empty_split(c: Ctx) -> list[str]:
    store = c.copy_store()
    _mark_not_done(store, _shards_holding(store, "test"))
    return ["evaluate", str(c.inputs["checkpoint"]), "--data", str(store), "--split", "test",
            "--allow-partial"]


def _no_training_samples(c: Ctx) -> list[str]:
    store = c.copy_store()
    _mark_not_done(store, _shards_holding(store, "train"))
    return ["train", str(c.inputs["quick"]), "--data", str(store), "--out", str(c.tmp / "run"),
            "--allow-partial"]


def _output_exists(c: Ctx) -> list[str]:
    out = c.tmp / "run"
    out.mkdir()
    shutil.copy(c.inputs["checkpoint"], out / "checkpoint.pt")
    return ["train", str(c.inputs["quick"]), "--data", str(c.inputs["store"]), "--out", str(out)]


def _store_shape(c: Ctx) -> list[str]:
    return ["train", "small", "--data", str(c.inputs["store"]), "--out", str(c.tmp / "run")]


def _checkpoint_error(c: Ctx) -> list[str]:
    garbage = c.tmp / "checkpoint.pt"
    garbage.write_bytes(b"\x00garbage, not a torch file" * 20)
    return ["evaluate", str(garbage), "--data", str(c.inputs["store"])]


def _sample_index(c: Ctx) -> list[str]:
    return ["inspect", str(c.inputs["store"]), "--sample", "999", "--png", str(c.tmp / "p.png")]


def _store_verification(c: Ctx) -> list[str]:
    out = c.tmp / "run"
    out.mkdir()
    store = out / "store.zarr"  # the store a previous `stemdl run` left, damaged since
    shutil.copytree(c.inputs["store"], store)
    _damage(_shard_files(store)[0])
    return ["run", "tiny", "--out", str(out), "--ranks", "1"]


def _outside_training(c: Ctx) -> list[str]:
    return _predict(c, c.inputs["hspy"], "--energy-kev", "300")


def _damaged_file(c: Ctx) -> list[str]:
    damaged = c.tmp / "scan.mib"
    damaged.write_bytes(b"not a Merlin frame header," * 40)
    return _predict(c, damaged, "--scan-shape", "8", "8")


def _microscope_file(c: Ctx) -> list[str]:
    return _predict(c, c.tmp / "no-such-scan.hspy")


def _calibration_error(c: Ctx) -> list[str]:
    return _predict(c, c.inputs["npy"], *_calibration(c))  # no scan step, no pixel size


def _disk_calibration(c: Ctx) -> list[str]:
    # inside the trained 6-10 mrad, far from the disk: only the disk check can tell
    wrong = "9.9" if c.inputs["semiangle"] < 8 else "6.1"
    return _predict(c, c.inputs["hspy"], "--semiangle-mrad", wrong)


@dataclass(frozen=True)
class Case:
    """`build(ctx)` makes the bad input and returns the argv; `message` is searched for in the
    error line; `one_line` False where stderr may hold more than the error line (progress of
    `stemdl run` before it, a message that lists differences on the lines after it)."""

    build: Callable[[Ctx], list[str]]
    message: str
    one_line: bool = True


CASES: dict[type[StemdlError], Case] = {
    ConfigError: Case(_config_error, r"config '.*no-such-config.yaml' is neither a preset"),
    UsageError: Case(_usage_error, r"node must be in \[0, 2\), got 2"),
    StoreError: Case(_store_error, r"no store at .*nothing-here.zarr"),
    StoreAccessError: Case(_store_access_error, r"cannot reach the S3 endpoint http://127"),
    IncompleteStoreError: Case(_incomplete_store, r"is incomplete: shards 0 of node 0/1"),
    MissingDataError: Case(_missing_data, r"missing"),
    ShardDecodeError: Case(_shard_decode, r"checksum mismatch \(damaged file\)"),
    CatalogueMismatchError: Case(_catalogue_mismatch, r"the catalogue differs"),
    StoreLockedError: Case(_store_locked, r"store.zarr is locked: generating by pid"),
    ConfigMismatchError: Case(_config_mismatch, r"it was made with another config",
                              one_line=False),
    ArrayMetadataError: Case(_array_metadata, r"metadata of array 'cbed' missing"),
    StageError: Case(_stage_error, r"shard 0 does not verify after copying twice"),
    CatalogueError: Case(_catalogue_error, r"the catalogue has no usable material"),
    GpuUnavailableError: Case(_gpu_unavailable, r"simulation.device is 'gpu' but"),
    LaunchEnvError: Case(_launch_env, r"RANK='first' is not an integer"),
    EmptySplitError: Case(_empty_split, r"has no samples of split 'test' in the shards that"),
    NoTrainingSamplesError: Case(_no_training_samples, r"has no training samples"),
    OutputExistsError: Case(_output_exists, r"checkpoint.pt exists: pass --resume"),
    StoreShapeError: Case(_store_shape, r"does not fit the model"),
    CheckpointError: Case(_checkpoint_error, r"is not a readable checkpoint"),
    SampleIndexError: Case(_sample_index, r"sample 999 out of range: the store has 24"),
    StoreVerificationError: Case(_store_verification, r"does not verify .* --repair",
                                 one_line=False),
    OutsideTrainingError: Case(_outside_training, r"beam energy 300 keV is outside the trained"),
    DamagedFileError: Case(_damaged_file, r"not a Merlin .mib: it does not start with an 'MQ1'"),
    MicroscopeFileError: Case(_microscope_file, r"no file or directory at"),
    CalibrationError: Case(_calibration_error, r"does not record .*: pass"),
    DiskCalibrationError: Case(_disk_calibration, r"bright-field disk .* radius"),
}

# Subclasses that no single `stemdl` process in this test can reach, and why.
NO_CLI_CASE: dict[type[StemdlError], str] = {
    DataRefusedError: "needs two ranks, one refusing its data: test_readers_refuse.py's "
                      "torchrun test (slow)",
    ModelMismatchError: "needs ranks that built different models (train/test_allreduce_errors)",
    OutputNotSharedError: "needs ranks on file systems that differ in what --out holds",
    RecordError: "raised in a Dask worker writing a sample: recorded as a failed sample in the "
                 "generation summary, never raised to the CLI",
    TaskConfigError: "a worker task given another config than the store's; the CLI's plan "
                     "refuses that first (ConfigMismatchError)",
    ShardIndexError: "a shard index comes only from the Python API (simulate_shard in a cluster "
                     "job); the CLI iterates over the store's own shards",
}


def _error_line(command: str, err: str, case: Case) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    prefix = f"stemdl {command}: error: "
    errors = [line for line in lines if line.startswith(prefix)]
    assert len(errors) == 1, err[-3000:]
    if case.one_line:
        assert lines == errors, err[-3000:]
    return errors[0]


@pytest.mark.parametrize("error", list(CASES), ids=lambda e: e.__name__)
def test_each_user_error_is_one_line_exit_2_and_its_class_with_v(
        error: type[StemdlError], inputs: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[error]
    with contextlib.ExitStack() as stack:
        argv = case.build(Ctx(inputs, tmp_path, monkeypatch, stack))
        capsys.readouterr()
        assert pipeline.main(argv) == pipeline.EXIT_USAGE
        line = _error_line(argv[0], capsys.readouterr().err, case)
        assert re.search(case.message, line), line
        with pytest.raises(error) as raised:
            pipeline.main(["-v", *argv])
    assert type(raised.value) is error, type(raised.value)


def _package_errors() -> set[type[StemdlError]]:
    """Every `StemdlError` subclass defined in the package, after importing all its modules."""
    skip = ("stemdl.tests", "stemdl.benchmarks", "stemdl.notebooks")
    for module in pkgutil.walk_packages(stemdl.__path__, "stemdl."):
        if not module.name.startswith(skip):
            importlib.import_module(module.name)
    found: set[type[StemdlError]] = set()
    todo = [StemdlError]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("stemdl."):
                found.add(sub)
    return found


def test_every_user_error_has_a_cli_case_or_a_reason() -> None:
    errors = _package_errors()
    assert len(errors) >= len(CASES)  # the import walk found the package
    assert not set(CASES) & set(NO_CLI_CASE)
    missing = sorted(e.__module__ + "." + e.__qualname__ for e in errors
                     if e not in CASES and e not in NO_CLI_CASE)
    assert not missing, f"StemdlError subclasses with no CLI case in CASES: {missing}"


def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI catches exactly `StemdlError`: a `ValueError` of a bug is not bad input."""

    def bug(args: object) -> int:
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(pipeline, "_cmd_config", bug)
    with pytest.raises(ValueError, match="a bug"):
        pipeline.main(["config", "tiny"])


def test_gpu_refusal_creates_no_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """'gpu' without a GPU is refused before planning: nothing is left at --out."""
    if cuda_device_count() > 0:
        pytest.skip("this machine has a GPU")
    data = load_config("tiny").to_dict()
    data["simulation"]["device"] = "gpu"
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump(config_from_dict(data).to_dict()))
    out = tmp_path / "new.zarr"
    assert pipeline.main(["simulate", str(config), "--out", str(out), "--no-progress"]) == 2
    assert "is 'gpu' but" in capsys.readouterr().err
    assert not out.exists()
