"""Batched multislice (several samples in one FFT batch) equals the per-sample engine.

The samples are real abTEM potentials and probes of one grid: silicon and a GaAs-like crystal
on the same diamond cell, of different thicknesses (so different numbers of slices), with
different probes (semi-angle, defocus, scan positions), and a frozen-phonon case. Each batched
result is compared with `multislice.diffraction_window` of the same sample alone, on NumPy:
the array-module code the GPU runs on CuPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from stemdl.simulate.batched_multislice import batch_samples, batches, diffraction_windows
from stemdl.simulate.device import configure_abtem
from stemdl.simulate.multislice import diffraction_window, probe_waves

TOLERANCE = 1e-6  # max |batched − per sample| / max(per-sample pattern)
WINDOW = (24, 20)


def _sample(numbers: tuple[int, int], cells_z: int, semiangle_mrad: float, defocus_a: float,
            positions_xy_a: np.ndarray, phonon_configs: int = 0):
    import abtem

    configure_abtem()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, cells_z)
    atoms.numbers = np.where(np.arange(len(atoms)) % 2 == 0, numbers[0], numbers[1])
    specimen = atoms if not phonon_configs else abtem.FrozenPhonons(
        atoms, num_configs=phonon_configs, sigmas=0.08, seed=3)
    potential = abtem.Potential(specimen, gpts=(72, 72), slice_thickness=2.0,
                                parametrization="kirkland", projection="infinite",
                                device="cpu").build(lazy=False)
    probe = abtem.Probe(energy=100e3, semiangle_cutoff=semiangle_mrad, defocus=defocus_a,
                        Cs=0.0, device="cpu")
    probe.grid.match(potential)
    return probe_waves(probe, positions_xy_a, "cpu"), potential


def _positions(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 10.86, size=(count, 2))


def _assert_batched_equals_alone(samples) -> None:
    batched = diffraction_windows(samples, WINDOW, "cpu")
    assert len(batched) == len(samples)
    for b, (probes, potential) in enumerate(samples):
        alone = diffraction_window(probes, potential, WINDOW, "cpu")
        assert batched[b].shape == alone.shape == (probes.num_probes, *WINDOW)
        error = float(np.max(np.abs(batched[b] - alone))) / float(np.max(alone))
        assert error <= TOLERANCE, f"sample {b}: {error:.2e} of the pattern maximum"


def test_batch_of_different_thicknesses_and_probes_equals_each_alone() -> None:
    samples = [
        _sample((14, 14), 2, 10.0, 0.0, _positions(6, 0)),  # Si, 11 Å: 6 slices
        _sample((31, 33), 3, 8.0, -30.0, _positions(4, 1)),  # GaAs-like, 16 Å: 9 slices
        _sample((14, 14), 1, 12.0, 20.0, _positions(5, 2)),  # Si, 5 Å: 3 slices
    ]
    assert len({len(p.slice_thickness) for _, p in samples}) == 3
    _assert_batched_equals_alone(samples)


def test_batch_with_frozen_phonons_equals_each_alone() -> None:
    samples = [_sample((14, 14), 2, 10.0, 0.0, _positions(3, 3), phonon_configs=2),
               _sample((31, 33), 2, 9.0, 10.0, _positions(3, 4), phonon_configs=2)]
    _assert_batched_equals_alone(samples)


def test_a_batch_is_one_grid_one_energy_one_configuration_count() -> None:
    import abtem

    silicon = _sample((14, 14), 1, 10.0, 0.0, _positions(2, 5))
    phonons = _sample((14, 14), 1, 10.0, 0.0, _positions(2, 5), phonon_configs=2)
    with pytest.raises(ValueError, match="frozen-phonon configurations"):
        diffraction_windows([silicon, phonons], WINDOW, "cpu")
    probe = abtem.Probe(energy=200e3, semiangle_cutoff=10.0, device="cpu")
    probe.grid.match(silicon[1])
    other_energy = (probe_waves(probe, _positions(2, 6), "cpu"), silicon[1])
    with pytest.raises(ValueError, match="one wavelength"):
        diffraction_windows([silicon, other_energy], WINDOW, "cpu")
    with pytest.raises(ValueError, match="at least one sample"):
        diffraction_windows([], WINDOW, "cpu")


def test_batch_sizes() -> None:
    # `small`: 64 probes on 160×144 complex64 = 11.8 MB a sample; 4 GiB on a GPU holds 364.
    assert batch_samples(64, 160 * 144, "gpu") == (4 << 30) // (64 * 160 * 144 * 8)
    assert batch_samples(10**6, 10**6, "cpu") == 1
    assert [list(r) for r in batches(5, 2)] == [[0, 1], [2, 3], [4]]
    assert [len(r) for r in batches(10, 4)] == [4, 3, 3]
    assert sum(len(r) for r in batches(1536, 364)) == 1536 and batches(0, 4) == []
