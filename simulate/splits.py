"""Assign compositions (never samples) to train / validation / test.

Why by material: a network that saw MgO at one thickness must not be scored on MgO at another;
the paper split its CIFs, not its patterns. Why by *composition*: polymorphs of one compound
(zincblende and wurtzite CdS) share bond lengths and species, so a test material whose polymorph
was trained on is not really unseen. Materials are therefore grouped by reduced formula
(`composition_key`: CdS for Cd2S2 and Cd4S4, in Hill order) and the groups are split: every
material of a composition lands in the same split.

The assignment ranks the groups by a hash of their key (SHA-256, so it does not depend on
Python's per-process hash seed or on the order the catalogue lists them) and cuts the ranking
at the configured fractions (fractions of compositions). With at least three compositions,
every split whose fraction is > 0 gets at least one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from stemdl.simulate.sample import SPLITS


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


def _rank_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def composition_key(formula: str) -> str:
    """The reduced formula in Hill order: the same key for every polymorph of a compound.

    An empty or unparsable formula is its own group (keyed by the text itself)."""
    from ase.formula import Formula

    try:
        reduced, _ = Formula(formula).reduce()
    except Exception:  # untrusted CIF text: never fail a catalogue on a formula
        return f"unparsed:{formula}"
    return reduced.format("hill") if len(reduced) else f"unparsed:{formula}"


def assign_splits(
    material_ids: Sequence[str],
    fractions: tuple[float, float, float],
    formulas: Sequence[str] | None = None,
) -> dict[str, str]:
    """material_id -> one of SPLITS; deterministic and independent of the input order.

    With `formulas` (one per material), materials of the same reduced formula share a split;
    without, every material is a group of its own."""
    if len(set(material_ids)) != len(material_ids):
        raise ValueError("material ids must be unique to be split")
    if formulas is None:
        keys = list(material_ids)
    else:
        if len(formulas) != len(material_ids):
            raise ValueError(f"{len(formulas)} formulas for {len(material_ids)} materials")
        keys = [composition_key(f) for f in formulas]
    groups: dict[str, list[str]] = {}
    for material_id, key in zip(material_ids, keys, strict=True):
        groups.setdefault(key, []).append(material_id)
    ranked = sorted(groups, key=lambda k: (_rank_key(k), k))
    counts = split_counts(len(ranked), fractions)
    result: dict[str, str] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        for key in ranked[start : start + count]:
            for material_id in groups[key]:
                result[material_id] = name
        start += count
    return result
