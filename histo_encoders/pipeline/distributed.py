"""Scale a run out with torchrun: which process am I, and which slides are mine.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in every process it starts. Slides are split by
position in the *sorted* list (rank r takes items r, r + W, r + 2W, ...), so every rank computes
the same split without talking to the others, no two ranks write the same slide, and every slide
belongs to exactly one rank. Each rank runs on ``cuda:LOCAL_RANK`` when GPUs are used.

At the end ranks wait for each other (a CPU "gloo" group, joined through the address torchrun
provides) and agree on the exit status: torchrun stops every other rank as soon as one exits with
an error, so a rank that merely reports a failed slide must not exit before the others finish.
``embed_slides`` runs that whole lifecycle (:func:`rank_group`), for the command line and for
Python callers alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from histo_encoders.env import RankInfo, torchrun_ranks

SlideT = TypeVar("SlideT", str, Path)
# Ranks finish hours apart on uneven slide sets: the final wait must not time out before that.
_WAIT_FOR_OTHER_RANKS = timedelta(days=7)


__all__ = [
    "RankInfo",
    "join_ranks",
    "leave_ranks",
    "rank_group",
    "rank_info",
    "shard_slides",
    "total_over_ranks",
]

# torchrun's variables are parsed in one place, histo_encoders.env.
rank_info = torchrun_ranks


def shard_slides(slides: Sequence[SlideT], rank: int, world_size: int) -> list[SlideT]:
    """This rank's slides: every ``world_size``-th slide of the sorted list, from ``rank``.

    Sorting first makes the split independent of the order each rank listed the files in.
    Raises ValueError for a rank outside [0, world_size).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return sorted(slides, key=str)[rank::world_size]


def join_ranks(ranks: RankInfo) -> bool:
    """Join torchrun's job as a CPU (gloo) process group, so ranks can wait for each other.

    Does nothing for a single process or when a group already exists. Returns True when this
    call created the group (pass it to :func:`leave_ranks`). Needs MASTER_ADDR/MASTER_PORT,
    which torchrun sets.
    """
    import torch.distributed as dist

    if not ranks.is_distributed or dist.is_initialized():
        return False
    dist.init_process_group(
        "gloo", rank=ranks.rank, world_size=ranks.world_size, timeout=_WAIT_FOR_OTHER_RANKS
    )
    return True


def total_over_ranks(value: int) -> int:
    """Sum ``value`` over all ranks; returns only when every rank has called it.

    Without a process group (a single process) it returns ``value``.
    """
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(total)
    return int(total.item())


def leave_ranks(created: bool) -> None:
    """Destroy the process group :func:`join_ranks` created (and only that one)."""
    import torch.distributed as dist

    if created and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def rank_group(ranks: RankInfo) -> Iterator[None]:
    """Join torchrun's job for the duration of the block (nothing for a single process)."""
    created = join_ranks(ranks)
    try:
        yield
    finally:
        leave_ranks(created)
