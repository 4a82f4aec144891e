"""Look at a store: counts, materials, bytes on disk (`summarize`), and one sample (`plot_sample`).

`summarize` reads only metadata arrays and file sizes, never the CBED bytes, so it is cheap on
a large store; `render_summary` turns it into rich tables. `plot_sample` draws a mosaic of the
CBED patterns (log scale), the potential channels and the sample's record as text, with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from stemdl.datasets.checksum import sample_crc32c
from stemdl.datasets.integrity import (
    IncompleteStoreError,
    MissingDataError,
    require_files,
    shard_file,
)
from stemdl.datasets.partition import available_shards
from stemdl.datasets.record_scan import scan_fields
from stemdl.datasets.records import RecordError, read_fields, record_from_columns
from stemdl.datasets.schema import FIELDS, STATUS_FAILED, STATUS_OK
from stemdl.datasets.storage import StoreError, filesystem, is_local
from stemdl.datasets.store import open_stemdl_store
from stemdl.simulate.sample import SPLITS


class SampleIndexError(StoreError, IndexError):
    """A sample index (`--sample I`) outside the store's samples."""


def _bytes_on_disk(url: str, name: str) -> int:
    if is_local(url):  # os.scandir: fsspec's du costs ~10 µs a file (10⁶ files at 10⁷ samples)
        return _local_bytes(os.path.join(url, name))
    fs, root = filesystem(url)
    try:
        return int(fs.du(f"{root}/{name}", total=True))
    except FileNotFoundError:
        return 0


def _local_bytes(path: str) -> int:
    total, pending = 0, [path]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            else:
                total += entry.stat(follow_symlinks=False).st_size
    return total


_BATCH_ROWS = 65_536  # rows aggregated at a time: memory stays at one batch, not the store


def _split_counts(store: Any, shards: list[int]) -> tuple[dict[str, int], dict[str, set[str]],
                                                          int, int, int]:
    """Successful samples and materials per split, all samples, ok and failed, from the
    `status`, `split` and `material_id` columns, read a shard at a time
    (`datasets/record_scan.py`) and aggregated per batch."""
    samples = {s: 0 for s in SPLITS}
    materials: dict[str, set[str]] = {s: set() for s in SPLITS}
    totals = [0, 0, 0]  # rows, ok, failed
    batch: list[Any] = []

    def flush() -> None:
        status = np.concatenate([c["status"] for c in batch])
        split = np.concatenate([c["split"] for c in batch])
        material = np.concatenate([c["material_id"] for c in batch])
        ok = status == STATUS_OK
        totals[0] += status.size
        totals[1] += int(ok.sum())
        totals[2] += int((status == STATUS_FAILED).sum())
        for s in SPLITS:
            mine = ok & (split == s)
            samples[s] += int(mine.sum())
            materials[s].update(str(m) for m in np.unique(material[mine]))
        batch.clear()

    rows = 0
    for _, columns in scan_fields(store, ["status", "split", "material_id"], shards):
        batch.append(columns)
        rows += len(columns["status"])
        if rows >= _BATCH_ROWS:
            flush()
            rows = 0
    if batch:
        flush()
    return samples, materials, *totals


def summarize(store_url: str) -> dict[str, Any]:
    """Counts per split, materials, shards, bytes on disk and compression ratio per array."""
    store = open_stemdl_store(store_url)
    shards = available_shards(store)
    require_files(store, shards)  # a lost file would be summarized as fill values
    samples, materials, num_rows, num_ok, num_failed = _split_counts(store, shards)
    per_split = {
        s: {"samples": samples[s],
            "materials_in_catalogue": len(store.attrs.get("splits", {}).get(s, [])),
            "materials_with_samples": len(materials[s])}
        for s in SPLITS
    }
    arrays = {}
    for name, spec in store.schema.items():
        itemsize = 1 if spec.per != "sample" else np.dtype(
            "uint8" if spec.dtype == "string" else spec.dtype).itemsize
        raw = int(num_rows * itemsize * math.prod(spec.shape)) if spec.per == "sample" else 0
        disk = _bytes_on_disk(store.url, name)
        arrays[name] = {"dtype": spec.dtype, "shape": list(store.array(name).shape),
                        "bytes_on_disk": disk, "bytes_uncompressed": raw if spec.dtype != "string" else None,
                        "compression_ratio": (raw / disk) if disk and spec.dtype != "string" else None}
    data_raw = sum(arrays[n]["bytes_uncompressed"] for n in ("cbed", "potential"))
    data_disk = sum(arrays[n]["bytes_on_disk"] for n in ("cbed", "potential"))
    return {
        "store": store.url,
        "config_name": store.config.name,
        "created_utc": store.attrs.get("created_utc"),
        "staged": store.attrs.get("staged"),
        "num_samples": store.num_samples,
        "shard_size": store.shard_size,
        "num_shards": store.num_shards,
        "shards_done": len(shards),
        "samples_ok": num_ok,
        "samples_failed": num_failed,
        "splits": per_split,
        "catalogue_skipped": store.attrs.get("catalogue_skipped", []),
        "arrays": arrays,
        "bytes_on_disk": sum(a["bytes_on_disk"] for a in arrays.values()),
        "data_compression_ratio": data_raw / data_disk if data_disk else None,
    }


