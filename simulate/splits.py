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
    """How many of n materials go to (train, validation, test).

    Largest-remainder rounding of fractions × n (ties favour train, then validation); then,
    with n ≥ 3, every split with a fraction > 0 gets at least one material and train keeps one.
    """
    exact = [f * n for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n < 3:  # too few to hold anything out without leaving training empty
        return n, 0, 0
    for i in (1, 2):
        if fractions[i] > 0:
            counts[i] = max(counts[i], 1)
    while counts[1] + counts[2] > n - 1:  # keep one for training
        counts[1 if counts[1] >= counts[2] else 2] -= 1
    return n - counts[1] - counts[2], counts[1], counts[2]


def _rank_key(material_id: str) -> str:
    return hashlib.sha256(material_id.encode()).hexdigest()


def assign_splits(
    material_ids: Sequence[str], fractions: tuple[float, float, float]
) -> dict[str, str]:
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
