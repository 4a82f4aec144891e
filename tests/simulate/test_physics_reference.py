"""Samples equal a hand-written abTEM computation rebuilt from nothing but their SampleRecord.

The reference below uses abTEM directly (lazy potential built inside multislice, abTEM's own
scheduler), not any simulate/ function: atoms from the record's base cell × repetitions,
`abtem.Potential`, `abtem.Probe`, `abtem.CustomScan`, multislice, `diffraction_patterns`, and
the documented crop/bin. The target reference integrates the projected potential's Fourier
interpolant over each target pixel by Gauss–Legendre quadrature (a different route from the
implementation's closed-form sinc filter).
"""

from __future__ import annotations

import abtem
import numpy as np
import pytest
from ase import Atoms

from stemdl.configs import load_config
from stemdl.configs.simulation import SimulationConfig
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.draws import draw_sample
from stemdl.simulate.sample import Sample, SampleRecord

QUADRATURE_POINTS = 12


def _specimen(record: SampleRecord) -> Atoms | abtem.AtomsEnsemble:
    base = Atoms(
        numbers=record.atomic_numbers, positions=record.positions_a, cell=record.cell_a, pbc=True
    )
    atoms = base * record.repetitions
    if record.num_phonon_configs == 1 and record.phonon_sigma_a == 0:
        return atoms
    phonons = abtem.FrozenPhonons(
        atoms, num_configs=record.num_phonon_configs, sigmas=record.phonon_sigma_a, seed=record.seed
    )
    # stemdl's documented rule: displaced atoms stay within the thickness (z clamped), rather
    # than wrapping from the entrance face to the exit face.
    configurations = []
    for displaced in phonons.to_atoms_ensemble().trajectory:
        displaced = displaced.copy()
        displaced.positions[:, 2] = np.clip(displaced.positions[:, 2], 0, record.thickness_a - 1e-6)
        configurations.append(displaced)
    return abtem.AtomsEnsemble(configurations)


def _potential(record: SampleRecord) -> abtem.Potential:
    return abtem.Potential(
        _specimen(record),
        gpts=record.gpts,
        slice_thickness=(record.slice_thickness_a,) * record.num_slices,
        parametrization=record.parametrization,
        projection=record.projection,
    )


def reference_cbed(record: SampleRecord, pattern_px: tuple[int, int]) -> np.ndarray:
    probe = abtem.Probe(
        energy=record.energy_ev,
        semiangle_cutoff=record.semiangle_mrad,
        defocus=record.defocus_a,
        Cs=record.c30_a,
        tilt=record.tilt_mrad,
    )
    waves = probe.multislice(_potential(record), scan=abtem.CustomScan(record.probe_positions_a))
    full = np.asarray(waves.diffraction_patterns(max_angle=None).compute().array, dtype=np.float64)
    if full.ndim == 4:
        full = full.mean(axis=0)
    binning = record.detector_binning
    # abTEM's fftshift puts zero frequency at n // 2; keep frequencies -m//2 .. m - m//2 - 1.
    m_y, m_x = pattern_px[0] * binning, pattern_px[1] * binning
    n_x, n_y = full.shape[-2:]
    crop = full[
        :,
        n_x // 2 - m_x // 2 : n_x // 2 - m_x // 2 + m_x,
        n_y // 2 - m_y // 2 : n_y // 2 - m_y // 2 + m_y,
    ]
    crop = np.swapaxes(crop, 1, 2)  # (P, ky, kx)
    return crop.reshape(len(crop), pattern_px[0], binning, pattern_px[1], binning).sum(axis=(2, 4))


