"""Measurement nuisances of the loader (`datasets/nuisances.py`) do what the physics says: the PSF
and the source blur move intensity without creating or losing any, with the spread their width
says; a uniform gain and dark level are removed by the input normalization and read noise is
not; every draw is a function of (seed, epoch, sample) alone; the test split gets them only
when scoring asks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemdl.configs import ConfigError, config_from_dict, load_config
from stemdl.configs.dataset import LoaderConfig, NuisanceConfig
from stemdl.datasets.loader import ShardStream, make_dataloader
from stemdl.datasets.nuisances import (
    DrawnNuisances,
    apply_nuisances,
    apply_psf,
    apply_source_size,
    draw_nuisances,
)
from stemdl.datasets.transforms import normalize_inputs
from stemdl.train.scoring import load_split

REGION = np.array([0.0, 0.0, 6.0, 6.0])


@pytest.fixture(scope="module")
def store(synthetic_store) -> Path:  # type: ignore[no-untyped-def]
    return synthetic_store(num_samples=30, shard_size=4)


def _patterns(seed: int = 0, shape: tuple[int, ...] = (16, 24, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(shape) ** 4 * 1e-3).astype(np.float32)


def _drawn(**values: object) -> DrawnNuisances:
    base = dict(dose_e_per_a2=None, psf="none", psf_width_px=0.0, source_sigma_a=None,
                gain_counts_per_electron=None, dark_counts=None, read_noise_counts=0.0)
    base.update(values)
    return DrawnNuisances(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["gaussian", "lorentzian"])
def test_psf_keeps_total_counts_and_spreads_a_point_by_its_width(kind: str) -> None:
    patterns = _patterns()
    blurred = apply_psf(patterns, kind, 1.5)
    np.testing.assert_allclose(blurred.sum(axis=(1, 2)), patterns.sum(axis=(1, 2)), rtol=1e-5)
    assert np.abs(blurred - patterns).max() > 0.05 * patterns.max()  # it does blur
    point = np.zeros((1, 41, 41), np.float32)
    point[0, 20, 20] = 1.0
    image = apply_psf(point, kind, 1.5)[0].astype(np.float64)
    assert image.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(image, image[::-1, ::-1], atol=1e-7)  # a symmetric PSF
    np.testing.assert_allclose(image, image.T, atol=1e-7)
    r = np.arange(41) - 20.0
    if kind == "gaussian":  # variance per axis σ²
        assert (image.sum(axis=0) * r ** 2).sum() == pytest.approx(1.5 ** 2, rel=1e-3)
    else:  # the 2-D Cauchy profile (1 + r²/γ²)^(-3/2)
        profile = image[20, 20:]
        k = np.arange(1, 7)  # out to the r⁻³ tail (the mirrored edges add < 1 % there)
        np.testing.assert_allclose(profile[k] / profile[0], (1 + k ** 2 / 1.5 ** 2) ** -1.5,
                                   rtol=1e-2)


def test_source_size_keeps_intensity_over_the_scan_and_blurs_by_sigma_over_step() -> None:
    patterns = _patterns(shape=(64, 5, 5))
    step = (0.8, 0.8)
    blurred = apply_source_size(patterns, (8, 8), 0.6, step)
    np.testing.assert_allclose(blurred.sum(axis=0), patterns.sum(axis=0), rtol=1e-5)
    assert not np.allclose(blurred, patterns, rtol=0.05)
    # one bright probe position spreads over its neighbours as a Gaussian of sigma / step
    point = np.zeros((15, 15, 1, 1), np.float32)
    point[7, 7] = 1.0
    spread = apply_source_size(point.reshape(225, 1, 1), (15, 15), 0.8, (0.5, 0.5))
    spread = spread.reshape(15, 15).astype(np.float64)
    r = np.arange(15) - 7.0
    assert (spread.sum(axis=0) * r ** 2).sum() == pytest.approx((0.8 / 0.5) ** 2, rel=2e-2)
    # data varying linearly over the scan: unchanged away from the edges (a symmetric kernel)
    ramp = np.broadcast_to(np.arange(15, dtype=np.float32)[:, None, None, None],
                           (15, 15, 1, 1)).reshape(225, 1, 1)
    out = apply_source_size(ramp, (15, 15), 0.5, (0.5, 0.5)).reshape(15, 15)
    np.testing.assert_allclose(out[4:-4, 4:-4], np.arange(15.0)[4:-4, None].repeat(7, 1),
                               atol=1e-4)


def test_uniform_gain_and_dark_are_removed_by_the_normalization_read_noise_is_not() -> None:
    patterns = _patterns()
    args = dict(scan_gpts=(4, 4), step_a=(1.5, 1.5), target_region_a=REGION, seed=3, epoch=0,
                index=5)
    counted = apply_nuisances(patterns, _drawn(dose_e_per_a2=1e6), **args)
    gained = apply_nuisances(patterns, _drawn(dose_e_per_a2=1e6, gain_counts_per_electron=7.3,
                                              dark_counts=250.0), **args)
    assert not np.allclose(counted, gained)  # the raw data do differ
    np.testing.assert_allclose(gained, counted * 7.3 + 250.0 / (1e6 * 36 / 16), rtol=1e-5)
    a = normalize_inputs(counted, "sqrt_min", True)
    b = normalize_inputs(gained, "sqrt_min", True)
    np.testing.assert_allclose(a, b, atol=2e-4)
    noisy = apply_nuisances(patterns, _drawn(dose_e_per_a2=1e6, gain_counts_per_electron=7.3,
                                             dark_counts=250.0, read_noise_counts=5.0), **args)
    c = normalize_inputs(noisy, "sqrt_min", True)
    # read noise is what the normalization leaves: far above the float rounding of a vs b
    assert np.abs(c - a).mean() > max(0.01, 20 * np.abs(a - b).mean())


def test_draws_are_per_sample_epoch_and_seed_within_the_ranges() -> None:
    cfg = NuisanceConfig(dose_e_per_a2=[1e4, 1e6], psf="gaussian", psf_width_px=[0.5, 2.0],
                         source_sigma_a=[0.0, 0.5], gain_counts_per_electron=[0.5, 2.0],
                         dark_counts=[0.0, 10.0])
    draws = [draw_nuisances(cfg, 0, 0, i) for i in range(400)]
    doses = np.log10([d.dose_e_per_a2 for d in draws])
    assert doses.min() >= 4 and doses.max() <= 6 and abs(doses.mean() - 5) < 0.1  # log-uniform
    assert all(0.5 <= d.psf_width_px <= 2 and 0 <= d.source_sigma_a <= 0.5 for d in draws)
    assert draw_nuisances(cfg, 0, 0, 7) == draws[7]
    assert draw_nuisances(cfg, 0, 1, 7) != draws[7] and draw_nuisances(cfg, 1, 0, 7) != draws[7]
    # switching one nuisance off leaves the others' draws alone
    fewer = draw_nuisances(cfg.model_copy(update={"psf": "none"}), 0, 0, 7)
    assert fewer.dose_e_per_a2 == draws[7].dose_e_per_a2 and fewer.psf_width_px == 0.0


def test_config_refuses_counts_without_a_dose_and_two_doses() -> None:
    data = load_config("tiny").to_dict()
    data["loader"]["nuisances"] = {"dark_counts": [0, 5]}
    with pytest.raises(ConfigError, match=r"need nuisances\.dose_e_per_a2"):
        config_from_dict(data)
    data["loader"]["nuisances"] = {"dose_e_per_a2": [1e4, 1e6]}
    data["loader"]["dose_e_per_a2"] = 1e5
    with pytest.raises(ConfigError, match="not both"):
        config_from_dict(data)
    with pytest.raises(ValueError, match="needs psf_width_px"):
        NuisanceConfig(psf="lorentzian")


NUISANCES = NuisanceConfig(dose_e_per_a2=[1e4, 1e6], psf="lorentzian", psf_width_px=[0.5, 1.5],
                           source_sigma_a=[0.1, 0.5], gain_counts_per_electron=[0.5, 2.0],
                           dark_counts=[0.0, 20.0], read_noise_counts=1.0)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_loader_applies_them_per_sample_whatever_the_batching(store: Path) -> None:
    cfg = LoaderConfig(num_workers=2, shuffle_buffer=5, nuisances=NUISANCES)
    plain = LoaderConfig(input_transform="none", standardize_inputs=False)
    loader = make_dataloader(str(store), cfg, split="train", batch_size=3, seed=7,
                             drop_last=False)
    stream = ShardStream(str(store), cfg, split="train", seed=7, shuffle=False)
    stream.set_epoch(1)
    reference = {item["index"]: item for item in stream}
    raw = {item["index"]: item["cbed"].numpy()
           for item in ShardStream(str(store), plain, split="train", shuffle=False)}
    loader.dataset.set_epoch(1)
    seen = 0
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            assert torch.equal(batch["cbed"][row], reference[index]["cbed"])
            seen += 1
    assert seen == len(reference) > 0
    index = next(iter(reference))
    drawn = stream.nuisances(index)
    assert drawn == draw_nuisances(NUISANCES, 7, 1, index)  # what was applied, recomputed
    expected = apply_nuisances(raw[index], drawn, scan_gpts=stream.scan_gpts,
                               step_a=stream.scan_step_a,
                               target_region_a=stream._regions[index], seed=7, epoch=1,
                               index=index)
    np.testing.assert_allclose(reference[index]["cbed"].numpy(),
                               normalize_inputs(expected, "sqrt_min", True), atol=1e-4)
    clean = ShardStream(str(store), LoaderConfig(), split="train", seed=7, shuffle=False)
    assert not np.allclose(next(iter(clean))["cbed"].numpy(),
                           reference[next(iter(clean))["index"]]["cbed"].numpy(), atol=1e-2)


def test_test_split_gets_them_only_when_scoring_asks(store: Path) -> None:
    cfg = LoaderConfig(nuisances=NUISANCES)  # apply: train_only
    free = load_split(str(store), cfg, "test", seed=7)
    np.testing.assert_array_equal(free.cbed, load_split(str(store), LoaderConfig(), "test",
                                                        seed=7).cbed)
    measured = load_split(str(store), cfg, "test", seed=7, nuisances=True)
    again = load_split(str(store), cfg, "test", seed=7, nuisances=True)
    np.testing.assert_array_equal(measured.cbed, again.cbed)  # seeded per sample
    assert not np.allclose(measured.cbed, free.cbed, atol=1e-2)
    # the same draws as the training loader makes for those samples at epoch 0
    always = ShardStream(str(store), cfg.model_copy(update={"nuisances": NUISANCES.model_copy(
        update={"apply": "always"})}), split="test", seed=7, shuffle=False)
    by_index = {item["index"]: item["cbed"] for item in always}
    for row, index in enumerate(measured.index.tolist()):
        assert torch.equal(measured.cbed[row], by_index[index])
    fixed = load_split(str(store), cfg, "test", seed=7, nuisances=True, dose_e_per_a2=1e4)
    assert not np.allclose(fixed.cbed, measured.cbed, atol=1e-2)