def render_summary(summary: dict[str, Any]) -> Any:
    """A rich renderable (a group of tables) for `summarize`'s dict."""
    from rich.console import Group
    from rich.table import Table

    head = Table(title=f"stemdl store {summary['store']}", show_header=False)
    for key in ("config_name", "created_utc", "num_samples", "shard_size", "num_shards",
                "shards_done", "samples_ok", "samples_failed"):
        head.add_row(key, str(summary[key]))
    head.add_row("bytes on disk", _human(summary["bytes_on_disk"]))
    ratio = summary["data_compression_ratio"]
    head.add_row("cbed+potential compression", f"{ratio:.2f}x" if ratio else "-")
    if summary["staged"]:
        staged = summary["staged"]
        head.add_row("staged", f"node {staged['node']}/{staged['nodes']} of {staged['source']}")
    splits = Table(title="splits (by material)")
    for column in ("split", "samples", "materials (catalogue)", "materials (with samples)"):
        splits.add_column(column)
    for name, row in summary["splits"].items():
        splits.add_row(name, str(row["samples"]), str(row["materials_in_catalogue"]),
                       str(row["materials_with_samples"]))
    arrays = Table(title="arrays")
    for column in ("array", "dtype", "shape", "on disk", "ratio"):
        arrays.add_column(column)
    for name, row in summary["arrays"].items():
        ratio = row["compression_ratio"]
        arrays.add_row(name, row["dtype"], str(tuple(row["shape"])), _human(row["bytes_on_disk"]),
                       f"{ratio:.2f}" if ratio else "")
    return Group(head, splits, arrays)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def read_sample(store_url: str, index: int) -> dict[str, Any]:
    """The stored arrays, status and `SampleRecord` of sample `index` (as stored, not decoded)."""
    store = open_stemdl_store(store_url)
    if not 0 <= index < store.num_samples:
        raise SampleIndexError(f"{store.url}: sample {index} out of range: the store has "
                               f"{store.num_samples} samples, so --sample takes 0 to "
                               f"{store.num_samples - 1}")
    shard = index // store.shard_size
    if not store.done_mask()[shard]:
        raise IncompleteStoreError(f"{store.url}: sample {index} is in shard {shard}, which is "
                                   "not done (not generated yet, or not staged here)")
    require_files(store, [shard])
    columns = read_fields(store, FIELDS, slice(index, index + 1))
    status = int(columns["status"][0])
    arrays = {name: np.asarray(store.array(name)[index]) for name in ("cbed", "potential")}
    for name, values in arrays.items():
        if status == STATUS_OK and sample_crc32c(values) != int(columns[f"{name}_crc32c"][0]):
            raise MissingDataError(f"{shard_file(store, name, shard)}: sample {index} of {name} "
                                   "does not match its recorded CRC-32C (lost or overwritten); "
                                   f"`stemdl verify {store.url} --repair` re-simulates it")
    return {
        **arrays,
        "status": status,
        "failure_reason": str(columns["failure_reason"][0]),
        "record": record_from_columns(columns, 0) if status == STATUS_OK else None,
    }


def _mosaic(patterns: np.ndarray, rows: int, cols: int, gap: int = 1) -> np.ndarray:
    """(rows·cols, H, W) patterns tiled row-major on the probe grid, with NaN gaps."""
    _, h, w = patterns.shape
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    for k, pattern in enumerate(patterns):
        r, c = divmod(k, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = pattern
    return out


def plot_sample(store_url: str, index: int, png_path: str | Path) -> Path:
    """Save a figure of sample `index`: CBED mosaic, potential maps, record text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample = read_sample(store_url, index)
    if sample["record"] is None:
        raise RecordError(f"sample {index} has status {sample['status']} "
                         f"({sample['failure_reason'] or 'not written'}); nothing to plot")
    record = sample["record"]
    cbed = sample["cbed"].astype(np.float32)
    gy, gx = record.scan_gpts
    p = cbed.shape[0]
    mosaic = _mosaic(cbed, gy, gx) if gy * gx == p else _mosaic(cbed, p, 1)
    potential = sample["potential"].astype(np.float32)
    fig, axes = plt.subplots(1, 2 + potential.shape[0], figsize=(4 * (2 + potential.shape[0]), 4.4))
    with np.errstate(invalid="ignore"):
        axes[0].imshow(np.log10(np.clip(mosaic, 1e-7, None)), cmap="magma")
    axes[0].set_title(f"CBED, {p} patterns (log10)")
    for c in range(potential.shape[0]):
        image = axes[1 + c].imshow(potential[c], cmap="viridis")
        axes[1 + c].set_title(f"potential [{c}] (V·Å)")
        fig.colorbar(image, ax=axes[1 + c], fraction=0.046)
    text = (f"sample {record.index}  {record.material_id} ({record.formula})\n"
            f"split {record.split}, space group {record.spacegroup}, zone {record.zone_axis}\n"
            f"thickness {record.thickness_a:.1f} Å, {record.energy_ev / 1e3:.0f} keV\n"
            f"semi-angle {record.semiangle_mrad:.2f} mrad, defocus {record.defocus_a:.1f} Å\n"
            f"C3 {record.c30_a:.3g} Å, {record.num_slices} slices of {record.slice_thickness_a:.2f} Å\n"
            f"{len(record.atomic_numbers)} atoms/base cell, reps {record.repetitions}\n"
            f"abTEM {record.abtem_version} on {record.device}")
    axes[-1].axis("off")
    axes[-1].text(0, 0.5, text, va="center", family="monospace", fontsize=8)
    for axis in axes[:-1]:
        axis.set_xticks([])
        axis.set_yticks([])
    fig.tight_layout()
    path = Path(png_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
