"""Writes explore_samples.ipynb from the cells below (one source for the notebook and its test).

    python notebooks/make_notebook.py
"""

from __future__ import annotations

import json
from pathlib import Path

CELLS: list[tuple[str, str]] = [
    ("markdown", """# Looking at simulated CBED samples

A stemdl store is a plain Zarr v3 group: every array says what it is (dimension names, units,
long names) and the group attributes carry the config that made it. This notebook makes (or
opens) a store, looks at it with `xarray`, draws a sample, and recomputes it from its stored
record with abTEM alone, to show that the store is enough to reproduce a sample."""),
    ("code", """import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
import zarr

from stemdl.configs import load_config
from stemdl.datasets.generate import generate
from stemdl.datasets.inspect import read_sample

# Any store made by `stemdl simulate`; by default a fresh `tiny` one (about half a minute).
STORE = os.environ.get("STEMDL_STORE", "tiny.zarr")
if not Path(STORE).exists():
    print(generate(load_config("tiny"), STORE, n_workers=2, progress=False).summary())"""),
    ("markdown", "## What is in the store"),
    ("code", """group = zarr.open_group(STORE, mode="r")
print("schema", group.attrs["schema_version"], "| made by config", group.attrs["config"]["name"])
ds = xr.open_zarr(STORE, consolidated=False)
ds"""),
    ("markdown", "## One sample: the CBED stack on its probe grid, and the target"),
    ("code", """INDEX = 0
sample = read_sample(STORE, INDEX)
record = sample["record"]
cbed, potential = sample["cbed"].astype(np.float32), sample["potential"]
rows, cols = record.scan_gpts
fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2))
for k, ax in enumerate(np.ravel(axes)):
    ax.imshow(np.log10(cbed[k] + 1e-6), cmap="magma")
    ax.set_axis_off()
fig.suptitle(f"{record.material_id}, zone {record.zone_axis}, {record.thickness_a:.0f} Å thick")
plt.show()

plt.imshow(potential[0], cmap="viridis")
plt.colorbar(label="projected potential (V·Å)")
plt.title("target: projected potential of the scanned region")
plt.show()
print(f"semi-angle {record.semiangle_mrad:.2f} mrad, {record.energy_ev / 1e3:.0f} keV, "
      f"pixel {record.angular_sampling_mrad[0]:.2f} mrad, total intensity per pattern "
      f"{cbed.sum(axis=(1, 2)).min():.3f}–{cbed.sum(axis=(1, 2)).max():.3f}")"""),
    ("markdown", """## Recompute it from the record with abTEM alone

Atoms (base cell × repetitions), potential, probe, probe positions, crop: nothing but the
stored record goes in."""),
    ("code", """import abtem
from ase import Atoms

base = Atoms(numbers=record.atomic_numbers, positions=record.positions_a, cell=record.cell_a,
             pbc=True)
atoms = base * record.repetitions
slices = (record.slice_thickness_a,) * record.num_slices
potential_model = abtem.Potential(atoms, gpts=record.gpts, slice_thickness=slices,
                                  parametrization=record.parametrization,
                                  projection=record.projection)
probe = abtem.Probe(energy=record.energy_ev, semiangle_cutoff=record.semiangle_mrad,
                    defocus=record.defocus_a, Cs=record.c30_a, tilt=record.tilt_mrad)
waves = probe.multislice(potential_model, scan=abtem.CustomScan(record.probe_positions_a[:1]))
pattern = waves.diffraction_patterns(max_angle=None).compute(scheduler="synchronous").array[0]
h, w = cbed.shape[1:]
cx, cy = pattern.shape[0] // 2, pattern.shape[1] // 2
recomputed = pattern[cx - w // 2: cx - w // 2 + w, cy - h // 2: cy - h // 2 + h].T
difference = float(np.abs(recomputed - cbed[0]).max() / np.abs(recomputed).max())
print(f"max difference, relative to the brightest pixel: {difference:.1e} (stored as float16)")"""),
]


def notebook() -> dict:
    def cell(kind: str, source: str) -> dict:
        base = {"cell_type": kind, "metadata": {}, "source": source.splitlines(keepends=True)}
        if kind == "code":
            base.update(execution_count=None, outputs=[])
        return base

    return {
        "cells": [cell(kind, source) for kind, source in CELLS],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("explore_samples.ipynb")
    out.write_text(json.dumps(notebook(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
