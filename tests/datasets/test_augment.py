"""D4 augmentation teaches no wrong physics: an augmented sample equals the sample simulated, with
abTEM directly, from the mirrored or transposed specimen; and the loader applies it exactly."""

from __future__ import annotations

import abtem
import numpy as np
import pytest
from ase import Atoms

from stemdl.datasets.augment import D4_SIZE, apply_d4, check_d4
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.geometry import scan_grid
from stemdl.simulate.sample import SampleRecord
from stemdl.simulate.target import resample_region

MIRROR_X, TRANSPOSE = 1, 4


def _transformed_atoms(record: SampleRecord, op: int) -> tuple[Atoms, tuple[float, float]]:
    """The record's specimen mirrored about the cell centre in x (op 1) or with x and y swapped
    (op 4), and its lateral extent (x, y)."""
    base = Atoms(numbers=record.atomic_numbers, positions=record.positions_a,
                 cell=record.cell_a, pbc=True)
    atoms = base * record.repetitions
    lengths = np.diag(atoms.cell.array).copy()
    assert np.allclose(atoms.cell.array, np.diag(lengths)), "oriented cells are orthogonal"
    positions = atoms.positions.copy()
    if op == MIRROR_X:  # x → extent − x (mod extent): the mirror about the scan centre
        positions[:, 0] = np.mod(lengths[0] - positions[:, 0], lengths[0])
    elif op == TRANSPOSE:
        positions[:, [0, 1]] = positions[:, [1, 0]]
        lengths[[0, 1]] = lengths[[1, 0]]
    else:
        raise ValueError(op)
    out = Atoms(numbers=atoms.numbers, positions=positions, cell=np.diag(lengths), pbc=True)
    return out, (float(lengths[0]), float(lengths[1]))


def _simulate_directly(record: SampleRecord, atoms: Atoms, extent: tuple[float, float],
                       gpts: tuple[int, int], pattern_px: int, scan_gpts: tuple[int, int],
                       side_a: float, target_px: tuple[int, int], smoothing_px: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(P, ky, kx) patterns and (1, H, W) target of `atoms` with plain abTEM calls."""
    potential = abtem.Potential(
        atoms, gpts=gpts, slice_thickness=(record.slice_thickness_a,) * record.num_slices,
        parametrization=record.parametrization, projection=record.projection).build(lazy=False)
    probe = abtem.Probe(energy=record.energy_ev, semiangle_cutoff=record.semiangle_mrad,
                        defocus=record.defocus_a, Cs=record.c30_a)
    positions, region = scan_grid(extent, side_a, scan_gpts)
    waves = probe.multislice(potential, scan=abtem.CustomScan(positions))
    patterns = np.asarray(waves.diffraction_patterns(max_angle=None).compute().array)
    nx, ny = patterns.shape[-2:]
    half = pattern_px // 2
    window = patterns[:, nx // 2 - half: nx // 2 + half + 1, ny // 2 - half: ny // 2 + half + 1]
    cbed = np.swapaxes(window, -1, -2)  # (P, ky, kx)
    projected = np.asarray(potential.array, dtype=np.float64).sum(axis=0)
    sampling = (extent[0] / gpts[0], extent[1] / gpts[1])
    target = resample_region(np.swapaxes(projected, -1, -2)[None], sampling, region, target_px,
                             smoothing_px)
    return cbed, target


@pytest.mark.parametrize("op", [MIRROR_X, TRANSPOSE])
def test_d4_equals_simulating_the_transformed_specimen(op: int, simulation_config) -> None:
    config = simulation_config("tiny", detector__pattern_px=[25, 25], target__smoothing_px=1.0,
                               structures__families=["zincblende", "perovskite", "fluorite"],
                               structures__zone_axes=[[0, 1, 1]])
    catalogue = build_catalogue(config)
    changed = 0
    for index in range(3):
        sample = simulate_sample(config, index, catalogue)
        record = sample.record
        augmented_cbed, augmented_target = apply_d4(sample.cbed, sample.potential,
                                                    config.scan.gpts, op)
        atoms, extent = _transformed_atoms(record, op)
        gpts = tuple(record.gpts) if op == MIRROR_X else (record.gpts[1], record.gpts[0])
        cbed, target = _simulate_directly(record, atoms, extent, gpts, 25, config.scan.gpts,
                                          config.scan.side_a(config.cell_xy_a),
                                          config.target.target_px, 1.0)
        scale, target_scale = float(np.abs(cbed).max()), float(np.abs(target).max())
        assert np.abs(augmented_cbed - cbed).max() / scale < 1e-4, (index, record.zone_axis)
        assert np.abs(augmented_target - target).max() / target_scale < 1e-4
        # Does the operation matter for this specimen (a polar [011] projection is not
        # symmetric under it)? At least one sample must show it, or the test proves nothing.
        changed += bool(np.abs(sample.cbed - cbed).max() / scale > 1e-2)
    assert changed >= 1


def test_d4_is_a_group_action_and_checks_shapes() -> None:
    rng = np.random.default_rng(0)
    cbed = rng.random((9, 5, 5)).astype(np.float32)
    target = rng.random((1, 6, 6)).astype(np.float32)
    results = {apply_d4(cbed, target, (3, 3), op)[0].tobytes() for op in range(D4_SIZE)}
    assert len(results) == D4_SIZE  # 8 distinct operations
    for op in range(D4_SIZE):  # every operation has an inverse among the 8
        c, t = apply_d4(cbed, target, (3, 3), op)
        assert any(np.array_equal(apply_d4(c, t, (3, 3), inv)[0], cbed) and
                   np.array_equal(apply_d4(c, t, (3, 3), inv)[1], target)
                   for inv in range(D4_SIZE))
    with pytest.raises(ValueError, match="must be odd"):
        check_d4((8, 8), (64, 64), 1, (64, 64))
    with pytest.raises(ValueError, match=r"scan.gpts \[4, 8\] must be square"):
        check_d4((4, 8), (33, 33), 1, (32, 32))
    check_d4((8, 8), (33, 33), 1, (32, 32))
