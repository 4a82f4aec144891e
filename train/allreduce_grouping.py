"""The response cache of `GroupedAllreduce`: which tensors exist, and how they are grouped.

Two agreements, each made once per reducer, so that no step ever talks to a coordinator:

1. `agree_on_model`: every rank compares its parameter fingerprint (names, shapes, dtypes, in
   registration order) and its reducer settings with rank 0's. All ranks learn the outcome
   (an all-gather of verdicts), so a mismatch raises `ModelMismatchError` on *every* rank at
   once, naming the first differing parameter and the rank, instead of hanging in a collective
   whose sizes differ.
2. `cut_into_groups` over rank 0's gradient-ready order (`broadcast_ready_order`): gradients
   that become ready together are reduced together, so a group can leave while backward is
   still computing the layers below it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from stemdl.configs import StemdlError

# (name, shape, dtype) of one parameter.
ParamFingerprint = tuple[str, tuple[int, ...], str]


class ModelMismatchError(StemdlError, RuntimeError):
    """Ranks hold different models or reducer settings; raised on every rank."""


def fingerprint(named_params: Sequence[tuple[str, torch.Tensor]]) -> list[ParamFingerprint]:
    return [(name, tuple(p.shape), str(p.dtype).removeprefix("torch.")) for name, p in named_params]


def _first_difference(reference: list[ParamFingerprint], mine: list[ParamFingerprint],
                      ref_settings: dict[str, Any], my_settings: dict[str, Any],
                      rank: int) -> str | None:
    """A sentence naming the first thing that differs between rank 0 and `rank`, or None."""
    for key in sorted(set(ref_settings) | set(my_settings)):
        if ref_settings.get(key) != my_settings.get(key):
            return (f"reducer setting {key!r} differs: rank 0 has {ref_settings.get(key)!r}, "
                    f"rank {rank} has {my_settings.get(key)!r}")
    for i, (ref, own) in enumerate(zip(reference, mine, strict=False)):
        if ref != own:
            return (f"parameter #{i} differs: rank 0 has {ref[0]!r} shape {list(ref[1])} {ref[2]}, "
                    f"rank {rank} has {own[0]!r} shape {list(own[1])} {own[2]}")
    if len(reference) != len(mine):
        longer, who = (reference, 0) if len(reference) > len(mine) else (mine, rank)
        extra = longer[min(len(reference), len(mine))][0]
        return (f"rank 0 has {len(reference)} parameters, rank {rank} has {len(mine)}; "
                f"the first one only rank {who} has is {extra!r}")
    return None


def agree_on_model(mine: list[ParamFingerprint], settings: dict[str, Any],
                   group: dist.ProcessGroup) -> None:
    """Raise `ModelMismatchError` on every rank unless all ranks match rank 0 (two collectives)."""
    rank = dist.get_rank(group)
    payload: list[Any] = [(mine, settings)]
    dist.broadcast_object_list(payload, src=dist.get_global_rank(group, 0), group=group)
    reference, ref_settings = payload[0]
    verdict = _first_difference(reference, mine, ref_settings, settings, rank)
    verdicts: list[str | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(verdicts, verdict, group=group)
    problems = [v for v in verdicts if v is not None]
    if problems:
        more = f" (and {len(problems) - 1} more ranks differ)" if len(problems) > 1 else ""
        raise ModelMismatchError(
            f"GroupedAllreduce: the ranks do not hold the same model: {problems[0]}{more}. "
            "Every rank must build the same model (same config) before the reducer."
        )


def broadcast_ready_order(local_order: list[int], group: dist.ProcessGroup | None) -> list[int]:
    """Rank 0's gradient-ready order, for every rank (one collective, first step only)."""
    if group is None:
        return list(local_order)
    payload: list[Any] = [list(local_order)]
    dist.broadcast_object_list(payload, src=dist.get_global_rank(group, 0), group=group)
    return [int(i) for i in payload[0]]


