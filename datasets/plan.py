"""Planning a store: create its arrays and attributes once, or check an existing one fits.

A store records the full config it was made with. Generating into it again is allowed only if
the `simulation` and `dataset` sections (which determine every stored byte) are identical;
`loader`, `model` and `train` may differ. A store made with another config is refused with a
message listing the differing fields, never mixed.

Planning is crash-safe: the group is written first with `planning_complete: false`, then every
array, then the flag is set. A store whose planning was interrupted is planned again (no shard
can be marked done before planning completes, so nothing is lost).
"""

from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import zarr

from stemdl.configs import StemdlConfig, config_from_dict
from stemdl.datasets.fingerprint import ATTRIBUTE, catalogue_fingerprint, check_catalogue
from stemdl.datasets.schema import (
    CHECKSUM_DEFINITION,
    SCHEMA_VERSION,
    STATUS_MEANINGS,
    ArraySpec,
    store_schema,
    units_table,
)
from stemdl.datasets.storage import (
    StoreError,
    create_array,
    file_url,
    group_exists,
    normalize_store_url,
    open_group,
    open_store,
    store_has_content,
)

BYTE_DETERMINING_SECTIONS: tuple[str, ...] = ("simulation", "dataset")
_SOFTWARE = ("stemdl", "abtem", "ase", "numpy", "zarr", "numcodecs", "dask", "distributed", "torch")


class ArrayMetadataError(StoreError):
    """An array's `zarr.json` is missing or cannot be parsed; the message names the file."""


class ConfigMismatchError(StoreError):
    """The store was made with a different simulation or dataset config."""


@dataclass(frozen=True)
class StoreInfo:
    """An opened stemdl store: its URL, root group, config and schema."""

    url: str
    group: zarr.Group
    config: StemdlConfig
    schema: dict[str, ArraySpec]
    _arrays: dict[str, zarr.Array] = field(default_factory=dict, compare=False, repr=False)

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def num_samples(self) -> int:
        return self.config.dataset.num_samples

    @property
    def shard_size(self) -> int:
        return self.config.dataset.shard_size

    @property
    def num_shards(self) -> int:
        return self.config.dataset.num_shards

    def array(self, name: str) -> zarr.Array:
        """The array `name`, opened once (opening reads its zarr.json); a missing or unreadable
        `zarr.json` is a `StoreError` naming that file (`verify --repair` rebuilds it)."""
        if name not in self._arrays:
            try:
                self._arrays[name] = self.group[name]  # type: ignore[assignment]
            except Exception as error:
                path = file_url(self.url, f"{name}/zarr.json")
                reason = ("missing" if isinstance(error, KeyError)
                          else f"unreadable ({type(error).__name__}: {error})")
                raise ArrayMetadataError(
                    f"{path}: metadata of array {name!r} {reason}; `stemdl verify {self.url} "
                    "--repair` rebuilds it from the config in the store's attributes") from None
        return self._arrays[name]


