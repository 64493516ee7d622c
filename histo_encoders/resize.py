"""The one resize every tile goes through, whichever reader cut it.

Tiles are only ever shrunk (a tile is never upsampled: that would invent detail), and shrinking
uses area averaging (PIL's BOX filter) so a 443 px region at 0.2528 um/px becomes a 224 px tile
at 0.5 um/px without aliasing. Every reader calls this function so their pixels agree.
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
# equal weights, in fixed point: one pixel is kept as is, two give (a + b + 1) >> 1, rows first,
# rounded to whole grey levels, then columns. On RGBX pixels held as uint32 that rounded-up
# average is (a | b) - (((a ^ b) >> 1) & 0x7F7F7F7F) for all four bytes at once, so a whole
# tile is a few vectorised numpy operations, several times cheaper than PIL's general resampler.
# Which pixels form each run is worked out the way PIL does it (same double arithmetic) and then
# checked against PIL itself once per pair of sizes; anything else goes through PIL.

_LOW_SEVEN_BITS = np.uint32(0x7F7F7F7F)


def resize_rgbx(region: np.ndarray, size: int) -> np.ndarray:
    """Return ``region`` (H, W, 4) uint8 RGBX shrunk to (size, size, 4) uint8.

    Channels 0-2 equal ``resize_tile(region[..., :3], size)`` exactly; channel 3 is filler.
    A region already of that size is returned as is; smaller regions raise ValueError.
    """
    height, width = region.shape[:2]
    if (height, width) == (size, size):
        return region
    if height < size or width < size:
        raise ValueError(f"refusing to upsample a {width}x{height} region to {size}x{size}")
    rows, columns = _pair_runs(height, size), _pair_runs(width, size)
    if rows is None or columns is None:
        image = Image.frombuffer("RGBX", (width, height), np.ascontiguousarray(region), "raw")
        return np.asarray(image.resize((size, size), Image.Resampling.BOX)).copy()
    pixels = region.view(np.uint32).reshape(height, width)
    shrunk = _mean_of_pairs(
        np.take(pixels, columns[0], axis=1), np.take(pixels, columns[1], axis=1)
    )
    shrunk = _mean_of_pairs(np.take(shrunk, rows[0], axis=0), np.take(shrunk, rows[1], axis=0))
    return shrunk.view(np.uint8).reshape(size, size, 4)


def rgbx_to_rgb(tile: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBX -> (H, W, 3) uint8 RGB (a read-only array)."""
    height, width = tile.shape[:2]
    image = Image.frombuffer("RGBX", (width, height), np.ascontiguousarray(tile), "raw")
    return np.frombuffer(image.tobytes("raw", "RGB"), np.uint8).reshape(height, width, 3)


def _mean_of_pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per byte, (a + b + 1) >> 1 of two uint32 arrays of RGBX pixels (in ``first``)."""
    carry = np.bitwise_xor(first, second)
    carry >>= 1
    carry &= _LOW_SEVEN_BITS
    first |= second
    first -= carry
    return first


@functools.lru_cache(maxsize=64)
def _pair_runs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray] | None:
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
    """Whether the pair averages give PIL's pixels on a random image (checked once per size)."""
    rgb = np.random.default_rng(in_size * 7919 + out_size).integers(
        0, 256, (in_size, in_size, 3), np.uint8
    )
    rgbx = np.empty((in_size, in_size, 4), np.uint8)
    rgbx[..., :3] = rgb
    rgbx[..., 3] = 255
    pixels = rgbx.view(np.uint32).reshape(in_size, in_size)
    shrunk = _mean_of_pairs(np.take(pixels, runs[0], axis=1), np.take(pixels, runs[1], axis=1))
    shrunk = _mean_of_pairs(np.take(shrunk, runs[0], axis=0), np.take(shrunk, runs[1], axis=0))
    got = shrunk.view(np.uint8).reshape(out_size, out_size, 4)[..., :3]
    return bool(np.array_equal(got, resize_tile(rgb, out_size)))
