"""FC-DenseNet: output shapes of both arrangements, presets, and the analytic FLOP count."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from stemdl.configs import SampleShape, load_config
from stemdl.configs.training import ModelConfig
from stemdl.train.arrangements import ScanPixelArrangement, build_model
from stemdl.train.flops import count_flops
from stemdl.train.model import FCDenseNet, group_count

SHAPE = SampleShape(scan_gpts=(3, 4), pattern_px=(20, 24), target_px=(14, 10), out_channels=2)


def _config(**overrides: object) -> ModelConfig:
    base = {"initial_features": 6, "growth_rate": 3, "kernel_size": 3, "n_pool": 2,
            "layers_per_block": [1, 2, 1, 2, 1], "norm": "group"}
    return ModelConfig(**{**base, **overrides})


@pytest.mark.parametrize("arrangement", ["channels", "scan_pixels"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_output_shape_is_the_target_shape(arrangement: str, norm: str) -> None:
    model = build_model(_config(arrangement=arrangement, norm=norm, scan_pixel_pool=4), SHAPE)
    out = model(torch.randn(2, *SHAPE.input_shape))
    assert out.shape == (2, SHAPE.out_channels, *SHAPE.target_px)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("size", [(16, 16), (25, 19), (7, 9)])
def test_odd_map_sizes_survive_the_pools(size: tuple[int, int]) -> None:
    net = FCDenseNet(3, 1, _config(n_pool=2), output_size=None)
    assert net(torch.randn(1, 3, *size)).shape == (1, 1, *size)


def test_no_pool_network_is_one_dense_block() -> None:
    net = FCDenseNet(3, 2, _config(n_pool=0, layers_per_block=[3]), output_size=(5, 5))
    assert net(torch.randn(1, 3, 8, 8)).shape == (1, 2, 5, 5)


def test_scan_pixels_puts_pattern_p_at_grid_cell_p_div_gx_p_mod_gx() -> None:
    arrange = ScanPixelArrangement((3, 4), pool=2, output_size=(3, 4))  # no resize
    cbed = torch.zeros(1, 12, 4, 4)
    cbed[0, 7] = 1.0  # pattern 7 sits at row 1, column 3
    image = arrange(cbed)
    assert image.shape == (1, 4, 3, 4)
    assert image[0, :, 1, 3].eq(1).all() and image.sum() == 4


def test_wrong_number_of_patterns_is_refused() -> None:
    model = build_model(_config(arrangement="scan_pixels"), SHAPE)
    with pytest.raises(ValueError, match="expects 3x4=12 patterns"):
        model(torch.randn(1, 11, 20, 24))


def test_group_norm_groups_divide_the_width() -> None:
    assert [group_count(c) for c in (8, 20, 6, 7, 132)] == [8, 4, 2, 1, 4]


@pytest.mark.parametrize("arrangement", ["channels", "scan_pixels"])
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_flops_match_torch_flop_counter(preset: str, arrangement: str) -> None:
    config = load_config(preset)
    shape = config.simulation.sample_shape
    model = build_model(config.model.model_copy(update={"arrangement": arrangement}), shape)
    cost = count_flops(model, shape.input_shape)
    x = torch.randn(2, *shape.input_shape)
    with FlopCounterMode(display=False) as forward:
        model(x)
    assert cost.forward_flops * 2 == forward.get_total_flops()
    with FlopCounterMode(display=False) as training:
        model(x).square().mean().backward()
    assert cost.training_flops * 2 == training.get_total_flops()
    assert 2 * cost.forward_flops < cost.training_flops <= 3 * cost.forward_flops
    assert cost.parameters == sum(p.numel() for p in model.parameters())


def test_paper_preset_is_the_papers_network() -> None:
    config = load_config("paper")
    shape = config.simulation.sample_shape
    assert shape.input_shape == (1024, 512, 512)
    model = build_model(config.model, shape)
    cost = count_flops(model, shape.input_shape)  # on the meta device: nothing allocated
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {m.kernel_size for m in convs if m.kernel_size != (1, 1)} == {(5, 5)}
    assert len(model.network.down_blocks) == 3
    assert [len(b.layers) for b in model.network.down_blocks] == [2, 2, 3]
    assert len(model.network.bottleneck.layers) == 4
    assert 10e6 < cost.parameters < 500e6
    assert cost.forward_flops > 1e12  # TFLOPs per 512x512x1024 sample
