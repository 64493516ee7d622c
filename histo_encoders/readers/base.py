"""What every tile reader offers: read tiles of a planned grid by index, as uint8 RGB.

Readers are built from a path, a SlideInfo and a TileGrid, and must be picklable: the embedding
pipeline constructs them in the parent and reads in worker processes, so a reader opens its
file lazily, inside the process that reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class TileReader(Protocol):
    """Reads tiles of one slide's TileGrid.

    ``read_tiles(indices)`` returns (B, tile_size, tile_size, 3) uint8 RGB for the grid rows
    ``indices``, in that order, and raises SlideReadError when a region cannot be decoded.
    ``close()`` releases file handles; reading again afterwards reopens them.
    """

    name: str

    def read_tiles(self, indices: Sequence[int]) -> np.ndarray: ...

    def close(self) -> None: ...
