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
from importlib import metadata
from typing import Any

import zarr

from stemdl.configs import ConfigError, StemdlConfig, config_from_dict
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
    group_exists,
    normalize_store_url,
    open_group,
    open_store,
    store_has_content,
)
from stemdl.datasets.store import StemdlStore, as_config, open_stemdl_store

BYTE_DETERMINING_SECTIONS: tuple[str, ...] = ("simulation", "dataset")
_SOFTWARE = ("stemdl", "abtem", "ase", "numpy", "zarr", "numcodecs", "dask", "distributed", "torch")


class ConfigMismatchError(StoreError):
    """The store was made with a different simulation or dataset config."""


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
    """Dotted paths (with both values) where two config dicts differ in `sections`.

    Both sides are first completed with the defaults of this code's config schema, when they
    validate: a field added since a store was made (e.g. `simulation.scan.shift_a`) is absent
    from its recorded config, and a new field's default is the old behaviour, so absent and
    default mean the same bytes. A recorded config that no longer validates is compared as it
    was written (and differs, as it should).
    """
    stored, requested = _with_defaults(stored), _with_defaults(requested)
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


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return config_from_dict(config).to_dict()
    except ConfigError:
        return config


def split_table(catalogue: Any) -> dict[str, list[str]]:
    """Material ids per split, from simulate's `Catalogue` (its `splits` mapping of
    material_id → split, or a `split` on each material)."""
    mapping = getattr(catalogue, "splits", None)
    table: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for material in catalogue.materials:
        split = mapping[material.material_id] if mapping is not None else material.split
        table.setdefault(split, []).append(material.material_id)
    return table


def split_by_material(attrs: dict[str, Any]) -> dict[str, str]:
    """material_id → split, from the `splits` table in a store's attributes (`split_table`)."""
    return {m: split for split, materials in attrs.get("splits", {}).items() for m in materials}


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


def plan_store(config: StemdlConfig | dict[str, Any], store_url: str,
               catalogue: Any) -> StemdlStore:
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
        create_array(group, spec, length=spec.length(ds), shard_size=ds.shard_size,
                     storage=storage)
    group.attrs.update({"planning_complete": True})
    return open_stemdl_store(url, mode="r+")
