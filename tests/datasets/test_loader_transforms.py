"""The fused input normalization (numba) against the NumPy reference; damaged shard files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemdl.datasets import transforms
from stemdl.datasets.loader import ShardStream
from stemdl.datasets.shard_files import ShardDecodeError
from stemdl.datasets.storage import file_url, shard_key
from stemdl.datasets.store import open_stemdl_store

pytest.importorskip("numba")


def _patterns(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.random((3, 5, 16, 24)) ** 3 * 1e-2 - 2e-3).astype(np.float32)
    x[0, 2] = 0.25  # constant pattern: std 0
    x[1, 1, 3:9, 4:20] = 7.0  # a bright disk
    return x


def test_fused_kernel_matches_numpy() -> None:
    assert transforms._fused_kernel() is not None
    x = _patterns()
    expected = transforms._normalize_inputs_numpy(x.copy(), "sqrt_min", True)
    fused = transforms.normalize_inputs(x.copy(), "sqrt_min", True, inplace=True)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-5)
    assert fused.dtype == np.float32 and fused.shape == x.shape
    np.testing.assert_array_equal(fused[0, 2], expected[0, 2])  # both all zeros
    np.testing.assert_array_equal(fused[0, 2], 0)


def test_fused_kernel_in_place_and_from_float16() -> None:
    x = _patterns(1)
    block = x.copy()
    out = transforms.normalize_inputs(block, "sqrt_min", True, inplace=True)
    assert np.shares_memory(out, block)
    half = x.astype(np.float16)
    kept = half.copy()
    out16 = transforms.normalize_inputs(half, "sqrt_min", True)
    np.testing.assert_array_equal(half, kept)  # not in place: the input is untouched
    expected = transforms._normalize_inputs_numpy(half.astype(np.float32), "sqrt_min", True)
    np.testing.assert_allclose(out16, expected, rtol=1e-5, atol=1e-5)


def test_non_finite_patterns_follow_numpy() -> None:
    x = _patterns(2)
    x[2, 4, 0, 0] = np.nan
    expected = transforms._normalize_inputs_numpy(x.copy(), "sqrt_min", True)
    with np.errstate(invalid="ignore"):
        out = transforms.normalize_inputs(x.copy(), "sqrt_min", True, inplace=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert np.isnan(out[2, 4]).all() and np.isfinite(out[2, :4]).all()


def test_without_numba_the_numpy_path_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transforms, "_KERNEL", [None])
    x = _patterns(3)
    out = transforms.normalize_inputs(x.copy(), "sqrt_min", True, inplace=True)
    np.testing.assert_array_equal(
        out, transforms._normalize_inputs_numpy(x.copy(), "sqrt_min", True))
    monkeypatch.setenv("STEMDL_NO_NUMBA", "1")
    assert transforms._compile_kernel() is None


def test_loader_names_a_damaged_shard_file(tmp_path: Path, synthetic_store) -> None:
    store = synthetic_store(num_samples=8, shard_size=4)
    stemdl_store = open_stemdl_store(str(store))
    path = Path(file_url(stemdl_store.url, shard_key(stemdl_store.array("cbed"), 1)))
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside a chunk's compressed bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ShardDecodeError, match="checksum mismatch") as error:
        list(ShardStream(str(store), split=None, shuffle=False))
    assert str(path) in str(error.value) or path.name in str(error.value)