def _interpolant_on(
    maps_yx: np.ndarray, sampling: tuple[float, float], ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Trigonometric interpolant of periodic (C, ny, nx) maps evaluated on the grid ys × xs."""
    _, ny, nx = maps_yx.shape
    spectrum = np.fft.fft2(maps_yx)
    ky, kx = np.fft.fftfreq(ny, d=sampling[1]), np.fft.fftfreq(nx, d=sampling[0])
    rows, cols = np.exp(2j * np.pi * np.outer(ys, ky)), np.exp(2j * np.pi * np.outer(xs, kx))
    return (rows @ spectrum @ cols.T).real / (nx * ny)


def reference_target(record: SampleRecord, target_shape: tuple[int, int, int]) -> np.ndarray:
    slices = np.asarray(_potential(record).build().compute().array, dtype=np.float64)
    if slices.ndim == 4:
        slices = slices.mean(axis=0)
    sections = np.stack([s.sum(axis=0) for s in np.array_split(slices, target_shape[0])])
    maps = np.swapaxes(sections, 1, 2)  # (C, y, x)
    sigma_px = record.extra["target_smoothing_px"]
    x0, y0, x1, y1 = record.target_region_a
    height, width = target_shape[1:]
    if sigma_px > 0:
        ky = np.fft.fftfreq(maps.shape[1], d=record.sampling_a[1])
        kx = np.fft.fftfreq(maps.shape[2], d=record.sampling_a[0])
        sy, sx = sigma_px * (y1 - y0) / height, sigma_px * (x1 - x0) / width
        gauss = np.exp(-2 * np.pi**2 * ((sy * ky[:, None]) ** 2 + (sx * kx[None, :]) ** 2))
        maps = np.fft.ifft2(np.fft.fft2(maps) * gauss).real
    nodes, weights = np.polynomial.legendre.leggauss(QUADRATURE_POINTS)
    nodes, weights = (nodes + 1) / 2, weights / 2  # on [0, 1], summing to 1
    ys = y0 + (np.arange(height)[:, None] + nodes[None, :]).ravel() * (y1 - y0) / height
    xs = x0 + (np.arange(width)[:, None] + nodes[None, :]).ravel() * (x1 - x0) / width
    values = _interpolant_on(maps, record.sampling_a, ys, xs)
    values = values.reshape(-1, height, QUADRATURE_POINTS, width, QUADRATURE_POINTS)
    return np.einsum("chiwj,i,j->chw", values, weights, weights)


def _indices_with_distinct_families(config: SimulationConfig, count: int) -> list[int]:
    catalogue = build_catalogue(config)
    chosen: dict[str, int] = {}
    for index in range(200):
        family = catalogue[
            draw_sample(config, index, catalogue.material_splits()).material_index
        ].family
        chosen.setdefault(family, index)
        if len(chosen) == count:
            break
    return sorted(chosen.values())


TINY = load_config("tiny").simulation
# Everything the paper turned on, at tiny scale: strongest-reflection axis, touching disks,
# d_hkl slices, frozen phonons, binning, two depth sections, smoothing.
PAPERLIKE = TINY.model_validate({
    **TINY.model_dump(),
    "structures": {**TINY.structures.model_dump(), "zone_axes": "strongest"},
    "semiangle_mrad": "touching",
    "slice_thickness_a": "d_hkl",
    "phonons": {"num_configs": 2, "sigma_a": 0.08},
    "detector": {"pattern_px": [12, 12], "binning": 2},
    "target": {"target_px": [12, 12], "depth_sections": 2, "smoothing_px": 1.2},
})
CASES = [(TINY, i) for i in _indices_with_distinct_families(TINY, 3)] + [(PAPERLIKE, 5)]


def _check(relative_error, sample: Sample) -> None:
    record = sample.record
    cbed = reference_cbed(record, sample.cbed.shape[1:])
    assert sample.cbed.dtype == np.float32 and sample.potential.dtype == np.float32
    assert relative_error(sample.cbed, cbed) <= 1e-4
    assert np.max(np.abs(sample.cbed - cbed)) <= 1e-4 * np.max(cbed)
    target = reference_target(record, sample.potential.shape)
    assert relative_error(sample.potential, target) <= 1e-4


@pytest.mark.parametrize(
    ("config", "index"),
    CASES,
    ids=[f"{'tiny' if c is TINY else 'paperlike'}-{i}" for c, i in CASES],
)
def test_sample_equals_hand_written_abtem(config: SimulationConfig, index: int, relative_error) -> None:
    _check(relative_error, simulate_sample(config, index))


def test_the_cases_cover_different_families_and_the_paper_options() -> None:
    catalogue = build_catalogue(TINY)
    families = {
        catalogue[draw_sample(TINY, i, catalogue.material_splits()).material_index].family
        for c, i in CASES[:3]
    }
    assert len(families) == 3
    record = simulate_sample(PAPERLIKE, 5).record
    assert record.num_phonon_configs == 2 and record.detector_binning == 2
    assert "touching_g_inv_a" in record.extra
    assert record.num_slices == record.repetitions[2] * record.extra["planes_per_period"]


def test_record_is_consistent() -> None:
    sample = simulate_sample(TINY, 0)
    r = sample.record
    assert set(SampleRecord.field_names()) == set(vars(r))
    assert np.allclose(r.cell_a, np.diag(np.diag(r.cell_a)))
    assert r.thickness_a == pytest.approx(r.cell_a[2, 2] * r.repetitions[2])
    assert r.extent_a == pytest.approx(
        (r.cell_a[0, 0] * r.repetitions[0], r.cell_a[1, 1] * r.repetitions[1])
    )
    assert min(r.extent_a) >= TINY.cell_xy_a
    assert r.sampling_a == pytest.approx((r.extent_a[0] / r.gpts[0], r.extent_a[1] / r.gpts[1]))
    assert max(r.sampling_a) <= TINY.sampling_a
    assert r.slice_thickness_a * r.num_slices == pytest.approx(r.thickness_a)
    assert r.angular_sampling_mrad[0] == pytest.approx(1e3 * r.wavelength_a / r.extent_a[0])
    assert r.wavelength_a == pytest.approx(abtem.core.energy.energy2wavelength(r.energy_ev))
    x0, y0, x1, y1 = r.target_region_a
    assert r.probe_positions_a.shape == (TINY.num_patterns, 2)
    assert np.all((r.probe_positions_a[:, 0] > x0) & (r.probe_positions_a[:, 0] < x1))
    assert np.all((r.probe_positions_a[:, 1] > y0) & (r.probe_positions_a[:, 1] < y1))
    assert r.split in ("train", "validation", "test") and r.device == "cpu"
    assert sample.cbed.shape == (TINY.num_patterns, *TINY.detector.pattern_px)
    assert sample.potential.shape == (TINY.target.depth_sections, *TINY.target.target_px)
