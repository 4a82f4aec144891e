"""stemdl's multislice engine equals abTEM's, is deterministic, and keeps atoms in their slices.

* Equality: for one material of every prototype family, off the [001] zone axis, with frozen
  phonons, the `stemdl` engine's patterns equal the `abtem` engine's (abTEM's
  `Probe.multislice`) within 1e-5 of the pattern maximum, in slices of 2 Å and of d_hkl.
* Determinism: the same (config, index) gives bit-identical patterns twice in one process
  (also after the FFT plans are made afresh) and in a fresh process.
* Slicing (issue 12, item 5): with d_hkl slices and frozen phonons each atom stays in the slice
  of its undisplaced plane, and no atom moves by the whole thickness.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from stemdl.configs.simulation import ALL_FAMILIES, SimulationConfig
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.device import cuda_device_count
from stemdl.simulate.draws import draw_sample
from stemdl.simulate.fft_plans import clear_plans
from stemdl.simulate.geometry import centre_planes_in_slices, specimen_atoms
from stemdl.simulate.multislice import chunk_probes, window_indices
from stemdl.simulate.physics import PotentialSettings, specimen

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5  # max |stemdl − abTEM| / max(abTEM pattern)


def _config(simulation_config, slices: float | str, **changes: object) -> SimulationConfig:
    settings: dict[str, object] = {
        "structures__families": list(ALL_FAMILIES),
        "structures__materials_per_family": 1,
        "structures__zone_axes": [[0, 1, 1], [1, 1, 1], [1, 1, 0]],
        "structures__max_base_atoms": 128,  # spinel's [011] cell has 112 atoms
        "thickness_a": [6.0, 10.0],
        "slice_thickness_a": slices,
        "phonons": {"num_configs": 2, "sigma_a": 0.08},
        "scan": {"gpts": [2, 3], "fraction": 0.5},
        "detector": {"pattern_px": [16, 16], "binning": 1},
    }
    return simulation_config("tiny", **{**settings, **changes})


def _one_index_per_family(config: SimulationConfig) -> dict[str, int]:
    catalogue = build_catalogue(config)
    chosen: dict[str, int] = {}
    for index in range(400):
        draws = draw_sample(config, index, catalogue.material_splits())
        material = catalogue[draws.material_index]
        axis = material.orientations[draws.orientation_option(len(material.orientations))].zone_axis
        if axis != (0, 0, 1):
            chosen.setdefault(material.family, index)
        if len(chosen) == len(ALL_FAMILIES):
            break
    return chosen


@pytest.mark.parametrize("slices", [2.0, "d_hkl"], ids=["2A-slices", "dhkl-slices"])
def test_stemdl_engine_equals_abtem_for_every_family(slices: float | str, simulation_config) -> None:
    config = _config(simulation_config, slices)
    reference = config.model_copy(update={"engine": "abtem"})
    catalogue = build_catalogue(config)
    chosen = _one_index_per_family(config)
    assert set(chosen) == set(ALL_FAMILIES), f"no off-[001] sample for {set(ALL_FAMILIES) - set(chosen)}"
    errors = {}
    for family, index in chosen.items():
        ours = simulate_sample(config, index, catalogue)
        theirs = simulate_sample(reference, index, catalogue)
        assert ours.record.extra["engine_code"] == 1.0 and theirs.record.extra["engine_code"] == 0.0
        assert ours.record.num_phonon_configs == 2 and ours.record.zone_axis != (0, 0, 1)
        assert np.array_equal(ours.potential, theirs.potential)
        scale = float(np.max(theirs.cbed))
        errors[family] = float(np.max(np.abs(ours.cbed.astype(np.float64) - theirs.cbed))) / scale
    print({k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) <= TOLERANCE, errors


def test_binning_and_an_odd_window_match_abtem(simulation_config) -> None:
    config = _config(simulation_config, 2.0, detector={"pattern_px": [7, 5], "binning": 3})
    ours = simulate_sample(config, 1)
    theirs = simulate_sample(config.model_copy(update={"engine": "abtem"}), 1)
    assert ours.cbed.shape == (6, 7, 5)
    assert np.max(np.abs(ours.cbed - theirs.cbed)) <= TOLERANCE * np.max(theirs.cbed)


def test_window_indices_are_the_central_crop_of_the_fftshifted_axis() -> None:
    for n, m in [(10, 4), (9, 5), (12, 12), (11, 1)]:
        values = np.fft.fftfreq(n) * n
        crop = np.fft.fftshift(values)[n // 2 - m // 2 : n // 2 - m // 2 + m]
        assert np.array_equal(values[window_indices(n, m)], crop)
    with pytest.raises(ValueError, match="cannot take a window"):
        window_indices(4, 5)


def test_probe_chunks_fit_the_budget_and_split_evenly() -> None:
    assert chunk_probes(64, 240 * 270, "cpu") == 2  # 518 KB a probe: two per MiB
    assert chunk_probes(64, 16 * 16, "cpu") == 64
    assert chunk_probes(5, 10**7, "cpu") == 1
    assert chunk_probes(1024, 1000 * 1000, "gpu") == 512


def test_engine_is_deterministic_in_process_and_across_processes(tmp_path: Path, simulation_config) -> None:
    config = _config(simulation_config, "d_hkl")
    first = simulate_sample(config, 4).cbed
    clear_plans()
    again = simulate_sample(config, 4).cbed
    assert np.array_equal(first, again)
    out = tmp_path / "cbed.npy"
    script = (
        "import numpy as np; from stemdl.configs import SimulationConfig;"
        "from stemdl.simulate import simulate_sample;"
        f"config = SimulationConfig.model_validate_json({config.model_dump_json()!r});"
        f"np.save({str(out)!r}, simulate_sample(config, 4).cbed)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, timeout=120)
    assert np.array_equal(first, np.load(out))


def _slice_of(z: np.ndarray, slice_a: float, thickness_a: float) -> np.ndarray:
    """abTEM's slice index of z: wrapped into [0, thickness), then binned."""
    return np.floor(np.mod(z, thickness_a) / slice_a).astype(int)


