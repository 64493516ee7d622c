"""The one resize every tile goes through, whichever reader cut it.

Tiles are only ever shrunk (a tile is never upsampled: that would invent detail), and shrinking
uses area averaging (PIL's BOX filter) so a 443 px region at 0.2528 um/px becomes a 224 px tile
at 0.5 um/px without aliasing. Every reader calls this function so their pixels agree.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_tile(region: np.ndarray, size: int) -> np.ndarray:
    """Return ``region`` (H, W, 3) uint8 shrunk to (size, size, 3) by area averaging.

    A region already of that size is returned as is. Raises ValueError for a region smaller
    than ``size`` in either direction, since that would mean upsampling.
    """
    height, width = region.shape[:2]
    if (height, width) == (size, size):
        return region
    if height < size or width < size:
        raise ValueError(f"refusing to upsample a {width}x{height} region to {size}x{size}")
    image = Image.fromarray(np.ascontiguousarray(region))
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))
