"""Assign materials (never samples) to train / validation / test.

Why by material: a network that saw MgO at one thickness must not be scored on MgO at another;
the paper split its CIFs, not its patterns. The assignment ranks materials by a hash of their
`material_id` (SHA-256, so it does not depend on Python's per-process hash seed or on the order
the catalogue lists them) and cuts the ranking at the configured fractions. With at least three
materials, every split whose fraction is > 0 gets at least one material.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from simulate.sample import SPLITS


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of n materials go to (train, validation, test)."""
    n_val = round(fractions[1] * n)
    n_test = round(fractions[2] * n)
    if n >= 3:
        n_val = max(n_val, 1) if fractions[1] > 0 else 0
        n_test = max(n_test, 1) if fractions[2] > 0 else 0
    else:  # too few to hold out anything without leaving training empty
        n_val = n_test = 0
    while n_val + n_test > n - 1 and (n_val > 1 or n_test > 1):  # keep one for training
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _rank_key(material_id: str) -> str:
    return hashlib.sha256(material_id.encode()).hexdigest()


def assign_splits(material_ids: Sequence[str], fractions: tuple[float, float, float]) -> dict[str, str]:
    """material_id -> one of SPLITS; deterministic and independent of the input order."""
    if len(set(material_ids)) != len(material_ids):
        raise ValueError("material ids must be unique to be split")
    ranked = sorted(material_ids, key=lambda m: (_rank_key(m), m))
    counts = split_counts(len(ranked), fractions)
    result: dict[str, str] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        for material_id in ranked[start : start + count]:
            result[material_id] = name
        start += count
    return result
