"""The command line prints errors meant for users as one line and lets bugs keep their traceback.

Errors meant for users derive from `StemdlError` (configs/base.py); the CLI catches exactly
that base, so a `ValueError` or `OSError` raised by a bug is not mistaken for bad input.
"""

from __future__ import annotations

import pytest

from stemdl import pipeline
from stemdl.configs import ConfigError, StemdlError, UsageError
from stemdl.datasets.fingerprint import CatalogueMismatchError
from stemdl.datasets.integrity import IncompleteStoreError, MissingDataError
from stemdl.datasets.plan import ConfigMismatchError
from stemdl.datasets.records import RecordError
from stemdl.datasets.shard_files import ShardDecodeError
from stemdl.datasets.stage import StageError
from stemdl.datasets.storage import StoreError
from stemdl.datasets.store import ArrayMetadataError
from stemdl.datasets.store_lock import StoreLockedError
from stemdl.predict.scan_checks import DiskCalibrationError
from stemdl.simulate.catalogue import CatalogueError
from stemdl.train.allreduce_grouping import ModelMismatchError
from stemdl.train.checkpoint import CheckpointError
from stemdl.train.cluster_env import LaunchEnvError
from stemdl.train.loop import DataRefusedError, EmptySplitError, OutputExistsError
from stemdl.train.store_fit import StoreShapeError

USER_ERRORS = (ConfigError, UsageError, StoreError, IncompleteStoreError, MissingDataError,
               CatalogueMismatchError, ConfigMismatchError, ArrayMetadataError,
               StoreLockedError, RecordError, ShardDecodeError, StageError, CatalogueError,
               ModelMismatchError, CheckpointError, LaunchEnvError, DataRefusedError,
               EmptySplitError, OutputExistsError, StoreShapeError, DiskCalibrationError)


@pytest.mark.parametrize("error", USER_ERRORS, ids=lambda e: e.__name__)
def test_user_facing_errors_share_one_base(error: type[Exception]) -> None:
    assert issubclass(error, StemdlError)


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert pipeline.main(["config", "no-such-preset.yaml"]) == pipeline.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("stemdl config: error: config 'no-such-preset.yaml'"), err

    def bug(args: object) -> int:
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(pipeline, "_cmd_config", bug)
    with pytest.raises(ValueError, match="a bug"):
        pipeline.main(["config", "tiny"])
