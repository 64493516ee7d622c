"""Synthetic pyramidal slides that OpenSlide opens: for tests, the demo and benchmarks.

The image is procedural: every pixel is a function of its level-0 position, so each pyramid level
is generated tile by tile straight into tifffile and the whole of level 0 never sits in memory
(a 20k x 20k slide can be written for benchmarks). Background is near-white glass with a little
noise; planted tissue is H&E-like: pink eosin stroma with purple hematoxylin nuclei whose size is
set in microns, so a slide at 0.25 um/px and one at 0.5 um/px show the same tissue.

The traps OpenSlide sets for tifffile output (one top-level tiled page per level, reduced levels
marked ``subfiletype=1``, resolution in centimetres, Aperio descriptions needing ``metadata=None``)
are handled here so that callers only choose the size, mpp and tissue boxes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

Box = tuple[int, int, int, int]

_BACKGROUND = 240.0
_EOSIN = np.array([232.0, 150.0, 196.0])
_HEMATOXYLIN = np.array([98.0, 52.0, 142.0])
_CELL_UM = 12.0  # spacing of nuclei in the planted tissue, in microns
_BIGTIFF_BYTES = 2**31  # classic TIFF offsets are 32-bit; switch to BigTIFF above ~2 GB raw


@dataclass(frozen=True)
class SyntheticSlide:
    """What was written: where, at which resolution, and where the tissue is (level-0 pixels)."""

    path: Path
    mpp: float
    dimensions: tuple[int, int]
    tissue_boxes: tuple[Box, ...]
    level_dimensions: tuple[tuple[int, int], ...] = ()
    kind: str = "svs"


def default_tissue_boxes(width: int, height: int) -> tuple[Box, ...]:
    """Two tissue regions at fixed fractions of the slide, as level-0 (x0, y0, x1, y1)."""
    fractions = ((0.10, 0.15, 0.45, 0.60), (0.55, 0.40, 0.85, 0.85))
    return tuple(
        (round(fx0 * width), round(fy0 * height), round(fx1 * width), round(fy1 * height))
        for fx0, fy0, fx1, fy1 in fractions
    )


def write_synthetic_slide(
    path: str | Path,
    *,
    width: int = 4096,
    height: int = 3072,
    mpp: float = 0.25,
    kind: Literal["svs", "tiff"] = "svs",
    compression: Literal["jpeg", "deflate"] | None = "jpeg",
    tile: int = 256,
    downsamples: Sequence[int] = (1, 4, 16),
    tissue_boxes: Sequence[Box] | None = None,
    seed: int = 0,
    with_mpp: bool = True,
) -> SyntheticSlide:
    """Write a tiled pyramidal TIFF (Aperio-style SVS or generic TIFF) and describe it.

    ``tissue_boxes`` are level-0 (x0, y0, x1, y1) rectangles of planted tissue; ``None`` plants two
    default regions and ``()`` writes a blank slide. The output is identical for identical
    arguments. ``with_mpp=False`` leaves out every resolution record (to test refusal).

    Returns a :class:`SyntheticSlide`. Raises ValueError for impossible geometry.
    """
    path = Path(path)
    _check_geometry(width, height, tile, downsamples, mpp, kind, compression)
    boxes = default_tissue_boxes(width, height) if tissue_boxes is None else tuple(tissue_boxes)
    boxes = tuple(tuple(int(v) for v in box) for box in boxes)
    level_dimensions = tuple((max(1, width // d), max(1, height // d)) for d in downsamples)
    # Uncompressed size of the whole pyramid is under 4/3 of level 0 (each level <= 1/4 the last).
    bigtiff = width * height * 3 * 4 // 3 > _BIGTIFF_BYTES
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as writer:
        for level, (level_w, level_h) in enumerate(level_dimensions):
            scale = (width / level_w, height / level_h)
            writer.write(
                _level_tiles(level_w, level_h, scale, tile, mpp, boxes, seed, level),
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                description=_description(
                    kind, (width, height), (level_w, level_h), tile, mpp, with_mpp
                ),
                **_resolution_tags(mpp * scale[0], with_mpp),
            )
    return SyntheticSlide(path, float(mpp), (width, height), boxes, level_dimensions, kind)


def render_region(
    x0: float,
    y0: float,
    width: int,
    height: int,
    *,
    downsample: float = 1.0,
    mpp: float = 0.25,
    tissue_boxes: Sequence[Box] = (),
    seed: int = 0,
    noise_key: tuple[int, ...] = (0,),
) -> np.ndarray:
    """Render (height, width, 3) uint8 pixels centred at level-0 ``x0 + (i + 0.5) * downsample``.

    The procedural image slides are written from, for writers of other layouts (e.g. tests that
    encode tiles themselves). The noise depends on ``noise_key``; the slides written by
    :func:`write_synthetic_slide` use ``(level, tile_y, tile_x)``.
    """
    xs = x0 + (np.arange(width) + 0.5) * downsample
    ys = y0 + (np.arange(height) + 0.5) * downsample
    return _render(
        xs, ys, mpp, tuple(tuple(int(v) for v in box) for box in tissue_boxes), seed, noise_key
    )


def _check_geometry(width, height, tile, downsamples, mpp, kind, compression) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"slide size must be positive, got {width}x{height}")
    if tile % 16:
        raise ValueError(f"TIFF tile size must be a multiple of 16, got {tile}")
    if not downsamples or downsamples[0] != 1 or list(downsamples) != sorted(set(downsamples)):
        raise ValueError(f"downsamples must start at 1 and increase, got {tuple(downsamples)}")
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    if kind not in ("svs", "tiff"):
        raise ValueError(f"kind must be 'svs' or 'tiff', got {kind!r}")
    if compression not in ("jpeg", "deflate", None):
        raise ValueError(f"compression must be 'jpeg', 'deflate' or None, got {compression!r}")


def _level_tiles(
    level_w: int,
    level_h: int,
    scale: tuple[float, float],
    tile: int,
    mpp: float,
    boxes: tuple[Box, ...],
    seed: int,
    level: int,
) -> Iterator[np.ndarray]:
    """Yield the level's tiles in TIFF order (row-major), each rendered on demand."""
    for ty in range(0, level_h, tile):
        for tx in range(0, level_w, tile):
            # Levels are floor(size / d), so x and y scales can differ slightly: map each axis.
            xs = (tx + np.arange(tile) + 0.5) * scale[0]
            ys = (ty + np.arange(tile) + 0.5) * scale[1]
            yield _render(xs, ys, mpp, boxes, seed, (level, ty, tx))


