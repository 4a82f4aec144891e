"""Physical laws the simulated patterns and targets must obey (independent of any reference code).

* Conservation: the far field carries at most the incident beam; inside abTEM's antialiasing
  aperture it carries nearly all of it.
* Symmetry: a probe on a Si [001] atom column sees the column's site symmetry: the diagonal
  mirror of -43m holds exactly (every slice is mirror-symmetric), the 4-fold rotation holds up
  to the small 3D (HOLZ) corrections of -4; a probe off the column breaks both.
* Dynamical scattering: a thicker crystal scatters more intensity out of the bright-field disk.
* The target is the sum over slices of the potential the electrons saw (`Potential.build()`
  summed, and abTEM's own `Potential.project()`).
"""

from __future__ import annotations

from pathlib import Path

import abtem
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from stemdl.simulate import simulate_sample
from stemdl.simulate.device import configure_abtem
from stemdl.simulate.geometry import specimen_atoms
from stemdl.simulate.orientation import orient
from stemdl.simulate.physics import (
    PotentialSettings,
    ProbeSettings,
    build_potential,
    cbed_patterns,
    projected_potential_sections,
)

SI_A = 5.43
ENERGY_EV = 100e3


def _si_001_specimen(cells_xy: int, cells_z: int) -> Atoms:
    base = orient(
        bulk("Si", "diamond", a=SI_A, cubic=True), (0, 0, 1), max_strain=0.0, max_atoms=8
    ).atoms
    return specimen_atoms(
        base.cell.array, base.numbers, base.positions, (cells_xy, cells_xy, cells_z)
    )


def _settings(gpts: int, num_slices: int, thickness_a: float) -> PotentialSettings:
    return PotentialSettings(
        gpts=(gpts, gpts),
        slice_thicknesses_a=(thickness_a / num_slices,) * num_slices,
        parametrization="kirkland",
        projection="infinite",
        num_phonon_configs=1,
        phonon_sigma_a=0.0,
        phonon_seed=0,
    )


def _si_patterns(
    positions_xy_a: np.ndarray,
    *,
    cells_z: int,
    semiangle_mrad: float = 10.0,
    gpts: int = 96,
    pattern_px: int = 63,
    cells_xy: int = 3,
) -> np.ndarray:
    atoms = _si_001_specimen(cells_xy, cells_z)
    settings = _settings(gpts, 4 * cells_z, SI_A * cells_z)  # d_hkl = a/4: one atomic layer a slice
    configure_abtem()
    potential = build_potential(atoms, settings, "cpu")
    return cbed_patterns(
        potential,
        ProbeSettings(ENERGY_EV, semiangle_mrad, 0.0, 0.0),
        positions_xy_a,
        (pattern_px, pattern_px),
        1,
        "cpu",
    ).astype(np.float64)


def test_intensity_is_conserved_inside_the_antialiasing_aperture(tmp_path: Path, simulation_config, write_cif) -> None:
    # Only Si, a cell of exactly 3 x 3 unit cells, and a grid whose ceil(extent / sampling) is
    # already FFT-friendly (160), so the stored pattern is the whole 2/3 * gpts valid region.
    write_cif(tmp_path / "si.cif", bulk("Si", "diamond", a=SI_A, cubic=True))
    config = simulation_config(
        "tiny",
        structures__cif_dir=str(tmp_path),
        structures__families=[],
        cell_xy_a=3 * SI_A,
        sampling_a=0.102,
        detector={"pattern_px": [106, 106], "binning": 1},
    )
    for index in range(2):
        sample = simulate_sample(config, index)
        assert sample.record.gpts == (160, 160)
        totals = sample.cbed.astype(np.float64).sum(axis=(1, 2))
        assert np.all(totals <= 1.0 + 1e-5)
        assert np.all(totals > 0.98)


