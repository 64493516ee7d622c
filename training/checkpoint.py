"""Checkpoints of a pretraining run: written atomically, loaded without executing pickles.

A checkpoint is one ``torch.save`` dict, written to ``<name>.partial`` and renamed, so a run
killed mid-write leaves the previous checkpoint intact. It holds everything a resume needs
(model with queue and pointer, optimizer, scheduler, scaler, step, sampler position, RNG states
of every rank) and, for the library's ``publish`` command, the query backbone alone under timm
names (``encoder_state_dict``) with the metadata needed to describe it (``encoder_meta``).
Everything in it is a tensor or a plain Python value, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_encoders.atomic import atomic_write
from histo_encoders.errors import CorruptWeightsError

FORMAT = "histo-encoders-moco-v2/1"
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda temporary: torch.save({"format": FORMAT, **state}, temporary))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors and plain values only).

    Raises FileNotFoundError if it is missing, CorruptWeightsError if it cannot be parsed or
    is not a MoCo pretraining checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CorruptWeightsError(str(path), f"torch.load failed ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CorruptWeightsError(str(path), f"not a {FORMAT} checkpoint")
    return state


def find_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """The checkpoint file of a run folder, or the file itself."""
    path = Path(run_or_checkpoint)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch (and CUDA) in this process, as plain values/tensors."""
    np_state = np.random.get_state()
    return {
        "python": _tuple_to_lists(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back the states captured by ``capture_rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["key"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuple_to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_tuple_to_lists(v) for v in value]
    return value