def as_config(config: StemdlConfig | dict[str, Any]) -> StemdlConfig:
    """A `StemdlConfig` from a model or its JSON-safe dict (what Dask tasks are given)."""
    if isinstance(config, StemdlConfig):
        return config
    return config_from_dict(config, "<store or task config>")


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def config_differences(stored: dict[str, Any], requested: dict[str, Any],
                       sections: tuple[str, ...] = BYTE_DETERMINING_SECTIONS) -> list[str]:
    """Dotted paths (with both values) where two config dicts differ in `sections`."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}")
        elif a != b:
            out.append(f"{path}: store has {a!r}, requested {b!r}")

    for section in sections:
        walk(stored.get(section, "<absent>"), requested.get(section, "<absent>"), section)
    return out


def split_table(catalogue: Any) -> dict[str, list[str]]:
    """Material ids per split, from simulate's `Catalogue` (its `splits` mapping of
    material_id → split, or a `split` on each material)."""
    mapping = getattr(catalogue, "splits", None)
    table: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for material in catalogue.materials:
        split = mapping[material.material_id] if mapping is not None else material.split
        table.setdefault(split, []).append(material.material_id)
    return table


def _group_attributes(config: StemdlConfig, catalogue: Any, schema: dict[str, ArraySpec]) -> dict[str, Any]:
    splits = split_table(catalogue)
    return {
        "title": "stemdl: simulated CBED patterns and projected potentials of crystals",
        "schema_version": SCHEMA_VERSION,
        "planning_complete": False,
        "config": config.to_dict(),
        "num_samples": config.dataset.num_samples,
        "shard_size": config.dataset.shard_size,
        "num_shards": config.dataset.num_shards,
        "splits": splits,
        ATTRIBUTE: catalogue_fingerprint(catalogue),
        "split_rule": "by composition: materials of one reduced formula (polymorphs) share a split, "
                      "and every sample of a material has that material's split",
        "catalogue_skipped": [[str(source), str(reason)] for source, reason in catalogue.skipped],
        "units": units_table(schema),
        "status_meanings": STATUS_MEANINGS,
        "checksum": CHECKSUM_DEFINITION,
        "software": software_versions(),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "staged": None,
    }


def open_stemdl_store(store_url: str, *, mode: str = "r") -> StoreInfo:
    """Open an existing stemdl store, refusing anything that is not one (or not fully planned)."""
    url = normalize_store_url(store_url)
    group = open_group(url, mode=mode)
    attrs = dict(group.attrs)
    if "schema_version" not in attrs or "config" not in attrs:
        raise StoreError(f"{url!r} is a Zarr group but not a stemdl store (no schema_version/config)")
    if attrs["schema_version"] != SCHEMA_VERSION:
        raise StoreError(
            f"{url!r} has stemdl schema version {attrs['schema_version']}, this code reads "
            f"version {SCHEMA_VERSION} (version 2 packs the per-sample metadata into a few "
            "arrays); regenerate the store with this version of stemdl"
        )
    if not attrs.get("planning_complete"):
        raise StoreError(f"{url!r}: planning of this store did not complete; run generate again")
    config = as_config(attrs["config"])
    return StoreInfo(url, group, config, store_schema(config))


def plan_store(config: StemdlConfig | dict[str, Any], store_url: str,
               catalogue: Any) -> StoreInfo:
    """Create the store for `config` at `store_url`, or check that the existing one matches.

    `catalogue` is simulate's `Catalogue`, or a function returning it: a new store records
    its split table, skipped sources and fingerprint; an existing one is resumed only with a
    catalogue of the same fingerprint (`CatalogueMismatchError` otherwise).
    """
    url = normalize_store_url(store_url)
    config = as_config(config)
    if group_exists(url):
        group = open_group(url, mode="r+")
        attrs = dict(group.attrs)
        if "schema_version" not in attrs or "config" not in attrs:
            raise StoreError(f"{url!r} holds a Zarr group that is not a stemdl store; refusing to "
                             "write into it")
        differences = config_differences(attrs["config"], config.to_dict())
        if differences:
            shown = "\n  ".join(differences[:20])
            more = f"\n  … and {len(differences) - 20} more" if len(differences) > 20 else ""
            raise ConfigMismatchError(
                f"refusing to generate into {url!r}: it was made with another config "
                f"(the simulation and dataset sections must be identical):\n  {shown}{more}\n"
                "Use a new store path, or the config recorded in the store."
            )
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{url!r} has schema version {attrs.get('schema_version')}, "
                             f"this code writes version {SCHEMA_VERSION}")
        if attrs.get("staged"):
            raise StoreError(f"{url!r} is a node-local staged copy of {attrs['staged']['source']!r}; "
                             "generate into the full store and stage again")
        if attrs.get("planning_complete"):
            # Resuming: the CIF directory may have changed since (the config names only it).
            if callable(catalogue):
                catalogue = catalogue()
            check_catalogue(attrs, catalogue, split_table(catalogue), url)
            return open_stemdl_store(url, mode="r+")
    elif store_has_content(url):
        raise StoreError(f"{url!r} exists, is not empty and is not a Zarr store; refusing to "
                         "write into it")
    schema = store_schema(config)
    if callable(catalogue):
        catalogue = catalogue()
    attributes = _group_attributes(config, catalogue, schema)
    group = zarr.open_group(store=open_store(url, read_only=False), mode="w", zarr_format=3,
                            attributes=attributes)
    ds = config.dataset
    for spec in schema.values():
        storage = getattr(ds, spec.name) if spec.role == "data" else None
        length = {"shard": ds.num_shards, "sample": ds.num_samples}.get(spec.per, 0)
        create_array(group, spec, length=length, shard_size=ds.shard_size, storage=storage)
    group.attrs.update({"planning_complete": True})
    return open_stemdl_store(url, mode="r+")