def complete_order(ready_order: list[int], num_params: int) -> list[int]:
    """The recorded order, then the parameters that produced no gradient, last first.

    Backward visits layers roughly last to first, so unused parameters are appended in reverse
    registration order: where they would most likely have become ready.
    """
    seen = set(ready_order)
    if len(seen) != len(ready_order):
        raise ValueError("ready order lists a parameter twice")
    return list(ready_order) + [i for i in reversed(range(num_params)) if i not in seen]


@dataclass(frozen=True)
class Group:
    """Parameters (indices) reduced as one fused buffer; `offsets[k]` is member k's start."""

    index: int
    members: tuple[int, ...]
    offsets: tuple[int, ...]
    numel: int
    dtype: torch.dtype

    def views(self, flat: torch.Tensor, params: Sequence[torch.Tensor]
              ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(parameter index, parameter, its slice of the group's flat buffer shaped like it)
        for every member: the one place that maps the fused buffer onto the parameters."""
        for p, offset in zip(self.members, self.offsets, strict=True):
            param = params[p]
            yield p, param, flat[offset:offset + param.numel()].view(param.shape)

    @torch.no_grad()
    def pack(self, flat: torch.Tensor, params: Sequence[torch.Tensor],
             names: Sequence[str]) -> None:
        """Copy the members' gradients into `flat` (zeros where a parameter has none)."""
        for p, param, view in self.views(flat, params):
            if param.grad is None:
                view.zero_()
            elif param.grad.is_sparse:
                raise RuntimeError(f"GroupedAllreduce: sparse gradient of {names[p]!r} "
                                   "is not supported")
            else:
                view.copy_(param.grad)


def _split_by_bytes(items: list[int], sizes: list[int], group_bytes: int) -> list[list[int]]:
    """Close a group once it holds at least `group_bytes` (like DDP's bucket_cap_mb)."""
    groups: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for item, size in zip(items, sizes, strict=True):
        current.append(item)
        filled += size
        if filled >= group_bytes:
            groups.append(current)
            current, filled = [], 0
    if current:
        groups.append(current)
    return groups


def _split_equal(items: list[int], sizes: list[int], num_groups: int) -> list[list[int]]:
    """Exactly min(num_groups, len(items)) contiguous groups of about equal bytes."""
    n = min(num_groups, len(items))
    groups: list[list[int]] = []
    current: list[int] = []
    filled, remaining = 0, sum(sizes)
    for position, (item, size) in enumerate(zip(items, sizes, strict=True)):
        current.append(item)
        filled += size
        still_to_open = n - len(groups) - 1
        items_left = len(items) - position - 1
        if still_to_open > 0 and (
            filled >= remaining / (still_to_open + 1) or items_left == still_to_open
        ):
            groups.append(current)
            remaining -= filled
            current, filled = [], 0
    if current:
        groups.append(current)
    return groups


def cut_into_groups(order: list[int], params: Sequence[torch.Tensor], *,
                    group_bytes: int, num_groups: int | None) -> list[Group]:
    """Cut the ready order into groups per dtype, by bytes or into `num_groups` per dtype.

    Groups are numbered by when their last member becomes ready (in the recorded order): that
    is the order they are launched in, on every rank.
    """
    position = {p: k for k, p in enumerate(order)}
    by_dtype: dict[torch.dtype, list[int]] = {}
    for p in order:
        by_dtype.setdefault(params[p].dtype, []).append(p)
    raw: list[list[int]] = []
    for members in by_dtype.values():
        sizes = [params[p].numel() * params[p].element_size() for p in members]
        if num_groups is not None:
            raw.extend(_split_equal(members, sizes, num_groups))
        else:
            raw.extend(_split_by_bytes(members, sizes, group_bytes))
    raw.sort(key=lambda members: max(position[p] for p in members))
    groups = []
    for index, members in enumerate(raw):
        offsets, total = [], 0
        for p in members:
            offsets.append(total)
            total += params[p].numel()
        groups.append(Group(index, tuple(members), tuple(offsets), total, params[members[0]].dtype))
    return groups