def _fcc_110_like(planes: int = 2, cells_z: int = 6) -> tuple[Atoms, float]:
    """A cell whose atomic planes sit at multiples of d = c / planes, as d_hkl slicing sees them."""
    period = 2.8
    z = np.repeat(np.arange(planes) * period / planes, 4)
    xy = np.tile([[0, 0], [1.4, 0], [0, 1.4], [1.4, 1.4]], (planes, 1))
    base = Atoms("Cu" * len(z), positions=np.column_stack([xy, z]), cell=[2.8, 2.8, period], pbc=True)
    return base, period / planes


def _displaced(base: Atoms, d: float, sigma: float, shift: bool, reps: tuple[int, int, int]) -> list[Atoms]:
    positions = centre_planes_in_slices(base.positions, base.cell[2, 2], d) if shift else base.positions
    atoms = specimen_atoms(base.cell.array, base.numbers, positions, reps)
    settings = PotentialSettings((32, 32), (d,) * (reps[2] * 2), "kirkland", "infinite", 4, sigma, 11)
    return [atoms, *specimen(atoms, settings).trajectory]


def test_phonons_keep_every_atom_in_its_planes_slice() -> None:
    base, d = _fcc_110_like()
    reps = (3, 3, 6)
    undisplaced, *configurations = _displaced(base, d, 0.08, True, reps)
    thickness = undisplaced.cell[2, 2]
    planes = _slice_of(undisplaced.positions[:, 2], d, thickness)
    assert np.allclose(np.mod(undisplaced.positions[:, 2], d), d / 2)  # planes mid-slice
    for displaced in configurations:
        assert np.array_equal(_slice_of(displaced.positions[:, 2], d, thickness), planes)


def test_no_atom_wraps_through_the_thickness() -> None:
    base, d = _fcc_110_like()
    reps = (3, 3, 6)
    num_slices = 2 * reps[2]
    undisplaced, *configurations = _displaced(base, d, 0.6, True, reps)  # large: atoms leave faces
    thickness = undisplaced.cell[2, 2]
    before = _slice_of(undisplaced.positions[:, 2], d, thickness)
    for displaced in configurations:
        moved = np.abs(_slice_of(displaced.positions[:, 2], d, thickness) - before)
        assert moved.max() < num_slices - 1
    # Without the fix (planes on slice boundaries, abTEM's periodic wrap), atoms of the entrance
    # plane that move up land in the last slice: the defect this guards against.
    plain = specimen_atoms(base.cell.array, base.numbers, base.positions, reps)
    rng = np.random.default_rng(0)
    z = plain.positions[:, 2] + rng.normal(scale=0.08, size=len(plain))
    jumps = np.abs(_slice_of(z, d, thickness) - _slice_of(plain.positions[:, 2], d, thickness))
    assert jumps.max() == num_slices - 1


