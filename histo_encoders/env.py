"""Every environment variable histo-encoders reads, read in one place and only when asked.

Nothing here runs at import time, so importing the package never touches the disk or the network.
The hub variables (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE) belong to huggingface_hub, which reads
them once when it is imported, NUMBA_CACHE_DIR to numba, and torchrun's to torch.distributed; all
are listed here so a user finds every variable in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "HISTO_ENCODERS_HOME"
HUB_VARIABLES = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_OFFLINE", "HF_TOKEN")
# numba's own: where the compiled loops of histo_encoders.kernels are cached, when the installed
# package's folder is not writable.
NUMBA_VARIABLES = ("NUMBA_CACHE_DIR",)
# torchrun's own variables; read by histo_encoders.distributed.rank_info, which validates them.
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


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for cache-only hub access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
