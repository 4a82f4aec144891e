"""An installed stemdl lives under one import name and leaves other packages alone.

The repository keeps `datasets/`, `train/`, ... at its top (the user's layout), but a wheel
that installed them as top-level packages would overwrite Hugging Face's `datasets` in any ML
environment. Here a wheel of stemdl is built offline and installed into a fresh virtual
environment next to a package that is itself named `datasets`; both must import, and the
`stemdl` console script must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DUMMY_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "datasets"
version = "9.9.9"

[tool.setuptools]
packages = ["datasets"]
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_wheel_installs_beside_a_package_named_datasets(tmp_path: Path) -> None:
    # The stemdl wheel, built with this environment's setuptools, without network, from a copy
    # of the sources (setuptools builds in a `build/` folder beside them).
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "*.zarr", "runs", "stemdl-run"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(wheels), str(source)], cwd=tmp_path)
    wheel = next(wheels.glob("stemdl-*.whl"))
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"stemdl"}, top_level

    # A package named `datasets` (standing in for Hugging Face's), as a wheel too.
    dummy = tmp_path / "dummy"
    (dummy / "datasets").mkdir(parents=True)
    (dummy / "pyproject.toml").write_text(DUMMY_PYPROJECT)
    (dummy / "datasets" / "__init__.py").write_text('WHO = "the other datasets"\n')
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(wheels), str(dummy)], cwd=tmp_path)

    # A fresh environment that sees this one's third-party packages (numpy, zarr, torch ...)
    # through a .pth file, but not its editable stemdl (.pth files of a path added that way
    # are not run) nor the repository (another working directory, no PYTHONPATH).
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path).stdout.strip())
    (site / "third_party.pth").write_text(sysconfig.get_path("purelib") + "\n")
    for name in ("datasets-9.9.9", "stemdl-"):  # the other package first: stemdl must not clobber it
        target = next(wheels.glob(f"{name}*.whl"))
        _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
              "--no-index", str(target)], cwd=tmp_path)

    probe = (
        "import datasets, stemdl, stemdl.configs, stemdl.datasets.loader, stemdl.pipeline\n"
        "import stemdl.predict.calibration, stemdl.testing  # every subpackage is in the wheel\n"
        "print(datasets.WHO)\n"
        "print(stemdl.datasets.loader.__file__)\n"
        "print(stemdl.configs.load_config('tiny').name)\n"
    )
    out = _run([str(python), "-c", probe], cwd=tmp_path).stdout.splitlines()
    assert out[0] == "the other datasets"
    assert out[1].startswith(str(site / "stemdl" / "datasets")), out[1]
    assert out[2] == "tiny"  # the presets travel as package data
    help_text = _run([str(env_dir / "bin" / "stemdl"), "--help"], cwd=tmp_path).stdout
    assert "usage: stemdl" in help_text
