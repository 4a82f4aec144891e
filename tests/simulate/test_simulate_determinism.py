"""A sample is a pure function of (config, index): same inputs, same bits; other inputs, other samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stemdl.configs import load_config
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.catalogue import make_catalogue
from stemdl.simulate.draws import draw_sample
from stemdl.simulate.sample import SPLITS, SampleRecord

# The split of each of 14 materials, as a catalogue of that size might assign them.
SPLITS14 = ("train",) * 11 + ("validation",) * 2 + ("test",)

TINY = load_config("tiny").simulation


def _records_equal(a: SampleRecord, b: SampleRecord) -> bool:
    for field in dataclasses.fields(a):
        left, right = getattr(a, field.name), getattr(b, field.name)
        if isinstance(left, np.ndarray):
            if not np.array_equal(left, right):
                return False
        elif left != right:
            return False
    return True


def test_same_index_gives_identical_arrays() -> None:
    first = simulate_sample(TINY, 3)
    second = simulate_sample(TINY, 3, make_catalogue(TINY.structures, TINY.seed))  # fresh catalogue
    assert np.array_equal(first.cbed, second.cbed)
    assert np.array_equal(first.potential, second.potential)
    assert _records_equal(first.record, second.record)


def test_same_index_with_phonons_is_identical(simulation_config) -> None:
    config = simulation_config("tiny", phonons={"num_configs": 2, "sigma_a": 0.1})
    first, second = simulate_sample(config, 1), simulate_sample(config, 1)
    assert np.array_equal(first.cbed, second.cbed)
    assert np.array_equal(first.potential, second.potential)


def test_different_indices_give_different_samples() -> None:
    samples = [simulate_sample(TINY, i) for i in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            a, b = samples[i], samples[j]
            assert a.record.seed != b.record.seed
            assert (a.record.defocus_a, a.record.semiangle_mrad) != (
                b.record.defocus_a,
                b.record.semiangle_mrad,
            )
            assert not np.array_equal(a.cbed, b.cbed)


def test_phonon_seed_changes_the_displacements(simulation_config) -> None:
    config = simulation_config("tiny", phonons={"num_configs": 2, "sigma_a": 0.1})
    plain = simulation_config("tiny")
    index = 2
    with_phonons, without = simulate_sample(config, index), simulate_sample(plain, index)
    assert with_phonons.record.material_id == without.record.material_id  # same draws
    assert not np.array_equal(with_phonons.cbed, without.cbed)


def test_draws_are_pure_and_depend_on_seed_and_index(simulation_config) -> None:
    assert draw_sample(TINY, 5, SPLITS14) == draw_sample(TINY, 5, SPLITS14)
    assert draw_sample(TINY, 5, SPLITS14) != draw_sample(TINY, 6, SPLITS14)
    other = simulation_config("tiny", seed=8)
    assert draw_sample(TINY, 5, SPLITS14) != draw_sample(other, 5, SPLITS14)
    with pytest.raises(ValueError, match="index must be >= 0"):
        draw_sample(TINY, -1, SPLITS14)


def test_draws_cover_the_configured_ranges(simulation_config) -> None:
    config = simulation_config("small")
    draws = [
        draw_sample(config, i, ["train"] * 27 + ["validation"] * 3 + ["test"] * 3)
        for i in range(300)
    ]
    thickness = np.array([d.thickness_a for d in draws])
    assert thickness.min() >= 20 and thickness.max() <= 60 and thickness.std() > 8
    assert {d.material_index for d in draws} == set(range(33))
    options = {d.orientation_option(3) for d in draws}
    assert options == {0, 1, 2}


def test_scan_shift_is_drawn_per_sample_and_leaves_every_other_draw_alone(
        simulation_config) -> None:
    """`scan.shift_a` comes from a stream of its own: with it on, every other draw of every
    sample is what it was with it off, and the shifts cover ±shift_a, different per sample."""
    plain = simulation_config("small", scan__shift_a=0.0)
    shifted = simulation_config("small", scan__shift_a=2.5)
    splits = build_catalogue(plain).material_splits()
    shifts = []
    for index in range(200):
        a, b = draw_sample(plain, index, splits), draw_sample(shifted, index, splits)
        assert a.scan_shift_a == (0.0, 0.0)
        assert dataclasses.replace(b, scan_shift_a=(0.0, 0.0)) == a
        assert b == draw_sample(shifted, index, splits)  # pure
        shifts.append(b.scan_shift_a)
    shifts = np.array(shifts)
    assert np.abs(shifts).max() <= 2.5 and np.abs(shifts).max() > 2.3
    assert abs(shifts.mean()) < 0.3 and len({tuple(s) for s in shifts}) == 200


def test_catalogue_is_stable_and_splits_never_share_a_material() -> None:
    first = make_catalogue(TINY.structures, TINY.seed)
    second = make_catalogue(TINY.structures, TINY.seed)
    assert [m.material_id for m in first] == [m.material_id for m in second]
    assert dict(first.splits) == dict(second.splits)
    catalogue = build_catalogue(TINY)
    splits_of_samples: dict[str, set[str]] = {}
    for index in range(40):
        record = simulate_sample(TINY, index, catalogue).record if index < 6 else None
        material = catalogue[draw_sample(TINY, index, catalogue.material_splits()).material_index]
        splits_of_samples.setdefault(material.material_id, set()).add(
            catalogue.split_of(material.material_id)
        )
        if record is not None:
            assert record.split == catalogue.split_of(record.material_id)
    assert all(len(s) == 1 for s in splits_of_samples.values())


def test_fftw_measure_plans_made_elsewhere_do_not_change_the_bits() -> None:
    """abTEM's default FFTW_MEASURE, used by other code in the same process, leaves FFTW wisdom
    that ESTIMATE planning would reuse; `simulate_sample` must not be affected by it."""
    import abtem
    from ase import Atoms

    first = simulate_sample(TINY, 1)
    r = first.record
    atoms = (
        Atoms(numbers=r.atomic_numbers, positions=r.positions_a, cell=r.cell_a, pbc=True)
        * r.repetitions
    )
    with abtem.config.set({"fftw.planning_effort": "FFTW_MEASURE"}):
        potential = abtem.Potential(
            atoms, gpts=r.gpts, slice_thickness=(r.slice_thickness_a,) * r.num_slices
        )
        probe = abtem.Probe(energy=r.energy_ev, semiangle_cutoff=r.semiangle_mrad)
        probe.multislice(potential, scan=abtem.CustomScan(r.probe_positions_a)).compute(
            scheduler="synchronous"
        )
    again = simulate_sample(TINY, 1)
    assert np.array_equal(first.cbed, again.cbed)
    assert np.array_equal(first.potential, again.potential)


def test_every_split_gets_its_share_of_samples() -> None:
    """Draws pick the split by split_fractions first, so a one-material test split still gets
    about 10% of the samples (a uniform draw over materials would give it ~1/n)."""
    from collections import Counter

    config = TINY
    material_splits = list(SPLITS14)
    counts = Counter(
        material_splits[draw_sample(config, i, material_splits).material_index] for i in range(2000)
    )
    for split, fraction in zip(SPLITS, config.structures.split_fractions, strict=True):
        assert abs(counts[split] / 2000 - fraction) < 0.03, counts
