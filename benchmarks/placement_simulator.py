"""Experiment (benchmarks/predict_placement.py): stemdl's simulator with the scanned square
moved by a random offset per sample.

Not a feature: `simulate/geometry.py` centres every sample's scanned square in its supercell,
so every sample of a material sits at one place on its lattice. This module wraps
`simulate.simulate_sample` and shifts that square (probe positions and target region
together) by (dx, dy) drawn uniformly from [−2.5, 2.5] Å per sample (seeded by the config seed
and the sample index; the training cells leave ≥ 3 Å on each side of the 6 Å square, and 5 Å
spans most base periods of the catalogue). It is passed to `datasets.generate.generate` as
`simulator=placement_simulator` (this module as the `Simulator` of `stemdl.datasets.generate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import stemdl.simulate as simulate
import stemdl.simulate.geometry as geometry
import stemdl.simulate.sample_builder as builder

MAX_SHIFT_A = 2.5
_centred_scan_grid = geometry.scan_grid
_offset = {"xy": (0.0, 0.0)}


def _shifted_scan_grid(extent: Any, side: float, gpts: Any) -> Any:
    positions, (x0, y0, x1, y1) = _centred_scan_grid(extent, side, gpts)
    dx, dy = _offset["xy"]
    return positions + np.array([dx, dy]), (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


geometry.scan_grid = _shifted_scan_grid  # plan_geometry looks it up in its module at call time
build_catalogue = simulate.build_catalogue


def simulate_sample(config: Any, index: int, catalogue: Any = None) -> Any:
    rng = np.random.default_rng([config.seed, index, 99])
    _offset["xy"] = (float(rng.uniform(-MAX_SHIFT_A, MAX_SHIFT_A)),
                     float(rng.uniform(-MAX_SHIFT_A, MAX_SHIFT_A)))
    return builder.simulate_sample(config, index, catalogue)
