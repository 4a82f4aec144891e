"""channels_last and torch.compile train the same model as the default eager NCHW step.

Both are on the CPU here (channels_last is on by default only on CUDA): a few fp32 steps on the
real tiny store from the same seed, compared with the default layout, weights and loss within
float32 reassociation (the kernels differ, so not bit for bit).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from stemdl.train.checkpoint import load_checkpoint
from stemdl.train.fast_paths import use_channels_last
from stemdl.train.loop import train_main

STEPS = 4


def _train(config, store: Path, out: Path) -> tuple[float, dict[str, torch.Tensor]]:
    result = train_main(config, str(store), out, resume=False, progress=False)
    assert result.steps == STEPS
    return result.final_train_loss, load_checkpoint(out / "checkpoint.pt")["model"]


def _assert_same_training(reference, other) -> None:
    (loss_a, weights_a), (loss_b, weights_b) = reference, other
    assert loss_b == pytest.approx(loss_a, rel=1e-4)
    assert weights_a.keys() == weights_b.keys()
    for name, value in weights_a.items():
        torch.testing.assert_close(weights_b[name].contiguous(), value.contiguous(),
                                   rtol=1e-4, atol=1e-5, msg=name)


def test_channels_last_is_on_by_default_only_on_cuda() -> None:
    assert use_channels_last(None, torch.device("cuda", 0))
    assert not use_channels_last(None, torch.device("cpu"))
    assert use_channels_last(True, torch.device("cpu"))
    assert not use_channels_last(False, torch.device("cuda", 0))


def _compile_works() -> str | None:
    """None when torch.compile can compile and run a convolution here, else why not."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return "no C++ compiler for torch.compile's CPU (inductor) backend"
    try:
        compiled = torch.compile(torch.nn.Conv2d(1, 1, 3))
        compiled(torch.ones(1, 1, 4, 4)).sum().backward()
    except Exception as error:  # an inductor/toolchain problem of this machine
        return f"torch.compile does not work here: {type(error).__name__}: {error}"
    return None


@pytest.mark.parametrize("arrangement", ["channels", "scan_pixels"])
def test_channels_last_trains_as_the_default_layout(tiny_store: Path, tmp_path: Path,
                                                    tiny_config, arrangement: str) -> None:
    common = {"max_steps": STEPS, "precision": "fp32", "validate_at_start": False}
    model = {"arrangement": arrangement}
    reference = _train(tiny_config(model, **common), tiny_store, tmp_path / "nchw")
    nhwc = _train(tiny_config(model, channels_last=True, **common), tiny_store, tmp_path / "nhwc")
    convs = [w for w in nhwc[1].values() if w.dim() == 4 and w.shape[1] > 1 and w.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last)
                         and not w.is_contiguous() for w in convs)  # it did train in NHWC
    _assert_same_training(reference, nhwc)


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_store: Path, tmp_path: Path, tiny_config) -> None:
    why_not = _compile_works()
    if why_not:
        pytest.skip(why_not)
    common = {"max_steps": STEPS, "precision": "fp32", "validate_at_start": False}
    eager = _train(tiny_config(**common), tiny_store, tmp_path / "eager")
    compiled = _train(tiny_config(compile=True, **common), tiny_store, tmp_path / "compiled")
    _assert_same_training(eager, compiled)
