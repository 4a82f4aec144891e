"""The amplitude head: a V·Å map made of a standardized shape and a per-window amplitude.

`with_amplitude` must give each window exactly the head's mean and standard deviation whatever
the network's raw map (a law, checked on random maps), the head must learn (its weights get
gradients through the map), and a config that asks for it on standardized targets is refused.
"""

from __future__ import annotations

import pytest
import torch

from stemdl.configs import ConfigError, config_from_dict, load_config
from stemdl.train.arrangements import build_model_from_config
from stemdl.train.model import with_amplitude
from stemdl.train.physical_metrics import shape_amplitude_parts


def test_each_window_gets_the_heads_mean_and_standard_deviation() -> None:
    generator = torch.Generator().manual_seed(0)
    raw = torch.randn(5, 2, 16, 16, generator=generator) * 7 + 3  # any scale, any offset
    mean = torch.randn(5, 2, generator=generator)
    log_std = torch.randn(5, 2, generator=generator)
    out = with_amplitude(raw, torch.cat([mean, log_std], dim=1))
    torch.testing.assert_close(out.mean(dim=(-2, -1)), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(-2, -1), unbiased=False), log_std.exp(),
                               atol=1e-4, rtol=1e-4)
    # the shape is the raw map's: correlation 1 within each window and channel
    a = (raw - raw.mean(dim=(-2, -1), keepdim=True)).flatten(2)
    b = (out - out.mean(dim=(-2, -1), keepdim=True)).flatten(2)
    r = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    torch.testing.assert_close(r, torch.ones_like(r), atol=1e-5, rtol=0)


def test_a_tiny_model_with_the_head_maps_and_learns_its_amplitude() -> None:
    data = load_config("tiny").to_dict()
    data["model"]["amplitude_head"] = True
    config = config_from_dict(data)
    torch.manual_seed(0)
    model = build_model_from_config(config)
    shape = config.simulation.sample_shape
    cbed = torch.rand(3, shape.num_patterns, *shape.pattern_px)
    out, thickness = model.forward_both(cbed)
    assert out.shape == (3, shape.out_channels, *shape.target_px)
    assert thickness.shape == (3,)
    out.square().mean().backward()
    head = model.network.amplitude_head
    assert head is not None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_the_head_needs_physical_targets() -> None:
    data = load_config("tiny").to_dict()
    data["model"].update(amplitude_head=True, thickness_head=False)
    data["loader"]["standardize_targets"] = True
    with pytest.raises(ConfigError, match="amplitude_head needs physical targets"):
        config_from_dict(data)


def test_shape_amplitude_parts_recompose_the_map_and_undo_with_amplitude() -> None:
    """The loss of map_loss 'shape_amplitude' compares these parts; they must recompose the
    map exactly, and read back the mean and log std that `with_amplitude` put in."""
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(4, 3, 12, 12, generator=generator) * 5 - 2
    shape, mean, log_std = shape_amplitude_parts(maps)
    torch.testing.assert_close(mean[..., None, None] + log_std.exp()[..., None, None] * shape,
                               maps, atol=1e-4, rtol=1e-5)
    amplitude = torch.randn(4, 6, generator=generator)
    _, mean_back, log_std_back = shape_amplitude_parts(with_amplitude(maps, amplitude))
    torch.testing.assert_close(torch.cat([mean_back, log_std_back], dim=1), amplitude,
                               atol=1e-4, rtol=1e-4)


def test_forward_parts_recompose_the_map_and_thickness_of_forward_both() -> None:
    """`train.map_loss: standardized_amplitude` trains on `forward_parts`; what it trains must
    be what the model predicts: the raw map through `with_amplitude` and the physical scale is
    `forward`'s V·Å map, and its thickness is `forward_both`'s."""
    data = load_config("tiny").to_dict()
    data["model"]["amplitude_head"] = True
    model = build_model_from_config(config_from_dict(data)).eval()
    model.set_scale([120.0], [35.0], 30.0, 8.0)
    shape = config_from_dict(data).simulation.sample_shape
    torch.manual_seed(3)
    cbed = torch.rand(2, shape.num_patterns, *shape.pattern_px)
    with torch.no_grad():
        raw, amplitude, thickness = model.forward_parts(cbed)
        out, thickness_both = model.forward_both(cbed)
    rebuilt = model._to_physical(with_amplitude(raw, amplitude))
    torch.testing.assert_close(rebuilt, out, atol=1e-4, rtol=1e-5)
    assert thickness is not None
    torch.testing.assert_close(thickness, thickness_both, atol=1e-5, rtol=1e-6)
    # the raw map is not already standardized: the head, not the branch, sets the amplitude
    assert not torch.allclose(raw.std(dim=(-2, -1)), torch.ones(2, 1), atol=1e-2)


def test_standardized_amplitude_needs_the_amplitude_head() -> None:
    data = load_config("tiny").to_dict()
    data["train"]["map_loss"] = "standardized_amplitude"
    with pytest.raises(ConfigError, match="set model.amplitude_head true"):
        config_from_dict(data)


def test_training_with_standardized_amplitude_learns_shape_and_scale(
        tiny_store, tiny_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real (one-process) training on the tiny store with the loss of a standardized-target
    model on the raw map plus the amplitude terms: the training loss falls, and the V·Å
    validation figures it reports beside r improve on the untrained model's."""
    from stemdl.train.loop import train_main
    from stemdl.train.run_log import read_metrics

    config = tiny_config(model={"amplitude_head": True}, map_loss="standardized_amplitude",
                         epochs=12, lr=0.01, validate_every=1000, checkpoint_every=1000)
    result = train_main(config, str(tiny_store), tmp_path / "run")
    before, after = result.initial_validation, result.validation
    losses = [row["loss"] for row in read_metrics(tmp_path / "run", "train")]
    assert len(losses) >= 2 and losses[-1] < 0.7 * losses[0], losses
    assert after["rel_l2_v_a"] < before["rel_l2_v_a"], (before, after)
    assert after["pearson_r"] > before["pearson_r"], (before, after)
    assert after["thickness_mae_a"] < before["thickness_mae_a"], (before, after)
