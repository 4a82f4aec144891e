"""Shared test settings: keep libraries quiet and single-threaded so 2-core CI is predictable."""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process: the tests start Dask workers and torch ranks of their own.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def reconstruction_run(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The small trained reconstruction model (`reconstruction_fixtures`), once per session."""
    from reconstruction_fixtures import trained_reconstruction

    return trained_reconstruction(tmp_path_factory.mktemp("reconstruction"))
