"""The catalogue a store was planned with, as one digest, and the check that a resume uses it.

Why: the `simulation` config names a CIF *directory*, not its contents. Generation killed
halfway and resumed after a CIF was added drew the remaining samples from another catalogue
(other materials, other splits) while the `splits` attribute still described the old one, and
`verify` could not tell. So a store records, when it is planned, a fingerprint of its catalogue:
every material's id, structure (cell, atomic numbers, fractional positions) and split, and
every later generation task checks that the catalogue it builds has the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from stemdl.datasets.storage import StoreError

ATTRIBUTE = "catalogue_fingerprint"


class CatalogueMismatchError(StoreError):
    """Generation would mix two catalogues in one store; the message names the difference."""


def _structure(material: Any) -> Any:
    atoms = getattr(material, "atoms", None)
    if atoms is None:  # a stand-in simulator's material: what it has
        return {"formula": getattr(material, "formula", None),
                "spacegroup": getattr(material, "spacegroup", None)}
    round6 = lambda values: (np.round(np.asarray(values, dtype=float), 6) + 0.0).tolist()  # noqa: E731
    return {"cell": round6(atoms.cell.array), "numbers": np.asarray(atoms.numbers).tolist(),
            "scaled_positions": round6(atoms.get_scaled_positions(wrap=False))}


def catalogue_fingerprint(catalogue: Any) -> str:
    """`sha256:<hex>` of (material id, structure, split) of every material, order-free."""
    mapping = getattr(catalogue, "splits", None)
    entries = sorted(
        [material.material_id,
         mapping[material.material_id] if mapping is not None else material.split,
         _structure(material)]
        for material in catalogue.materials)
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def check_catalogue(attrs: dict[str, Any], catalogue: Any, split_table: dict[str, list[str]],
                    url: str) -> None:
    """`CatalogueMismatchError` if `catalogue` is not the one the store was planned with
    (stores planned before fingerprints were recorded are not checked)."""
    recorded = attrs.get(ATTRIBUTE)
    if recorded is None or recorded == catalogue_fingerprint(catalogue):
        return
    stored = {m: s for s, materials in attrs.get("splits", {}).items() for m in materials}
    now = {m: s for s, materials in split_table.items() for m in materials}
    added = sorted(set(now) - set(stored))
    removed = sorted(set(stored) - set(now))
    moved = sorted(f"{m} ({stored[m]} → {now[m]})" for m in set(now) & set(stored)
                   if now[m] != stored[m])
    details = [f"{what}: {', '.join(ids[:8])}{' …' if len(ids) > 8 else ''}"
               for what, ids in (("added", added), ("removed", removed),
                                 ("split changed", moved)) if ids]
    details = details or ["the same material ids, but a structure differs"]
    raise CatalogueMismatchError(
        f"refusing to generate into {url}: the catalogue differs from the one the store was "
        f"planned with ({'; '.join(details)}), e.g. a CIF was added to or changed in "
        "structures.cif_dir; mixing them would give samples of two catalogues and a stale "
        "split table. Restore the CIF directory it was made with, or use a new store path.")