def _render(
    xs: np.ndarray,
    ys: np.ndarray,
    mpp: float,
    boxes: tuple[Box, ...],
    seed: int,
    noise_key: tuple[int, ...],
) -> np.ndarray:
    """Pixels whose centres sit at level-0 columns ``xs`` and rows ``ys``."""
    tissue = _inside_boxes(xs, ys, boxes)
    image = np.empty((len(ys), len(xs), 3), dtype=np.float32)
    image[...] = _BACKGROUND
    if tissue.any():
        image = np.where(tissue[..., None], _tissue_colour(xs, ys, mpp, seed), image)
    rng = np.random.default_rng((seed, *noise_key))
    # Glass is almost flat; tissue carries more texture so a CNN and Otsu both have something.
    sigma = np.where(tissue, np.float32(6.0), np.float32(2.5))[..., None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _inside_boxes(xs: np.ndarray, ys: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    inside = np.zeros((len(ys), len(xs)), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return inside


def _tissue_colour(xs: np.ndarray, ys: np.ndarray, mpp: float, seed: int) -> np.ndarray:
    """H&E-like colour (h, w, 3): stroma shading plus nuclei on a jittered grid of cells.

    Everything is a function of the position in microns, so levels and resolutions agree.
    Per-cell values are computed once per cell and gathered, which keeps tiles cheap.
    """
    um_x, um_y = xs * mpp, ys * mpp
    shade = 0.88 + 0.08 * np.outer(np.cos(um_y / 53.0 - seed), np.sin(um_x / 37.0 + seed))
    colour = _EOSIN.astype(np.float32) * shade[..., None].astype(np.float32)
    cell_x = np.floor(um_x / _CELL_UM).astype(np.int64)
    cell_y = np.floor(um_y / _CELL_UM).astype(np.int64)
    cells_x, index_x = np.unique(cell_x, return_inverse=True)
    cells_y, index_y = np.unique(cell_y, return_inverse=True)
    h = _hash(cells_x[None, :], cells_y[:, None], seed)  # one hash per cell
    present = (h & 0xFF) < 180  # about 70% of cells hold a nucleus
    radius = _CELL_UM * (0.22 + 0.12 * ((h >> 8) & 0xFF) / 255.0)
    # Centre jitter keeps the nucleus inside its own cell, so only that cell needs checking.
    room = _CELL_UM / 2 - radius
    centre_x = (cells_x[None, :] + 0.5) * _CELL_UM + room * (((h >> 16) & 0xFF) / 127.5 - 1.0)
    centre_y = (cells_y[:, None] + 0.5) * _CELL_UM + room * (((h >> 24) & 0xFF) / 127.5 - 1.0)
    gather = np.ix_(index_y, index_x)
    distance2 = (um_x[None, :] - centre_x[gather]) ** 2 + (um_y[:, None] - centre_y[gather]) ** 2
    nucleus = present[gather] & (distance2 <= radius[gather] ** 2)
    colour[nucleus] = _HEMATOXYLIN
    return colour


def _hash(cell_x: np.ndarray, cell_y: np.ndarray, seed: int) -> np.ndarray:
    """A cheap integer hash of a cell index (splitmix-style mixing), deterministic per seed."""
    with np.errstate(over="ignore"):
        h = cell_x.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h = h ^ cell_y.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x165667B19E3779F9)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    return h


def _description(
    kind: str,
    size: tuple[int, int],
    level_size: tuple[int, int],
    tile: int,
    mpp: float,
    with_mpp: bool,
) -> str:
    if kind == "tiff":
        return "histo-encoders synthetic slide"
    # OpenSlide recognises Aperio by the description's prefix and reads MPP from its fields;
    # reduced levels say "-> WxH" as Aperio's own files do.
    width, height = size
    header = (
        f"Aperio Image Library v12.0.0 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
    )
    if level_size != size:
        header += f" -> {level_size[0]}x{level_size[1]}"
    fields = [f"AppMag = {10.0 / mpp:g}"] + ([f"MPP = {mpp:g}"] if with_mpp else [])
    return "|".join([header, *fields])


def _resolution_tags(level_mpp: float, with_mpp: bool) -> dict:
    if not with_mpp:
        return {}
    pixels_per_cm = 1e4 / level_mpp
    return {"resolution": (pixels_per_cm, pixels_per_cm), "resolutionunit": "CENTIMETER"}
