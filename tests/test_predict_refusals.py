"""`stemdl predict` refuses bad input through the command line: one line on stderr, exit 2,
no traceback, nothing written to --out. The files are real: a sample of the real `tiny` store
exported as .hspy (with its calibration), the same patterns with one NaN as .npy, an empty
file; the model is an untrained `tiny` checkpoint (the refusals come before any prediction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemdl import pipeline
from stemdl.predict.export import export_sample
from stemdl.predict.microscope_files import record_calibration, stored_scan


@pytest.fixture(scope="module")
def files(tiny_store, tiny_config, tmp_path_factory):  # type: ignore[no-untyped-def]
    from stemdl.testing.checkpoints import untrained_checkpoint

    root = tmp_path_factory.mktemp("refusals")
    config = tiny_config()
    checkpoint = untrained_checkpoint(config, root / "checkpoint.pt")
    record, data = stored_scan(str(tiny_store), 0)
    calibration = record_calibration(record)
    hspy = export_sample(str(tiny_store), 0, "hspy", root / "sample.hspy")
    poisoned = data.copy()
    poisoned[1, 2, 3, 4] = np.nan
    np.save(root / "nan.npy", poisoned)
    (root / "empty.hspy").write_bytes(b"")
    options = ["--energy-kev", "100", "--semiangle-mrad", f"{calibration['semiangle_mrad']:.6f}",
               "--scan-step-a", f"{calibration['scan_step_a'][0]:.6f}",
               "--angular-pixel-mrad", f"{calibration['angular_sampling_mrad'][0]:.6f}"]
    return {"checkpoint": checkpoint, "hspy": hspy, "root": root, "options": options,
            "semiangle": calibration["semiangle_mrad"]}


def _predict(files, data: Path, out: Path, *options: str) -> int:  # type: ignore[no-untyped-def]
    return pipeline.main(["predict", str(files["checkpoint"]), str(data), "--out", str(out),
                          "--no-progress", *options])


def test_the_right_calibration_predicts(files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert _predict(files, files["hspy"], tmp_path / "out") == 0
    assert (tmp_path / "out" / "prediction.json").is_file()


def _wrong_semiangle(files) -> list[str]:  # type: ignore[no-untyped-def]
    # inside the trained 6–10 mrad, far from the disk: only the disk check can tell
    return ["--semiangle-mrad", "9.9" if files["semiangle"] < 8 else "6.1"]


CASES = {
    "disk": (lambda f: (f["hspy"], _wrong_semiangle(f)), r"bright-field disk .* radius of "
             r"[\d.]+ px, but the calibration says [\d.]+ px"),
    "nan": (lambda f: (f["root"] / "nan.npy", f["options"]), "NaN or infinite"),
    "empty": (lambda f: (f["root"] / "empty.hspy", []), r"is empty \(0 bytes\)"),
    "outside": (lambda f: (f["hspy"], ["--energy-kev", "300"]),
                "beam energy 300 keV is outside the trained 100 keV"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_no_output(files, tmp_path: Path, case: str,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:  # type: ignore[no-untyped-def]
    make, message = CASES[case]
    data, options = make(files)
    out = tmp_path / "out"
    assert _predict(files, data, out, *options) == pipeline.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("stemdl predict: error:"), err
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_a_model_whose_windows_cannot_be_stitched_is_refused_before_reading(
        tiny_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:  # type: ignore[no-untyped-def]
    """A target of 18 x 18 px on tiny's 4 x 4 probes trains (the model does not need a whole
    number of pixels per probe) but cannot be stitched: predict says so, naming both sizes and
    a size that works, before it reads the scan (the data path here does not even exist)."""
    from stemdl.configs import config_from_dict
    from stemdl.testing.checkpoints import untrained_checkpoint

    data = tiny_config().to_dict()
    data["simulation"]["target"]["target_px"] = [18, 18]
    config = config_from_dict(data)
    assert config.simulation.stitching_problem() is not None
    checkpoint = untrained_checkpoint(config, tmp_path / "unstitchable.pt")
    out = tmp_path / "out"
    code = pipeline.main(["predict", str(checkpoint), str(tmp_path / "no-such-scan.hspy"),
                          "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == pipeline.EXIT_USAGE and len(err.splitlines()) == 1, err
    assert "18x18 is not a whole number of pixels per probe of the 4x4 scan grid" in err, err
    assert "e.g. 16x16" in err and not out.exists(), err
