"""The sample-exploring notebook runs top to bottom on a real tiny store, and is up to date."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _cells_module():
    spec = importlib.util.spec_from_file_location("make_notebook", NOTEBOOKS / "make_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_file_matches_its_source() -> None:
    module = _cells_module()
    stored = json.loads((NOTEBOOKS / "explore_samples.ipynb").read_text())
    assert stored == module.notebook(), "run `python notebooks/make_notebook.py`"


def test_notebook_runs_and_recomputes_a_sample(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, tiny_store) -> None:
    matplotlib.use("Agg")
    store = tiny_store
    monkeypatch.setenv("STEMDL_STORE", str(store))
    namespace: dict = {}
    for kind, source in _cells_module().CELLS:
        if kind == "code":
            exec(compile(source, "explore_samples.ipynb", "exec"), namespace)
    assert namespace["ds"]["cbed"].dims[0] == "sample"
    # abTEM from the record alone reproduces the stored pattern to float16 precision.
    assert namespace["difference"] < 2e-3