def test_stored_patterns_never_exceed_the_incident_beam(simulation_config) -> None:
    config = simulation_config("tiny")
    for index in range(4):
        totals = simulate_sample(config, index).cbed.astype(np.float64).sum(axis=(1, 2))
        assert np.all(totals <= 1.0 + 1e-5) and np.all(totals > 0.5)


def _centre_symmetric_crop(pattern: np.ndarray, radius: int) -> np.ndarray:
    centre = pattern.shape[-1] // 2  # zero frequency
    return pattern[centre - radius : centre + radius + 1, centre - radius : centre + radius + 1]


def test_probe_on_a_si_001_column_gives_4mm_symmetry(relative_error) -> None:
    column = 1.5 * SI_A  # an atom column at the cell centre (cells_xy = 3)
    on, off = _si_patterns(np.array([[column, column], [column + 0.35, column + 0.12]]), cells_z=2)
    on, off = _centre_symmetric_crop(on, 30), _centre_symmetric_crop(off, 30)
    # exact: the {110} mirror (pattern transpose)
    assert relative_error(on.T, on) < 1e-5
    # approximate: 4-fold rotation and the {100} mirrors (exact only in projection)
    rotation, mirror = relative_error(np.rot90(on), on), relative_error(on[::-1, :], on)
    assert rotation < 5e-3 and mirror < 5e-3
    assert relative_error(np.rot90(off), off) > 5 * rotation
    assert relative_error(off.T, off) > 1e-3


def test_thicker_crystals_scatter_more_out_of_the_bright_field_disk() -> None:
    semiangle_mrad = 6.0  # below the (220) Bragg angle: disks do not overlap
    pattern_px, gpts = 63, 96
    k = np.fft.fftshift(np.fft.fftfreq(gpts, d=3 * SI_A / gpts))[gpts // 2 - 31 : gpts // 2 + 32]
    angle_mrad = 1e3 * abtem.core.energy.energy2wavelength(ENERGY_EV) * np.hypot(*np.meshgrid(k, k))
    outside = angle_mrad > semiangle_mrad + 1.0
    fractions = []
    for cells_z in (1, 3, 8):
        pattern = _si_patterns(
            np.array([[1.5 * SI_A + 0.7, 1.5 * SI_A + 0.3]]),
            cells_z=cells_z,
            semiangle_mrad=semiangle_mrad,
            pattern_px=pattern_px,
            gpts=gpts,
        )[0]
        fractions.append(pattern[outside].sum() / pattern.sum())
    assert fractions[0] > 0.001
    assert fractions[0] < fractions[1] < fractions[2]


def test_target_is_the_sum_over_slices_of_the_potential(relative_error) -> None:
    atoms = _si_001_specimen(2, 2)
    settings = _settings(72, 8, 2 * SI_A)
    built = build_potential(atoms, settings, "cpu")
    total = projected_potential_sections(built, 1)[0]
    three = projected_potential_sections(built, 3)
    potential = abtem.Potential(
        atoms,
        gpts=72,
        slice_thickness=settings.slice_thicknesses_a,
        parametrization="kirkland",
        projection="infinite",
    )
    by_hand = np.asarray(potential.build().compute().array, dtype=np.float64).sum(axis=0).T
    projected = np.asarray(potential.project().compute().array, dtype=np.float64).T
    assert relative_error(total, by_hand) < 1e-6
    assert relative_error(total, projected) < 1e-5
    assert relative_error(three.sum(axis=0), total) < 1e-12
    slices = np.asarray(built.array, dtype=np.float64)
    assert relative_error(three[0], slices[:3].sum(axis=0).T) < 1e-12  # groups of 3, 3, 2 slices
    assert total.max() > 0 and total.min() > 0  # the potential of neutral atoms is positive


def test_depth_sections_beyond_the_slices_is_a_clear_error() -> None:
    atoms = _si_001_specimen(1, 1)
    built = build_potential(atoms, _settings(36, 2, SI_A), "cpu")
    with pytest.raises(ValueError, match="depth_sections=3 exceeds the 2 slices"):
        projected_potential_sections(built, 3)
