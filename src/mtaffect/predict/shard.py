"""Prediction over a corpus split across processes (``torchrun ... -m mtaffect predict``).

The work is cut into units, one per output folder (a video, every still image together, a
``cropped_aligned`` track). Rank 0 lists them once and broadcasts the list, so every rank agrees on
the output names even if its view of the inputs differs; :func:`balance` gives each unit to one rank.
Each rank writes its own folders and its own ``report.rank<r>.json``; at the end the entries of all
ranks are gathered (through the process group, so no shared file system is needed for the report)
and rank 0 writes the one ``report.json``, ordered as a single process would have written it
(:func:`merge_entries`). The process group itself (broadcast, gather) is :mod:`mtaffect.distributed`.
"""

from __future__ import annotations

__all__ = ["balance", "merge_entries"]


def balance(sizes: list[float], world: int) -> list[int]:
    """The rank of each unit: largest first, each to the rank with the least work so far.

    Ties go to the earlier unit and the lower rank, so every rank computes the same answer. With
    sizes ``[5, 4, 3, 3]`` and 2 ranks: 5 → 0, 4 → 1, 3 → 1, 3 → 0 (loads 8 and 7).
    """
    load = [0.0] * world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i]
    return owner


def merge_entries(parts: list[list[dict]], position) -> list[dict]:
    """The report entries of all ranks in single-process order.

    ``position(entry)`` is the index of the unit an entry belongs to (-1 for inputs skipped before
    any work); within a unit the entries keep the order their rank recorded them in.
    """
    flat = [e for part in parts for e in part]
    order = sorted(range(len(flat)), key=lambda i: (position(flat[i]), i))
    return [flat[i] for i in order]
