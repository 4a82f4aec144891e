"""The streaming loader: exactly-once partitioning, epochs, splits, decoding, noise."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from stemdl.configs.dataset import LoaderConfig
from stemdl.datasets.loader import ShardStream, make_dataloader, shuffle_buffer
from stemdl.datasets.partition import count_samples
from stemdl.datasets.records import read_field, read_fields
from stemdl.datasets.store import open_stemdl_store
from stemdl.datasets.transforms import electrons_per_pattern


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, synthetic_store) -> Path:
    """30 synthetic samples in 8 shards of 4 (the last one short), splits by material."""
    return synthetic_store(num_samples=30, shard_size=4)


def _split_indices(store: Path, split: str) -> list[int]:
    columns = read_fields(open_stemdl_store(str(store)), ["split", "status"])
    keep = (columns["split"] == split) & (columns["status"] == 1)
    return [int(i) for i in np.flatnonzero(keep)]


def _epoch_indices(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(i) for batch in loader for i in batch["index"]]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize(("world_size", "workers"), [(1, 0), (1, 2), (2, 1), (3, 2), (2, 3)])
def test_every_training_sample_once_per_epoch(store: Path, world_size: int, workers: int) -> None:
    cfg = LoaderConfig(num_workers=workers, shuffle_buffer=5, prefetch_factor=2)
    loaders = [make_dataloader(str(store), cfg, split="train", batch_size=1, rank=rank,
                               world_size=world_size, seed=3, drop_last=False)
               for rank in range(world_size)]
    expected = _split_indices(store, "train")
    orders = []
    for epoch in range(2):
        seen = []
        for rank, loader in enumerate(loaders):
            loader.dataset.set_epoch(epoch)
            indices = _epoch_indices(loader)
            assert len(indices) == count_samples(str(store), "train", rank, world_size)
            seen += indices
        counts = Counter(seen)
        assert sorted(counts) == expected and set(counts.values()) == {1}, counts
        orders.append(seen)
    assert orders[0] != orders[1]  # a new shard order / shuffle each epoch
    # Same seed and epoch: the same order (persistent workers re-read the epoch).
    for loader in loaders:
        loader.dataset.set_epoch(0)
    assert [i for loader in loaders for i in _epoch_indices(loader)] == orders[0]


def test_ranks_hold_whole_shards_and_counts_are_cheap(store: Path) -> None:
    shards = [ShardStream(str(store), split=None, rank=r, world_size=3).shards for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert sum(count_samples(str(store), None, r, 3) for r in range(3)) == 30
    assert sum(count_samples(str(store), "validation", r, 3) for r in range(3)) == len(
        _split_indices(store, "validation"))
    # More ranks than shards: some ranks get nothing (the trainer takes the min over ranks).
    assert count_samples(str(store), "train", 9, 10) == 0


def test_splits_never_share_a_material(store: Path) -> None:
    group = zarr.open_group(str(store), mode="r")
    columns = read_fields(open_stemdl_store(str(store)), ["material_id", "split"])
    materials = {s: set(columns["material_id"][columns["split"] == s]) for s in
                 ("train", "validation", "test")}
    assert not materials["train"] & materials["validation"]
    assert not materials["train"] & materials["test"]
    assert not materials["validation"] & materials["test"]
    table = dict(group.attrs)["splits"]
    for split, names in materials.items():
        assert names <= set(table[split])
    seen = {}
    for split in ("train", "validation", "test"):
        for item in ShardStream(str(store), split=split, shuffle=False):
            seen[item["index"]] = split
    assert sorted(seen) == list(range(30))


def test_decoding_follows_the_loader_config(store: Path) -> None:
    raw = zarr.open_group(str(store), mode="r")
    item = next(iter(ShardStream(str(store), LoaderConfig(), split="train", shuffle=False)))
    assert item["cbed"].dtype == torch.float32 and item["cbed"].shape == (16, 24, 24)
    assert item["potential"].dtype == torch.float32 and item["potential"].shape == (1, 16, 16)
    x = raw["cbed"][item["index"]].astype(np.float32)
    x = np.sqrt(x - x.min(axis=(1, 2), keepdims=True))
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-6)
    np.testing.assert_allclose(item["cbed"].numpy(), x, rtol=1e-4, atol=1e-4)
    means = item["cbed"].mean(dim=(1, 2))
    stds = item["cbed"].std(dim=(1, 2), unbiased=False)
    assert torch.allclose(means, torch.zeros(16), atol=1e-4)
    assert torch.allclose(stds, torch.ones(16), atol=1e-3)
    assert abs(float(item["potential"].mean())) < 1e-4

    plain = LoaderConfig(input_transform="none", standardize_inputs=False,
                         standardize_targets=False)
    item = next(iter(ShardStream(str(store), plain, split="train", shuffle=False)))
    np.testing.assert_array_equal(item["cbed"].numpy(), raw["cbed"][item["index"]].astype(np.float32))
    np.testing.assert_array_equal(item["potential"].numpy(), raw["potential"][item["index"]])


def test_poisson_noise_dose_convention(store: Path) -> None:
    clean_cfg = LoaderConfig(input_transform="none", standardize_inputs=False)
    region = read_field(open_stemdl_store(str(store)), "target_region_a", [0])[0]
    assert electrons_per_pattern(100.0, region, 16) == pytest.approx(100.0 * 36.0 / 16)

    def first(cfg: LoaderConfig, split: str = "train", epoch: int = 0) -> np.ndarray:
        stream = ShardStream(str(store), cfg, split=split, shuffle=False, seed=1)
        stream.set_epoch(epoch)
        return next(iter(stream))["cbed"].numpy()

    clean = first(clean_cfg)
    low = first(clean_cfg.model_copy(update={"dose_e_per_a2": 1e3}))
    high = first(clean_cfg.model_copy(update={"dose_e_per_a2": 1e9}))
    electrons = electrons_per_pattern(1e3, region, 16)
    # Counts are integers: the noisy pattern times N_e is whole numbers of electrons.
    np.testing.assert_allclose(low * electrons, np.round(low * electrons), atol=1e-3)
    assert np.abs(high - clean).mean() < np.abs(low - clean).mean() / 30
    assert np.isclose(low.sum(), clean.sum(), rtol=0.1)  # the dose is conserved on average
    noisy = clean_cfg.model_copy(update={"dose_e_per_a2": 1e3})
    np.testing.assert_array_equal(first(noisy), low)  # deterministic per (seed, epoch, index)
    assert not np.array_equal(first(noisy, epoch=1), low)  # fresh noise each epoch
    np.testing.assert_array_equal(first(noisy, split="validation"),
                                  first(clean_cfg, split="validation"))  # train_only
    always = noisy.model_copy(update={"noise": "always"})
    assert not np.array_equal(first(always, split="validation"),
                              first(clean_cfg, split="validation"))


def test_shuffle_buffer_is_a_permutation() -> None:
    rng = np.random.default_rng(0)
    items = [{"i": i} for i in range(50)]
    out = [x["i"] for x in shuffle_buffer(items, 8, rng)]
    assert sorted(out) == list(range(50)) and out != list(range(50))
    assert [x["i"] for x in shuffle_buffer(items, 0, rng)] == list(range(50))


def test_bad_arguments_are_named(store: Path) -> None:
    with pytest.raises(ValueError, match="rank must be in"):
        ShardStream(str(store), rank=2, world_size=2)
    with pytest.raises(ValueError, match="split must be one of"):
        ShardStream(str(store), split="training")
    with pytest.raises(ValueError, match="batch_size"):
        make_dataloader(str(store), split="train", batch_size=0)


def test_real_store_streams_every_training_sample(tmp_path_factory: pytest.TempPathFactory, tiny_store) -> None:
    real = tiny_store
    cfg = LoaderConfig(num_workers=0, decode_threads=2, shuffle_buffer=4)
    loader = make_dataloader(str(real), cfg, split="train", batch_size=2, drop_last=False)
    batches = list(loader)
    indices = sorted(int(i) for batch in batches for i in batch["index"])
    assert indices == _split_indices(real, "train") == sorted(set(indices))
    assert len(indices) == loader.dataset.num_samples() == count_samples(str(real), "train")
    for batch in batches:
        assert torch.isfinite(batch["cbed"]).all() and torch.isfinite(batch["potential"]).all()
        assert batch["cbed"].shape[1:] == (16, 24, 24)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_worker_batches_the_trainer_keeps_are_never_overwritten(store: Path) -> None:
    """Worker batches travel in reused shared-memory slots; held batches must stay intact."""
    cfg = LoaderConfig(num_workers=1, shuffle_buffer=3, prefetch_factor=2)
    reference = {item["index"]: item for item in ShardStream(str(store), cfg, split=None,
                                                             shuffle=False)}
    loader = make_dataloader(str(store), cfg, split=None, batch_size=1, seed=5, drop_last=False)
    kept = []
    for epoch in range(3):
        loader.dataset.set_epoch(epoch)
        for step, batch in enumerate(loader):
            if epoch == 1 and step == 2:
                break  # an abandoned epoch: its prefetched slots must come back
            kept.append(batch)  # far more batches than ring slots, all held
    assert len(kept) == 30 + 2 + 30
    for batch in kept:
        assert set(batch) == {"cbed", "potential", "index"}
        item = reference[int(batch["index"][0])]
        assert torch.equal(batch["cbed"][0], item["cbed"])
        assert torch.equal(batch["potential"][0], item["potential"])
    kept.clear()
    # Batches dropped as they go: the ring is reused (no slot leaks) and still exactly once.
    for epoch in range(3, 6):
        loader.dataset.set_epoch(epoch)
        indices = []
        for batch in loader:
            item = reference[int(batch["index"][0])]
            assert torch.equal(batch["cbed"][0], item["cbed"])
            indices.append(int(batch["index"][0]))
        assert sorted(indices) == list(range(30))
    assert int((loader.dataset.ring.busy != 0).sum()) <= 1 + cfg.prefetch_factor


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_drop_last_drops_each_workers_short_batch(store: Path, workers: int) -> None:
    cfg = LoaderConfig(num_workers=workers, shuffle_buffer=0)
    loader = make_dataloader(str(store), cfg, split=None, batch_size=3, shuffle=False)
    sizes = [int(batch["index"].shape[0]) for batch in loader]
    assert set(sizes) == {3}
    # 30 samples in 8 shards of 4 (the last of 2). Inline: 10 full batches. Two workers
    # batch their own shards, as a DataLoader batches an iterable dataset: 16 -> 15, 14 -> 12.
    assert sum(sizes) == (30 if workers == 0 else 27)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_worker_batches_travel_as_slot_numbers(store: Path) -> None:
    """With the ring shared before the workers start, a worker sends a slot number, its size
    and the indices (no tensor: each shared storage costs a handshake with the worker)."""
    cfg = LoaderConfig(num_workers=2, shuffle_buffer=3)
    loader = make_dataloader(str(store), cfg, split=None, batch_size=4, drop_last=False)
    dataset = loader.dataset
    seen = []
    original = dataset.ring.receive

    def spy(batch):  # type: ignore[no-untyped-def]
        seen.append(sorted(batch))
        return original(batch)

    dataset.ring.receive = spy  # type: ignore[method-assign]
    for epoch in range(2):
        dataset.set_epoch(epoch)
        indices = sorted(int(i) for batch in loader for i in batch["index"])
        assert indices == list(range(30))
    assert seen and all(keys == ["_ring_size", "_ring_slot", "index"] for keys in seen)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_noisy_worker_batches_equal_the_samples_one_by_one(store: Path) -> None:
    """Samples are finalized (float32, noise, normalization) where they land in a batch; the
    numbers must not depend on the batching, the worker or the shuffle, only on the epoch."""
    cfg = LoaderConfig(num_workers=2, shuffle_buffer=5, dose_e_per_a2=1e3)
    loader = make_dataloader(str(store), cfg, split="train", batch_size=3, seed=7,
                             drop_last=False)
    for epoch in (0, 1):
        stream = ShardStream(str(store), cfg, split="train", seed=7, shuffle=False)
        stream.set_epoch(epoch)
        reference = {item["index"]: item for item in stream}
        loader.dataset.set_epoch(epoch)
        seen = 0
        for batch in loader:
            for row, index in enumerate(batch["index"].tolist()):
                assert torch.equal(batch["cbed"][row], reference[index]["cbed"])
                assert torch.equal(batch["potential"][row], reference[index]["potential"])
                seen += 1
        assert seen == len(reference) == len(_split_indices(store, "train"))


@pytest.mark.parametrize(("workers", "drop_last"), [(0, True), (2, True), (3, True), (2, False)])
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_batches_per_epoch_is_what_the_loader_yields(store: Path, workers: int,
                                                     drop_last: bool) -> None:
    """The trainer takes `batches_per_epoch` steps; more than the loader yields would end an
    epoch early (StopIteration), so it must be exact whatever the epoch's shard order."""
    cfg = LoaderConfig(num_workers=workers, shuffle_buffer=2)
    loader = make_dataloader(str(store), cfg, split="train", batch_size=4, drop_last=drop_last)
    counts = []
    for epoch in range(4):
        loader.dataset.set_epoch(epoch)
        counts.append(sum(1 for _ in loader))
        assert loader.dataset.batches_per_epoch(epoch) == counts[-1]
    if workers > 1 and drop_last:
        # each worker drops its own short batch: fewer than samples // batch_size
        assert min(counts) < loader.dataset.num_samples() // 4
