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
