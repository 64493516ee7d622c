"""Tiles for the model, read overlapped with it: the one tile path ``embed`` runs and the
benchmark times.

A reader that streams (the TIFF reader) decodes ahead in its own threads in this process; on the
CPU its threads also normalize each tile as they shrink it, so the model gets float batches with
no work left. Any other reader (OpenSlide) is read by ``workers`` DataLoader processes whose
items are whole uint8 batches, each worker opening its own handle (OpenSlide handles must not
cross a fork). Either way only a few batches wait in memory (``workers * 2``, or the reader's
prefetch), whatever the size of the slide.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from histo_encoders.errors import SlideError
from histo_encoders.pipeline.inference import TileBatch
from histo_encoders.readers import StreamingTileReader, TileReader

_PREFETCH_BATCHES = 2  # per worker: enough to hide decode jitter, small enough to bound memory


def tile_supply(
    reader: TileReader,
    indices: np.ndarray,
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    normalize: tuple[Sequence[float], Sequence[float]],
) -> Iterator[TileBatch]:
    """Batches of the grid tiles ``indices``, each with the output rows it fills.

    ``normalize=(mean, std)`` is used where the reader normalizes faster than the device would
    (a streaming reader feeding the CPU). Raises SlideReadError from the reader, in this process.
    """
    if reader.streams:
        on_cpu = device.type == "cpu"
        yield from _streamed(reader, indices, batch_size, normalize if on_cpu else None)
        return
    # Closed before the workers fork: each opens its own handle on its first read.
    reader.close()
    yield from _loaded(reader, indices, batch_size, workers, pin=device.type == "cuda")


def _streamed(
    reader: StreamingTileReader,
    indices: np.ndarray,
    batch_size: int,
    normalize: tuple[Sequence[float], Sequence[float]] | None,
) -> Iterator[TileBatch]:
    """Batches in the reader's own order, mapped back to output rows."""
    row_of = {int(index): row for row, index in enumerate(indices)}
    for batch_indices, tiles in reader.iter_batches(indices, batch_size, normalize=normalize):
        rows = np.fromiter((row_of[int(i)] for i in batch_indices), np.int64)
        yield TileBatch(rows, tiles, normalized=normalize is not None)


def _loaded(
    reader: TileReader, indices: np.ndarray, batch_size: int, workers: int, *, pin: bool
) -> Iterator[TileBatch]:
    """Batches read by DataLoader worker processes, in order."""
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    loader = DataLoader(
        _TileBatches(reader, batches),
        batch_size=None,  # items are already whole batches
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=_PREFETCH_BATCHES if workers > 0 else None,
        persistent_workers=False,
    )
    start = 0
    for item in loader:
        tiles = _unwrap(item)
        yield TileBatch(np.arange(start, start + len(tiles)), tiles)
        start += len(tiles)


@dataclass(frozen=True)
class _ReadFailure:
    """A per-slide error raised in a worker, carried back as data.

    The DataLoader would re-raise a worker's SlideError as a RuntimeError (it cannot rebuild an
    exception whose constructor takes several arguments), losing the type callers catch; so the
    error's type, message and fields travel as plain data and are rebuilt here.
    """

    error_type: type[SlideError]
    args: tuple[Any, ...]
    fields: dict[str, Any]
    worker_traceback: str

    @classmethod
    def capture(cls, error: SlideError) -> _ReadFailure:
        trace = "".join(traceback.format_exception(error))
        return cls(type(error), error.args, dict(vars(error)), trace)

    def reraise(self) -> None:
        error = self.error_type.__new__(self.error_type)
        Exception.__init__(error, *self.args)
        vars(error).update(self.fields)
        raise error from _WorkerTraceback(self.worker_traceback)


class _WorkerTraceback(Exception):
    """Stands in as the cause of a re-raised worker error: its text is the worker's traceback."""


class _TileBatches(Dataset):
    """Item i is batch i of tiles as a (B, t, t, 3) uint8 tensor, read by whichever process
    asks (readers open their file lazily, in that process)."""

    def __init__(self, reader: TileReader, batches: list[np.ndarray]) -> None:
        self._reader = reader
        self._batches = batches

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> torch.Tensor | _ReadFailure:
        try:
            tiles = self._reader.read_tiles(self._batches[index])
        except SlideError as error:
            return _ReadFailure.capture(error)
        return torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.uint8))


def _unwrap(item: torch.Tensor | _ReadFailure) -> torch.Tensor:
    if isinstance(item, _ReadFailure):
        item.reraise()
    return item  # type: ignore[return-value]
