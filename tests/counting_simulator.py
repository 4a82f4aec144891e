"""A simulate/-shaped module for generation tests that must count simulations: the synthetic
samples of `datasets_fixtures`, each call appended (its index) to the file named by
$STEMDL_TEST_COUNT_FILE. Dask workers inherit the environment, so every process counts into
the same file (one short append per line)."""

from __future__ import annotations

import os
from typing import Any

import datasets_fixtures as fx

build_catalogue = fx.build_catalogue


def simulate_sample(simulation: Any, index: int, catalogue: Any = None) -> Any:
    with open(os.environ["STEMDL_TEST_COUNT_FILE"], "a") as handle:
        handle.write(f"{index}\n")
    return fx.synthetic_sample(simulation, index, catalogue)
