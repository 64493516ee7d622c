"""Where tiles are cut: pyramid level, read size and level-0 coordinates at a target mpp.

A tile of ``tile_size`` px at ``target_mpp`` covers ``tile_size * target_mpp`` microns. It is read
from the coarsest level still at least as fine as the target (within ``tolerance``) as a region of
``round(tile_size * target_mpp / level_mpp)`` px and area-averaged down; it is never upsampled.
The grid step in level-0 pixels is the exact ``tile_size * target_mpp / slide_mpp`` and each
position is rounded on its own, so a 0.2528 um/px slide gets no cumulative drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from histo_encoders.errors import TargetResolutionError
from histo_encoders.slides.slide import SlideInfo
from histo_encoders.slides.tissue import TissueMask, tissue_fraction


@dataclass(frozen=True, eq=False)
class TileGrid:
    """The tiles of one slide at one resolution.

    coords: (N, 2) int64 level-0 top-left (x, y) of each tile, row-major order.
    level: pyramid level read; read_size: side of the region read at that level (px);
    tile_size: side of the output tile (px); tile_size_level0: exact tile side in level-0 px.
    target_mpp: requested output resolution; level_mpp: resolution of the level read;
    slide_mpp: level-0 resolution.
    """

    coords: np.ndarray
    level: int
    read_size: int
    tile_size: int
    tile_size_level0: float
    target_mpp: float
    level_mpp: float
    slide_mpp: float

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def effective_mpp(self) -> float:
        """Resolution the output tiles actually have: level_mpp * read_size / tile_size."""
        return self.level_mpp * self.read_size / self.tile_size


def plan_tiles(
    info: SlideInfo,
    target_mpp: float,
    tile_size: int,
    tissue_mask: TissueMask | None = None,
    min_tissue: float = 0.6,
    tolerance: float = 0.05,
) -> TileGrid:
    """Plan a non-overlapping grid of ``tile_size`` px tiles at ``target_mpp`` um/px.

    Only tiles fully inside the slide are kept and, when ``tissue_mask`` is given, only those
    whose tissue fraction is at least ``min_tissue``. Returns a :class:`TileGrid` (possibly empty).
    Raises TargetResolutionError when the target is finer than level 0 beyond ``tolerance``.
    """
    if target_mpp <= 0 or tile_size <= 0:
        raise ValueError(f"target_mpp and tile_size must be positive: {target_mpp}, {tile_size}")
    level = choose_level(info, target_mpp, tolerance)
    level_mpp = info.level_mpp(level)
    # Within tolerance a level may be slightly coarser than the target (0.2528 serving 0.25):
    # read at least tile_size px then, since resizing never upsamples.
    read_size = max(tile_size, round(tile_size * target_mpp / level_mpp))
    step = tile_size * target_mpp / info.mpp
    footprint = read_size * info.level_downsamples[level]
    coords = _grid(info.dimensions, step, footprint)
    if tissue_mask is not None and len(coords):
        coords = coords[tissue_fraction(tissue_mask, coords, step) >= min_tissue]
    coords = np.ascontiguousarray(coords, dtype=np.int64)
    coords.setflags(write=False)
    return TileGrid(
        coords=coords,
        level=level,
        read_size=read_size,
        tile_size=tile_size,
        tile_size_level0=step,
        target_mpp=float(target_mpp),
        level_mpp=level_mpp,
        slide_mpp=info.mpp,
    )


def choose_level(info: SlideInfo, target_mpp: float, tolerance: float = 0.05) -> int:
    """The coarsest level whose mpp is at most ``target_mpp * (1 + tolerance)``.

    Raises TargetResolutionError if even level 0 is coarser than that.
    """
    limit = target_mpp * (1.0 + tolerance)
    fitting = [level for level in range(info.level_count) if info.level_mpp(level) <= limit]
    if not fitting:
        raise TargetResolutionError(
            info.path,
            f"tiles at {target_mpp:g} um/px would need upsampling: the finest level is "
            f"{info.mpp:g} um/px (tolerance {tolerance:.0%}). Ask for a target mpp of at least "
            f"{info.mpp / (1 + tolerance):.4g} (`--mpp`), or check the slide's mpp "
            f"(from {info.mpp_source}; override with `--slide-mpp`).",
        )
    return max(fitting)


def _grid(dimensions: tuple[int, int], step: float, footprint: float) -> np.ndarray:
    """Row-major (N, 2) top-left positions, each rounded from the exact multiple of ``step``."""
    xs = _positions(dimensions[0], step, footprint)
    ys = _positions(dimensions[1], step, footprint)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.int64)


def _positions(length: int, step: float, footprint: float) -> np.ndarray:
    if footprint > length:
        return np.zeros(0, dtype=np.int64)
    count = math.floor((length - footprint) / step) + 1
    positions = np.floor(np.arange(count) * step + 0.5).astype(np.int64)
    # Rounding may push the last tile a fraction of a pixel past the edge: drop it then.
    return positions[positions + footprint <= length]
