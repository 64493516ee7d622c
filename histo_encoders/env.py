"""Every environment variable histo-encoders reads, read in one place and only when asked.

Nothing here runs at import time, so importing the package never touches the disk or the network.
The hub variables (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE) belong to huggingface_hub, which reads
them once when it is imported, NUMBA_CACHE_DIR to numba, and torchrun's to torch.distributed; all
are listed here so a user finds every variable in one place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOME_VARIABLE = "HISTO_ENCODERS_HOME"
# huggingface_hub's own. HF_HUB_DOWNLOAD_TIMEOUT bounds each read of a file body (huggingface_hub
# retries a stalled body a few times, resuming where it stopped).
HUB_VARIABLES = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_DOWNLOAD_TIMEOUT")
# Ours: how long a hub request may wait to connect, and for each answer, before the load fails
# with a clear error instead of huggingface_hub's long retries (minutes on a hub that hangs).
HUB_CONNECT_TIMEOUT_VARIABLE = "HISTO_ENCODERS_HUB_CONNECT_TIMEOUT"
HUB_READ_TIMEOUT_VARIABLE = "HISTO_ENCODERS_HUB_READ_TIMEOUT"
DEFAULT_HUB_CONNECT_TIMEOUT = 10.0
DEFAULT_HUB_READ_TIMEOUT = 30.0
# numba's own: where the compiled loops of histo_encoders.readers.kernels are cached, when the installed
# package's folder is not writable.
NUMBA_VARIABLES = ("NUMBA_CACHE_DIR",)
# torchrun's own variables; read by histo_encoders.pipeline.distributed.rank_info, which validates them.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def home() -> Path:
    """Folder for histo-encoders' own state (the record of first-seen weight hashes).

    ``$HISTO_ENCODERS_HOME``, else ``$XDG_CACHE_HOME/histo-encoders``, else
    ``~/.cache/histo-encoders``.
    """
    explicit = os.environ.get(HOME_VARIABLE)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "histo-encoders"


@dataclass(frozen=True)
class HubTimeouts:
    """Seconds a hub request may wait to connect (``connect``) and for each answer (``read``)."""

    connect: float = DEFAULT_HUB_CONNECT_TIMEOUT
    read: float = DEFAULT_HUB_READ_TIMEOUT


def hub_timeouts(environ: Mapping[str, str] | None = None) -> HubTimeouts:
    """The hub timeouts: HISTO_ENCODERS_HUB_CONNECT_TIMEOUT and HISTO_ENCODERS_HUB_READ_TIMEOUT
    (seconds), else 10 s to connect and 30 s per answer.

    Raises ValueError naming the variable when a value is not a positive number.
    """
    environ = os.environ if environ is None else environ
    values = []
    for name, default in (
        (HUB_CONNECT_TIMEOUT_VARIABLE, DEFAULT_HUB_CONNECT_TIMEOUT),
        (HUB_READ_TIMEOUT_VARIABLE, DEFAULT_HUB_READ_TIMEOUT),
    ):
        text = environ.get(name, "").strip()
        try:
            value = float(text) if text else default
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={text!r}: must be a positive number of seconds")
        values.append(value)
    return HubTimeouts(*values)


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for cache-only hub access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and schedulers set)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


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


def torchrun_ranks(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Read RANK, WORLD_SIZE and LOCAL_RANK (torchrun's variables); a single process without them.

    Raises ValueError when they are not integers or are inconsistent (e.g. RANK >= WORLD_SIZE),
    which would otherwise leave work undone or done twice.
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
