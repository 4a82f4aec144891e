"""Mistilt (`simulation.tilt_mrad`) is physics in the multislice, the same in both engines.

* Both engines' tilted patterns equal abTEM called directly (`abtem.Probe(tilt=...)`, a lazy
  potential built from the record, abTEM's own multislice and `diffraction_patterns`), within
  1e-5 of the pattern maximum; and the stemdl engine equals the abtem engine with frozen
  phonons off [001].
* The tilt matters: a tilted sample's patterns differ from the untilted one's by far more than
  that tolerance, and its target (the projection along z) does not change.
* Draws: the magnitude lies in the range, the azimuth varies, a zero range gives (0, 0), and
  adding a tilt range changes no other draw; a tilted sample repeats its bits.
* The store records each sample's drawn tilt (`tilt_mrad_x`, `tilt_mrad_y` columns).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from stemdl.configs import config_from_dict, load_config
from stemdl.configs.simulation import SimulationConfig
from stemdl.simulate import build_catalogue, simulate_sample
from stemdl.simulate.draws import draw_sample
from stemdl.simulate.fft_plans import clear_plans
from stemdl.simulate.sample import SampleRecord
from stemdl.testing.abtem_reference import abtem_far_field

TOLERANCE = 1e-5  # max |pattern − reference| / max(reference)
TILT = [2.0, 3.0]


def _tilted(simulation_config, **changes: object) -> SimulationConfig:
    return simulation_config("tiny", tilt_mrad=TILT, thickness_a=[14.0, 16.0], **changes)


def direct_abtem_cbed(record: SampleRecord, pattern_px: tuple[int, int]) -> np.ndarray:
    """(P, ky, kx) patterns of an untilted-phonon record by abTEM alone, with its tilt: the
    central `pattern_px` of `abtem_far_field`."""
    full = abtem_far_field(record)
    n_y, n_x = full.shape[-2:]
    m_y, m_x = pattern_px
    return full[:, n_y // 2 - m_y // 2: n_y // 2 - m_y // 2 + m_y,
                n_x // 2 - m_x // 2: n_x // 2 - m_x // 2 + m_x]


@pytest.mark.parametrize("engine", ["stemdl", "abtem"])
def test_tilted_patterns_of_both_engines_equal_abtem_called_directly(engine: str, simulation_config) -> None:
    config = _tilted(simulation_config, engine=engine)
    catalogue = build_catalogue(config)
    for index in (0, 3):
        sample = simulate_sample(config, index, catalogue)
        record = sample.record
        magnitude = float(np.hypot(*record.tilt_mrad))
        assert TILT[0] <= magnitude <= TILT[1], record.tilt_mrad
        reference = direct_abtem_cbed(record, sample.cbed.shape[1:])
        error = np.max(np.abs(sample.cbed - reference)) / np.max(reference)
        print(f"{engine} engine, sample {index}, tilt {record.tilt_mrad}: {error:.1e}")
        assert error <= TOLERANCE, (engine, index, error)


def test_tilt_changes_the_patterns_and_not_the_target(simulation_config) -> None:
    tilted = _tilted(simulation_config)
    straight = tilted.model_copy(update={"tilt_mrad": tilted.tilt_mrad.model_copy(update={"max": 0.0, "min": 0.0})})
    ours, plain = simulate_sample(tilted, 1), simulate_sample(straight, 1)
    assert plain.record.tilt_mrad == (0.0, 0.0)
    assert np.array_equal(ours.potential, plain.potential)
    difference = np.max(np.abs(ours.cbed - plain.cbed)) / np.max(plain.cbed)
    print(f"tilted - untilted: {difference:.1e} of the maximum")
    assert difference > 10 * TOLERANCE, difference  # ~4e-4 at 15 Å; 0 if tilt were ignored


def test_stemdl_engine_equals_abtem_engine_with_tilt_phonons_and_an_oblique_axis(simulation_config) -> None:
    config = _tilted(simulation_config, phonons={"num_configs": 2, "sigma_a": 0.08},
                     structures__zone_axes=[[0, 1, 1]], structures__max_base_atoms=128)
    reference = config.model_copy(update={"engine": "abtem"})
    catalogue = build_catalogue(config)
    for index in (0, 2):
        ours = simulate_sample(config, index, catalogue)
        theirs = simulate_sample(reference, index, catalogue)
        assert ours.record.tilt_mrad == theirs.record.tilt_mrad != (0.0, 0.0)
        assert ours.record.num_phonon_configs == 2 and ours.record.zone_axis == (0, 1, 1)
        error = np.max(np.abs(ours.cbed.astype(np.float64) - theirs.cbed)) / np.max(theirs.cbed)
        print(f"stemdl vs abtem engine, phonons, [011], sample {index}: {error:.1e}")
        assert error <= TOLERANCE, (index, error)


def test_tilt_draws_are_in_range_vary_in_azimuth_and_leave_other_draws_alone(simulation_config) -> None:
    tilted = _tilted(simulation_config)
    straight = simulation_config("tiny", thickness_a=[14.0, 16.0])
    splits = build_catalogue(tilted).material_splits()
    azimuths = []
    for index in range(40):
        ours, plain = draw_sample(tilted, index, splits), draw_sample(straight, index, splits)
        assert plain.tilt_mrad == (0.0, 0.0)
        assert TILT[0] <= np.hypot(*ours.tilt_mrad) <= TILT[1]
        azimuths.append(np.arctan2(ours.tilt_mrad[1], ours.tilt_mrad[0]))
        assert {**asdict(ours), "tilt_mrad": None} == {**asdict(plain), "tilt_mrad": None}
        assert draw_sample(tilted, index, splits) == ours
    # every quadrant is drawn (40 uniform azimuths miss one with probability ~4e-5)
    assert len({int(np.floor(a / (np.pi / 2))) for a in azimuths}) == 4


def test_tilted_sample_repeats_its_bits(simulation_config) -> None:
    config = _tilted(simulation_config)
    first = simulate_sample(config, 2)
    clear_plans()
    again = simulate_sample(config, 2)
    assert first.record.tilt_mrad == again.record.tilt_mrad
    assert np.array_equal(first.cbed, again.cbed) and np.array_equal(first.potential, again.potential)


def test_tilt_is_out_of_range_refused() -> None:
    data = load_config("tiny").to_dict()
    for bad in ([-1.0, 2.0], [0.0, 60.0]):
        data["simulation"]["tilt_mrad"] = bad
        with pytest.raises(Exception, match="tilt_mrad"):
            config_from_dict(data)


def test_store_records_each_samples_drawn_tilt(tmp_path: Path) -> None:
    from stemdl.datasets.plan import plan_store
    from stemdl.datasets.records import read_field, read_record
    from stemdl.datasets.shard import simulate_shard
    from stemdl.datasets.store import open_stemdl_store

    data = load_config("tiny").to_dict()
    data["simulation"].update(tilt_mrad=TILT, thickness_a=[8.0, 8.0])
    data["dataset"].update(num_samples=3, shard_size=3)
    config = config_from_dict(data)
    url = str(tmp_path / "tilted.zarr")
    catalogue = build_catalogue(config.simulation)
    plan_store(config, url, catalogue)
    simulate_shard(config, url, 0, catalogue=catalogue)
    store = open_stemdl_store(url)
    stored = read_field(store, "tilt_mrad")
    splits = catalogue.material_splits()
    expected = np.array([draw_sample(config.simulation, i, splits).tilt_mrad for i in range(3)])
    assert stored.shape == (3, 2) and np.array_equal(stored, expected)
    assert len({tuple(row) for row in stored}) == 3
    assert read_record(store, 1).tilt_mrad == tuple(expected[1])
