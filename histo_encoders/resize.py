"""The one resize every tile goes through, whichever reader cut it.

Tiles are only ever shrunk (a tile is never upsampled: that would invent detail), and shrinking
uses area averaging (PIL's BOX filter) so a 443 px region at 0.2528 um/px becomes a 224 px tile
at 0.5 um/px without aliasing. Every reader calls this function so their pixels agree.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import threading

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


def resize_rgbx(region: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Return ``region`` (..., H, W, 4) uint8 RGBX shrunk to (..., size, size, 4) uint8.

    Channels 0-2 equal ``resize_tile(region[..., :3], size)`` exactly (for each region of a
    stack); channel 3 is filler. ``out``: a contiguous array of the result's shape to write
    into (else a new one). A region already of that size is returned as is (copied into
    ``out`` if given); smaller regions raise ValueError.
    """
    height, width = region.shape[-3:-1]
    shape = (*region.shape[:-3], size, size, 4)
    if out is None:
        out = np.empty(shape, np.uint8)
    if (height, width) == (size, size):
        out[...] = region
        return out
    if height < size or width < size:
        raise ValueError(f"refusing to upsample a {width}x{height} region to {size}x{size}")
    rows, columns = _pair_runs(height, size), _pair_runs(width, size)
    if rows is None or columns is None:
        stack = region.reshape(-1, height, width, 4)
        for shrunk, one in zip(out.reshape(-1, size, size, 4), stack, strict=True):
            image = Image.frombuffer("RGBX", (width, height), np.ascontiguousarray(one), "raw")
            shrunk[...] = np.asarray(image.resize((size, size), Image.Resampling.BOX))
        return out
    # Temporaries come from a reused workspace: fresh multi-megabyte arrays would be page
    # faulted in on every call, which costs more than the arithmetic.
    workspace = _take_workspace()
    try:
        pixels = np.ascontiguousarray(region).view(np.uint32)[..., 0]
        across = (*region.shape[:-3], height, size)
        first = np.take(pixels, columns[0], axis=-1, out=workspace("first", across), mode="clip")
        last = np.take(pixels, columns[1], axis=-1, out=workspace("last", across), mode="clip")
        shrunk = _mean_of_pairs(first, last, workspace("carry", across), first)
        down = (*region.shape[:-3], size, size)
        first = np.take(shrunk, rows[0], axis=-2, out=workspace("first_rows", down), mode="clip")
        last = np.take(shrunk, rows[1], axis=-2, out=workspace("last_rows", down), mode="clip")
        _mean_of_pairs(first, last, workspace("carry_rows", down), out.view(np.uint32)[..., 0])
    finally:
        _give_workspace(workspace)
    return out


class _Workspace:
    """uint32 temporaries by name, kept with their shape (their content is garbage)."""

    def __init__(self) -> None:
        self._arrays: dict[tuple, np.ndarray] = {}

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        array = self._arrays.get((name, shape))
        if array is None:
            if len(self._arrays) >= 24:  # many sizes in turn: start afresh, stay bounded
                self._arrays.clear()
            array = self._arrays[name, shape] = scratch_array(shape, np.uint32)
        return array


# Linux's MADV_WIPEONFORK (Python's mmap module does not name it): a forked child gets zeros
# there instead of sharing the pages, so the parent's next write to them is not a
# copy-on-write page fault (after a DataLoader forked its workers, ~60k faults per stream).
_MADV_WIPEONFORK = getattr(mmap, "MADV_WIPEONFORK", 18)
_SCRATCH_MMAP_BYTES = 2**20


def scratch_array(
    shape: tuple[int, ...],
    dtype: np.dtype | type = np.uint8,
    mmap_from: int = _SCRATCH_MMAP_BYTES,
) -> np.ndarray:
    """An uninitialised array for internal scratch use that forked children do not share.

    Only for buffers never handed to callers: a forked child sees zeros in them. Arrays
    under ``mmap_from`` bytes, and systems without ``madvise``, get a plain ``np.empty``.
    """
    itemsize = np.dtype(dtype).itemsize
    nbytes = int(np.prod(shape)) * itemsize
    if nbytes < mmap_from or not hasattr(mmap.mmap, "madvise"):
        return np.empty(shape, dtype)
    block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # On an older kernel the pages are shared copy-on-write, as np.empty's would be.
    with contextlib.suppress(OSError, ValueError):
        block.madvise(_MADV_WIPEONFORK)
    return np.frombuffer(block, dtype).reshape(shape)


_SPARE_WORKSPACES: list[_Workspace] = []  # one per thread that resized at once, kept
_MAX_SPARE_WORKSPACES = 8
_WORKSPACE_LOCK = threading.Lock()


def _take_workspace() -> _Workspace:
    with _WORKSPACE_LOCK:
        return _SPARE_WORKSPACES.pop() if _SPARE_WORKSPACES else _Workspace()


def _give_workspace(workspace: _Workspace) -> None:
    with _WORKSPACE_LOCK:
        if len(_SPARE_WORKSPACES) < _MAX_SPARE_WORKSPACES:
            _SPARE_WORKSPACES.append(workspace)


def rgbx_to_rgb(tile: np.ndarray) -> np.ndarray:
    """(..., W, 4) uint8 RGBX -> (..., W, 3) uint8 RGB (a read-only array)."""
    width = tile.shape[-2]
    height = tile.size // (4 * width)
    image = Image.frombuffer("RGBX", (width, height), np.ascontiguousarray(tile), "raw")
    return np.frombuffer(image.tobytes("raw", "RGB"), np.uint8).reshape(*tile.shape[:-1], 3)


def _mean_of_pairs(
    first: np.ndarray, second: np.ndarray, carry: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Per byte, (a + b + 1) >> 1 of two uint32 arrays of RGBX pixels, into ``out``."""
    np.bitwise_xor(first, second, out=carry)
    carry >>= 1
    carry &= _LOW_SEVEN_BITS
    np.bitwise_or(first, second, out=out)
    out -= carry
    return out


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
    across, down = (in_size, out_size), (out_size, out_size)
    shrunk = np.take(pixels, runs[0], axis=1)
    shrunk = _mean_of_pairs(
        shrunk, np.take(pixels, runs[1], axis=1), np.empty(across, np.uint32), shrunk
    )
    first = np.take(shrunk, runs[0], axis=0)
    shrunk = _mean_of_pairs(
        first, np.take(shrunk, runs[1], axis=0), np.empty(down, np.uint32), first
    )
    got = shrunk.view(np.uint8).reshape(out_size, out_size, 4)[..., :3]
    return bool(np.array_equal(got, resize_tile(rgb, out_size)))
