"""Scale a run out with torchrun: which process am I, and which slides are mine.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK in every process it starts. Slides are split by
position in the *sorted* list (rank r takes items r, r + W, r + 2W, ...), so every rank computes
the same split without talking to the others, no two ranks write the same slide, and every slide
belongs to exactly one rank. Each rank runs on ``cuda:LOCAL_RANK`` when GPUs are used.

At the end ranks wait for each other (a CPU "gloo" group, joined through the address torchrun
provides) and agree on the exit status: torchrun stops every other rank as soon as one exits with
an error, so a rank that merely reports a failed slide must not exit before the others finish.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

SlideT = TypeVar("SlideT", str, Path)
# Ranks finish hours apart on uneven slide sets: the final wait must not time out before that.
_WAIT_FOR_OTHER_RANKS = timedelta(days=7)


@dataclass(frozen=True)
class RankInfo:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        """True when more than one process shares the work."""
        return self.world_size > 1


def rank_info(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Read RANK, WORLD_SIZE and LOCAL_RANK (torchrun's variables); defaults to a single process.

    Raises ValueError when they are inconsistent (e.g. RANK >= WORLD_SIZE), which would
    otherwise leave slides unprocessed or processed twice.
    """
    environ = os.environ if environ is None else environ
    try:
        rank = int(environ.get("RANK", "0"))
        world_size = int(environ.get("WORLD_SIZE", "1"))
        local_rank = int(environ.get("LOCAL_RANK", "0"))
    except ValueError as error:
        raise ValueError(
            f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (as torchrun sets them): {error}"
        ) from error
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"Inconsistent torchrun variables RANK={rank} WORLD_SIZE={world_size} "
            f"LOCAL_RANK={local_rank}: RANK must be in [0, WORLD_SIZE). Launch with torchrun, "
            "or unset them for a single-process run."
        )
    return RankInfo(rank, world_size, local_rank)


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
