"""Which stored tiles each output tile needs, and an order that decodes every stored tile once.

Output tiles are visited in the file's tile order (rows of stored tiles, left to right), and each
stored tile carries the number of output tiles still waiting for it. A decoded tile is dropped the
moment that count reaches zero, so at most a few rows of stored tiles across the slide are alive
at once, whatever the slide's height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histo_encoders.readers.tiff_layout import TiffLevel


@dataclass(frozen=True)
class ReadPlan:
    """Reads for a set of output tiles, positions aligned with the indices they were built from.

    ``order`` lists positions in visiting order; ``first``/``last`` hold the inclusive stored-tile
    (column, row) ranges of each region, clipped to the level (empty where ``covered`` is False,
    i.e. the region lies wholly outside the level); ``uses[t]`` counts regions needing tile t.
    """

    x: np.ndarray  # (N,) int64 level-pixel left edge of each region
    y: np.ndarray
    read_size: int
    order: np.ndarray  # (N,) int64
    first: np.ndarray  # (N, 2) int64 first stored (column, row)
    last: np.ndarray  # (N, 2) int64 last stored (column, row), inclusive
    covered: np.ndarray  # (N,) bool
    uses: np.ndarray  # (tile_count,) int64

    def tiles_of(self, position: int, level: TiffLevel) -> list[int]:
        """Row-major indices of the stored tiles region ``position`` overlaps."""
        if not self.covered[position]:
            return []
        (c0, r0), (c1, r1) = self.first[position], self.last[position]
        return [r * level.tiles_across + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]


def level_positions(
    coords: np.ndarray, downsample: float, level: int
) -> tuple[np.ndarray, np.ndarray]:
    """Level-pixel (x, y) of level-0 ``coords`` (N, 2), as OpenSlide maps them.

    OpenSlide divides by the level's downsample and interpolates between pixels when the result
    is fractional; raw tiles can only reproduce whole-pixel positions, so anything else raises
    ValueError (the caller then keeps OpenSlide).
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if level == 0:
        return coords[:, 0].copy(), coords[:, 1].copy()
    scaled = coords / float(downsample)
    rounded = np.rint(scaled)
    if coords.size and np.abs(scaled - rounded).max() > 1e-6:
        raise ValueError(
            f"tile positions fall between pixels of level {level} (downsample {downsample:g});"
            " OpenSlide interpolates there"
        )
    return rounded[:, 0].astype(np.int64), rounded[:, 1].astype(np.int64)


def plan_reads(x: np.ndarray, y: np.ndarray, read_size: int, level: TiffLevel) -> ReadPlan:
    """Plan the reads of ``read_size``-px regions at level pixels (x, y) on ``level``."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    tile = np.array([level.tile_width, level.tile_height], dtype=np.int64)
    size = np.array([level.width, level.height], dtype=np.int64)
    start = np.stack([x, y], axis=1)
    stop = start + read_size  # exclusive
    lo = np.clip(start, 0, size)
    hi = np.clip(stop, 0, size)
    covered = np.all(hi > lo, axis=1)
    first = np.where(covered[:, None], lo // tile, 0)
    last = np.where(covered[:, None], (hi - 1) // tile, -1)
    # File-tile order: by the stored-tile row of the region's top edge, then left to right.
    order = np.lexsort((first[:, 0], start[:, 0], first[:, 1]))
    uses = _count_uses(first, last, covered, level)
    return ReadPlan(x, y, int(read_size), order, first, last, covered, uses)


def _count_uses(
    first: np.ndarray, last: np.ndarray, covered: np.ndarray, level: TiffLevel
) -> np.ndarray:
    """How many regions overlap each stored tile (2-D difference array, then prefix sums)."""
    diff = np.zeros((level.tiles_down + 1, level.tiles_across + 1), dtype=np.int64)
    c0, r0 = first[covered, 0], first[covered, 1]
    c1, r1 = last[covered, 0] + 1, last[covered, 1] + 1
    np.add.at(diff, (r0, c0), 1)
    np.add.at(diff, (r0, c1), -1)
    np.add.at(diff, (r1, c0), -1)
    np.add.at(diff, (r1, c1), 1)
    counts = diff.cumsum(axis=0).cumsum(axis=1)[: level.tiles_down, : level.tiles_across]
    return counts.reshape(-1)


def tile_overlap(
    level: TiffLevel, tile_index: int, x: int, y: int, size: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Where stored tile ``tile_index`` lands in the ``size`` px region at level pixel (x, y).

    Returns ((rows, columns) in the region, (rows, columns) in the stored tile), or None when
    they do not meet. Stored edge tiles are padded past the level: only level pixels count.
    """
    row, column = divmod(tile_index, level.tiles_across)
    tile_x, tile_y = column * level.tile_width, row * level.tile_height
    x0, x1 = max(x, tile_x), min(x + size, tile_x + level.tile_width, level.width)
    y0, y1 = max(y, tile_y), min(y + size, tile_y + level.tile_height, level.height)
    if x1 <= x0 or y1 <= y0:
        return None
    in_region = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    in_tile = (slice(y0 - tile_y, y1 - tile_y), slice(x0 - tile_x, x1 - tile_x))
    return in_region, in_tile
