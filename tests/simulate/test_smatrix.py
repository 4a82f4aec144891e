"""The S-matrix (PRISM at interpolation 1) gives the per-sample multislice's patterns.

Real abTEM potentials and probes (silicon and a GaAs-like crystal on one diamond cell, with and
without frozen phonons, aberrated probes at random positions), each compared with
`multislice.diffraction_window` on NumPy, the array-module code CuPy runs on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from stemdl.simulate.device import configure_abtem
from stemdl.simulate.multislice import diffraction_window, probe_waves
from stemdl.simulate.smatrix import diffraction_window_smatrix, plane_wave_count

TOLERANCE = 1e-5  # max |S-matrix − multislice| / max(multislice pattern)
WINDOW = (24, 20)


def _sample(numbers: tuple[int, int], cells_z: int, semiangle_mrad: float, defocus_a: float,
            c30_a: float, probes: int, phonon_configs: int = 0):
    import abtem

    configure_abtem()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, cells_z)
    atoms.numbers = np.where(np.arange(len(atoms)) % 2 == 0, numbers[0], numbers[1])
    specimen = atoms if not phonon_configs else abtem.FrozenPhonons(
        atoms, num_configs=phonon_configs, sigmas=0.08, seed=5)
    potential = abtem.Potential(specimen, gpts=(72, 72), slice_thickness=2.0,
                                parametrization="kirkland", projection="infinite",
                                device="cpu").build(lazy=False)
    probe = abtem.Probe(energy=100e3, semiangle_cutoff=semiangle_mrad, defocus=defocus_a,
                        Cs=c30_a, device="cpu")
    probe.grid.match(potential)
    positions = np.random.default_rng(probes).uniform(0.0, 10.86, size=(probes, 2))
    return probe_waves(probe, positions, "cpu"), potential


@pytest.mark.parametrize(("numbers", "cells_z", "semiangle", "defocus", "c30", "phonons"), [
    ((14, 14), 2, 10.0, 0.0, 0.0, 0),
    ((31, 33), 3, 8.0, -40.0, 5e5, 0),
    ((31, 33), 2, 12.0, 15.0, 0.0, 2),
], ids=["Si", "GaAs-like-aberrated", "GaAs-like-phonons"])
def test_smatrix_equals_multislice(numbers, cells_z, semiangle, defocus, c30, phonons) -> None:
    probes, potential = _sample(numbers, cells_z, semiangle, defocus, c30, 12, phonons)
    ours = diffraction_window_smatrix(probes, potential, WINDOW, "cpu")
    reference = diffraction_window(probes, potential, WINDOW, "cpu")
    assert ours.shape == reference.shape == (12, *WINDOW)
    error = float(np.max(np.abs(ours.astype(np.float64) - reference))) / float(np.max(reference))
    assert error <= TOLERANCE, f"{error:.2e} of the pattern maximum"
    # The plane waves are the aperture's pixels: π (α / λ · extent)² of them, ± the rim.
    wavelength_a = 0.0370  # 100 keV
    radius_px = semiangle * 1e-3 / wavelength_a * 10.86
    assert abs(plane_wave_count(probes) - np.pi * radius_px**2) < 2 * np.pi * radius_px + 4