def test_reduced_grid_is_coarser_keeps_the_target_and_approximates_the_patterns(simulation_config) -> None:
    full_config = _config(simulation_config, 2.0, phonons={"num_configs": 1, "sigma_a": 0.0})
    full = simulate_sample(full_config, 2)
    reduced = simulate_sample(full_config.model_copy(update={"reduced_grid_margin": 1.5}), 2)
    gpts = (reduced.record.extra["multislice_gpts_x"], reduced.record.extra["multislice_gpts_y"])
    assert gpts[0] * gpts[1] < full.record.gpts[0] * full.record.gpts[1]
    assert np.array_equal(reduced.potential, full.potential)
    error = np.max(np.abs(reduced.cbed - full.cbed)) / np.max(full.cbed)
    assert 0 < error < 0.2
    wide = simulate_sample(full_config.model_copy(update={"reduced_grid_margin": 8.0}), 2)
    assert np.array_equal(wide.cbed, full.cbed)  # a margin beyond the full band changes nothing


def test_reduced_grid_refuses_the_abtem_engine(simulation_config) -> None:
    from stemdl.configs import ConfigError

    with pytest.raises(ConfigError, match="reduced_grid_margin needs engine: stemdl"):
        _config(simulation_config, 2.0, reduced_grid_margin=2.0, engine="abtem")


@pytest.mark.gpu
@pytest.mark.skipif(cuda_device_count() == 0, reason="needs CUDA and CuPy")
def test_stemdl_engine_on_the_gpu_equals_abtem_and_the_cpu_and_repeats_its_bits(simulation_config) -> None:
    config = _config(simulation_config, "d_hkl", device="gpu")
    catalogue = build_catalogue(config)
    for index in sorted(_one_index_per_family(config).values())[:4]:
        ours = simulate_sample(config, index, catalogue)
        theirs = simulate_sample(config.model_copy(update={"engine": "abtem"}), index, catalogue)
        on_cpu = simulate_sample(config.model_copy(update={"device": "cpu"}), index, catalogue)
        assert ours.record.device == "gpu"
        scale = np.max(theirs.cbed)
        assert np.max(np.abs(ours.cbed - theirs.cbed)) <= TOLERANCE * scale
        assert np.max(np.abs(ours.cbed - on_cpu.cbed)) <= TOLERANCE * scale
        assert np.array_equal(simulate_sample(config, index, catalogue).cbed, ours.cbed)


def test_both_cpu_fft_libraries_agree_and_are_deterministic(monkeypatch: pytest.MonkeyPatch, simulation_config) -> None:
    from stemdl.simulate import fft_plans

    config = _config(simulation_config, 2.0)
    pocket = simulate_sample(config, 3).cbed
    monkeypatch.setattr(fft_plans, "CPU_FFT_LIBRARY", "fftw")
    fftw = simulate_sample(config, 3).cbed
    clear_plans()
    assert np.array_equal(simulate_sample(config, 3).cbed, fftw)
    assert np.max(np.abs(fftw - pocket)) <= TOLERANCE * np.max(pocket)


def test_kept_frequencies_resample_a_band_limited_signal_exactly() -> None:
    from stemdl.simulate.multislice import kept_frequencies

    rng = np.random.default_rng(5)
    n, m = 30, 12  # a coarse grid that does not share the fine grid's points
    frequencies = np.arange(-((m - 1) // 2), (m - 1) // 2 + 1)  # |f| < m/2
    coefficients = rng.normal(size=len(frequencies)) + 1j * rng.normal(size=len(frequencies))

    def signal(x: np.ndarray) -> np.ndarray:
        return (coefficients[None, :] * np.exp(2j * np.pi * np.outer(x, frequencies))).sum(axis=1)

    spectrum = np.fft.fft(signal(np.arange(n) / n)) / n
    coarse = np.zeros(m, dtype=complex)
    for old, new in kept_frequencies(n, m):
        coarse[new] = spectrum[old]
    resampled = np.fft.ifft(coarse) * m
    assert np.allclose(resampled, signal(np.arange(m) / m), atol=1e-12)
    with pytest.raises(ValueError, match="finer"):
        kept_frequencies(8, 9)
