"""The one resize every tile goes through, whichever reader cut it.

Tiles are only ever shrunk (a tile is never upsampled: that would invent detail), and shrinking
uses area averaging (PIL's BOX filter) so a 443 px region at 0.2528 um/px becomes a 224 px tile
at 0.5 um/px without aliasing. The OpenSlide reader calls :func:`resize_tile`; the TIFF reader
calls :func:`shrink_rgbx`, which gives exactly the same pixels, so the readers agree.
"""

from __future__ import annotations

import functools

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


# --- the same resize on 4-byte (RGBX) pixels, for readers that decode straight to RGBX ---------
#
# For a shrink by at most 2x, PIL's BOX filter averages runs of one or two input pixels with
# equal weights, in fixed point: one pixel is kept as is, two give (a + b + 1) >> 1, columns
# first, rounded to whole grey levels, then rows. Which pixels form each run is worked out the
# way PIL does it (same double arithmetic) and the compiled loops in
# :mod:`histo_encoders.readers.kernels` are checked against PIL itself once per pair of sizes;
# other shrinks go through PIL, one region at a time.


def shrink_rgbx(
    regions: np.ndarray, size: int, out: np.ndarray, table: np.ndarray | None = None
) -> np.ndarray:
    """Shrink RGBX regions (k, H, W, 4) uint8 into ``out`` (k, size, size, 3) and return it.

    Without ``table``, ``out`` is uint8 and each tile equals ``resize_tile(region[..., :3],
    size)`` exactly. With ``table`` (3, 256) float32, ``out`` is float32 and holds
    ``table[c, v]`` for channel c of those same grey levels v (a normalization done by lookup).
    Raises ValueError for regions smaller than ``size`` (that would be upsampling).
    """
    height, width = regions.shape[1:3]
    if height < size or width < size:
        raise ValueError(f"refusing to upsample a {width}x{height} region to {size}x{size}")
    # Regions already of the size (a 0.5 um/px slide read at 0.5) have runs of one pixel each:
    # the compiled loop then only packs or normalizes them.
    rows, columns = pair_runs(height, size), pair_runs(width, size)
    if rows is not None and columns is not None:
        from histo_encoders.readers import kernels  # numba: loaded with the first shrink

        pixels = np.ascontiguousarray(regions).view(np.uint32)[..., 0]
        if table is None:
            kernels.shrink_to_rgb(pixels, *rows, *columns, out)
        else:
            kernels.shrink_to_float(pixels, *rows, *columns, table, out)
        return out
    for tile, region in zip(out, regions, strict=True):
        rgb = _pil_shrink(region, size)
        if table is None:
            tile[...] = rgb
        else:
            for channel in range(3):
                tile[..., channel] = table[channel][rgb[..., channel]]
    return out


def _pil_shrink(region: np.ndarray, size: int) -> np.ndarray:
    """One RGBX region through PIL's BOX resize, as (size, size, 3) uint8 RGB."""
    height, width = region.shape[:2]
    image = Image.frombuffer("RGBX", (width, height), np.ascontiguousarray(region), "raw")
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))[..., :3]


@functools.lru_cache(maxsize=64)
def pair_runs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """First and last input pixel averaged into each output pixel by PIL's BOX shrink, when
    every output pixel averages one or two neighbours with equal weights; else None."""
    scale = in_size / out_size
    support = 0.5 * scale  # a shrink: the filter is stretched by the scale
    first = np.empty(out_size, np.intp)
    last = np.empty(out_size, np.intp)
    for index in range(out_size):  # PIL's precompute_coeffs, step by step
        centre = (index + 0.5) * scale
        start = max(int(centre - support + 0.5), 0)
        stop = min(int(centre + support + 0.5), in_size)
        taps = [x for x in range(start, stop) if -0.5 < (x - centre + 0.5) / scale <= 0.5]
        if not 1 <= len(taps) <= 2:
            return None
        first[index], last[index] = taps[0], taps[-1]
    runs = (first, last)
    return runs if _agrees_with_pil(in_size, out_size, runs) else None


def _agrees_with_pil(in_size: int, out_size: int, runs: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether the compiled pair averages give PIL's pixels on a random image (checked once
    per pair of sizes, on the kernel that will do the work)."""
    from histo_encoders.readers import kernels

    rgb = np.random.default_rng(in_size * 7919 + out_size).integers(
        0, 256, (1, in_size, in_size, 3), np.uint8
    )
    rgbx = np.full((1, in_size, in_size, 4), 255, np.uint8)
    rgbx[..., :3] = rgb
    got = np.empty((1, out_size, out_size, 3), np.uint8)
    kernels.shrink_to_rgb(rgbx.view(np.uint32)[..., 0], *runs, *runs, got)
    return bool(np.array_equal(got[0], resize_tile(rgb[0], out_size)))
