"""What every tile reader offers: read tiles of a planned grid by index as uint8 RGB, say what it
is, and (for readers that can) stream batches in the file's own order.

Readers are built from a path, a SlideInfo and a TileGrid, and must be picklable: the embedding
pipeline constructs them in the parent and reads in worker processes, so a reader opens its
file lazily, inside the process that reads. Capabilities are declared, never probed: ``streams``
says whether the reader implements :class:`StreamingTileReader`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class ReaderReport:
    """Provenance of a reader: which one, how it decodes, why it was chosen, what it counted.

    ``details`` holds reader-specific facts (codec, page, threads...); ``stats`` the counters of
    the reads so far (None for readers that keep none). Take it after reading: counters taken
    before would record zeros that look like measurements.
    """

    reader: str
    decode_path: str
    selection: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    stats: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON and HDF5 attributes (details flattened in)."""
        described: dict[str, Any] = {"reader": self.reader, "decode_path": self.decode_path}
        if self.selection is not None:
            described["selection"] = self.selection
        described.update(self.details)
        if self.stats is not None:
            described["stats"] = dict(self.stats)
        return described


@runtime_checkable
class TileReader(Protocol):
    """Reads tiles of one slide's TileGrid.

    ``read_tiles(indices)`` returns (B, tile_size, tile_size, 3) uint8 RGB for the grid rows
    ``indices``, in that order, and raises SlideReadError when a region cannot be decoded.
    ``close()`` releases file handles; reading again afterwards reopens them.
    """

    name: str
    streams: bool

    def read_tiles(self, indices: Sequence[int]) -> np.ndarray: ...

    def describe(self) -> ReaderReport: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamingTileReader(TileReader, Protocol):
    """A reader that streams batches itself, in the file's order, with its own threads."""

    def iter_batches(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 64,
        *,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]: ...
