"""The strong baselines of `train.baselines`: iCoM against abTEM and an analytic field; the
aligned nearest neighbour finds a D4-transformed, shifted copy of a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemdl.datasets.augment import apply_d4
from stemdl.train.baselines import (
    aligned_nearest_neighbour,
    centre_of_mass,
    fourier_integrate,
    icom_prediction,
    pool_patterns,
)


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_fourier_integration_inverts_an_analytic_gradient() -> None:
    n = 12
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    phi = np.cos(2 * np.pi * y / n) + 0.5 * np.sin(2 * np.pi * 2 * x / n + 0.3)
    grad_y = -2 * np.pi / n * np.sin(2 * np.pi * y / n)
    grad_x = 0.5 * 2 * np.pi * 2 / n * np.cos(2 * np.pi * 2 * x / n + 0.3)
    gradient = torch.from_numpy(np.stack([grad_y, grad_x])[None])
    recovered = fourier_integrate(gradient)[0].numpy()
    np.testing.assert_allclose(recovered, phi - phi.mean(), atol=1e-10)


def test_centre_of_mass_of_a_shifted_spot() -> None:
    cbed = torch.zeros(1, 4, 9, 9)
    for p, (ky, kx) in enumerate([(4, 4), (6, 4), (4, 1), (2, 7)]):
        cbed[0, p, ky, kx] = 3.0  # zero frequency at pixel 4
    com = centre_of_mass(cbed, (2, 2))[0]
    np.testing.assert_allclose(com[0].numpy().ravel(), [0, 2, 0, -2])
    np.testing.assert_allclose(com[1].numpy().ravel(), [0, 0, -3, 3])


def test_icom_of_abtem_patterns_is_the_projected_potential() -> None:
    """Two atoms in a periodic 8 Å cell, scanned on a 16 × 16 grid of cell centres, simulated
    with abTEM directly; the patterns are put in the store's convention (P, ky, kx), probes
    row-major (y, x). The CoM field follows the gradient of the probe-blurred projected
    potential (the beam is pulled towards the nuclei), and the iCoM map is that potential:
    a sign or axis error would give r ≤ 0."""
    import abtem
    from ase import Atoms

    side, grid, gpts = 8.0, 16, 80
    atoms = Atoms("AuO", positions=[(2.6, 5.1, 1.0), (5.8, 2.2, 1.0)], cell=[side, side, 2.0],
                  pbc=True)
    potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=2.0, projection="infinite")
    probe = abtem.Probe(energy=100e3, semiangle_cutoff=25.0, defocus=0.0)
    centres = (np.arange(grid) + 0.5) * side / grid
    positions = np.array([(x, y) for y in centres for x in centres])  # row-major (y, x)
    waves = probe.multislice(potential, scan=abtem.CustomScan(positions))
    patterns = np.asarray(waves.diffraction_patterns(max_angle=None).compute().array)
    cbed = torch.from_numpy(np.swapaxes(patterns, -1, -2)[None].astype(np.float32))

    projected = np.asarray(potential.build().compute().array).sum(axis=0).T  # (y, x)
    probe.grid.match(potential)
    intensity = np.abs(np.asarray(probe.build((side / 2, side / 2)).compute().array)) ** 2
    intensity = np.fft.ifftshift(intensity.T)  # centred on pixel 0: a convolution kernel
    blurred = np.fft.ifft2(np.fft.fft2(projected) * np.fft.fft2(intensity)).real
    step = gpts // grid
    on_grid = blurred.reshape(grid, step, grid, step).mean(axis=(1, 3))

    com = centre_of_mass(cbed, (grid, grid))[0].numpy()
    assert _r(com[1], np.gradient(on_grid, axis=1)) > 0.8  # x: columns
    assert _r(com[0], np.gradient(on_grid, axis=0)) > 0.8  # y: rows
    phi = fourier_integrate(centre_of_mass(cbed, (grid, grid)))[0].numpy()
    assert _r(phi, on_grid) > 0.9
    # Upsampled to a 40 × 40 target (2 potential px each), pixel centres aligned with probes:
    mapped = icom_prediction(cbed, (grid, grid), (40, 40), channels=2)
    assert mapped.shape == (1, 2, 40, 40)
    assert abs(float(mapped.mean())) < 1e-5
    assert float(mapped[0, 1].std(unbiased=False)) == pytest.approx(1, abs=1e-3)
    fine = blurred.reshape(40, 2, 40, 2).mean(axis=(1, 3))
    assert _r(mapped[0, 0].numpy(), fine) > 0.9


def test_pooling_keeps_the_window_symmetric() -> None:
    x = torch.arange(33.0)[None, :].repeat(33, 1) - 16  # odd function of kx about pixel 16
    pooled = pool_patterns(x[None, None], 3)[0, 0]
    assert pooled.shape == (11, 11)
    np.testing.assert_allclose(pooled.numpy(), -pooled.flip(-1).numpy(), atol=1e-6)


def test_aligned_nearest_neighbour_finds_a_transformed_shifted_copy() -> None:
    """References are 8 × 8-probe crops of random 'specimens' (12 × 12 probes of 9 × 9 px,
    4 target px per probe); the query is another crop of specimen 2, 1 and -1 probes away,
    under D4 operation 5. The neighbour must be specimen 2, and its prediction must equal the
    query's own target wherever the shifted reference covers it."""
    rng = np.random.default_rng(0)
    n, big, gy, f = 5, 12, 8, 4
    specimens = rng.normal(size=(n, big, big, 9, 9)).astype(np.float32)
    maps = rng.normal(size=(n, 1, big * f, big * f)).astype(np.float32)

    def crop(i: int, oy: int, ox: int) -> tuple[np.ndarray, np.ndarray]:
        cbed = specimens[i, oy:oy + gy, ox:ox + gy].reshape(gy * gy, 9, 9)
        return cbed, maps[i, :, oy * f:(oy + gy) * f, ox * f:(ox + gy) * f]

    refs = [crop(i, 2, 2) for i in range(n)]
    query_cbed, query_map = apply_d4(*crop(2, 3, 1), (gy, gy), 5)
    predicted, chosen = aligned_nearest_neighbour(
        torch.from_numpy(np.stack([r[0] for r in refs])),
        torch.from_numpy(np.stack([r[1] for r in refs])),
        torch.from_numpy(np.ascontiguousarray(query_cbed)[None]), (gy, gy), max_shift=2)
    assert chosen["reference"][0] == 2 and chosen["op"][0] == 5
    covered = predicted[0].numpy() != 0
    assert covered.mean() == pytest.approx((7 / 8) ** 2)
    np.testing.assert_array_equal(predicted[0].numpy()[covered], query_map[covered])
    # Without the shift search the same query is matched worse: the prediction is wrong.
    unshifted, _ = aligned_nearest_neighbour(
        torch.from_numpy(np.stack([r[0] for r in refs])),
        torch.from_numpy(np.stack([r[1] for r in refs])),
        torch.from_numpy(np.ascontiguousarray(query_cbed)[None]), (gy, gy), max_shift=0)
    assert _r(unshifted[0].numpy(), query_map) < 0.5
