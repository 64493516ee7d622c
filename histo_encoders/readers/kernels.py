"""The library's compiled inner loops (numba, ``nogil=True``): cutting regions out of decoded
stored tiles and shrinking them.

The TIFF reader's threads cut and shrink regions while other threads decode JPEG. As numpy
code each region took a dozen array calls, each handing the GIL over, and on two cores the
threads spent a fifth of their time waiting for it. Compiled, a region is two calls that hold
no GIL: one copies it out of the stored tiles, one shrinks it straight into the batch buffer,
packed to RGB or already normalized through a per-channel lookup table.

The arithmetic is PIL's BOX filter for shrinks by at most 2x, as derived and checked in
:mod:`histo_encoders.readers.resize`: each output pixel averages one or two neighbouring input pixels
with ``(a + b + 1) >> 1`` per byte, columns first, then rows. On RGBX pixels held as uint32 that
rounded-up average is ``(a | b) - (((a ^ b) >> 1) & 0x7F7F7F7F)`` for all four bytes at once.

Callers are :mod:`histo_encoders.readers.resize` (shrinking) and the TIFF reader (cutting);
use their functions. :func:`compiled` is the decorator other compiled loops use (the JPEG checks
of :mod:`histo_encoders.readers.jpeg_check`).
"""

from __future__ import annotations

import warnings

import numba
import numpy as np

_LOW_SEVEN_BITS = np.uint32(0x7F7F7F7F)
_ONE = np.uint32(1)
_GLASS = np.uint32(0xFFFFFFFF)  # white RGBX: what OpenSlide shows outside the level
_UNCACHED: list[str] = []  # kernels compiled without a disk cache (numba found no folder)


def _kernel(**options):
    """numba.njit without the GIL, cached on disk so a process loads rather than compiles.

    numba refuses to cache when no cache folder is writable (a read-only install without a
    home folder, common in containers); the kernels are then compiled in each process, a few
    seconds, with a warning that says how to keep them.
    """

    def decorate(function):
        try:
            return numba.njit(nogil=True, cache=True, **options)(function)
        except RuntimeError as error:  # "cannot cache function ...: no locator available"
            if not _UNCACHED:  # said once for all the kernels
                warnings.warn(
                    f"numba cannot cache histo-encoders' compiled loops ({error}); they are "
                    "compiled again in every process. Set NUMBA_CACHE_DIR to a writable folder "
                    "to keep them.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            _UNCACHED.append(function.__name__)
            return numba.njit(nogil=True, **options)(function)

    return decorate


compiled = _kernel  # for compiled loops in other modules: same caching and GIL rules


@_kernel()
def cut_region(tiles, tile_x, tile_y, present, x, y, level_width, level_height, region):
    """Fill ``region`` (S, S) uint32 RGBX with the level's pixels from (x, y).

    ``tiles``: a tuple of decoded stored tiles (h, w) uint32 whose top-left level pixels are
    (``tile_x[k]``, ``tile_y[k]``), used where ``present[k]``. Pixels outside the level, or in
    a stored tile the file leaves out, are white. Only level pixels count: stored edge tiles
    are padded past the level's edge.
    """
    size = region.shape[0]
    inside = x >= 0 and y >= 0 and x + size <= level_width and y + size <= level_height
    missing = False
    for k in range(present.shape[0]):
        missing = missing or not present[k]
    if missing or not inside:
        region[:, :] = _GLASS
    for k in range(present.shape[0]):
        if not present[k]:
            continue
        tile = tiles[k]
        x0, y0 = max(x, tile_x[k]), max(y, tile_y[k])
        x1 = min(x + size, tile_x[k] + tile.shape[1], level_width)
        y1 = min(y + size, tile_y[k] + tile.shape[0], level_height)
        if x1 > x0 and y1 > y0:
            region[y0 - y : y1 - y, x0 - x : x1 - x] = tile[
                y0 - tile_y[k] : y1 - tile_y[k], x0 - tile_x[k] : x1 - tile_x[k]
            ]


@_kernel(inline="always")
def _mean(a, b):
    """Per byte, (a + b + 1) >> 1 of two uint32 RGBX pixels."""
    return (a | b) - (((a ^ b) >> _ONE) & _LOW_SEVEN_BITS)


@_kernel(inline="always")
def _shrunk_pixel(top, bottom, left, right):
    """One output pixel from source rows ``top``/``bottom`` and columns ``left``/``right``:
    columns are averaged first, as PIL's horizontal pass runs before its vertical one."""
    return _mean(_mean(top[left], top[right]), _mean(bottom[left], bottom[right]))


@_kernel()
def shrink_to_rgb(regions, first_rows, last_rows, first_columns, last_columns, out):
    """regions (k, H, W) uint32 RGBX -> out (k, t, t, 3) uint8 RGB."""
    for n in range(regions.shape[0]):
        region, tile = regions[n], out[n]
        for i in range(first_rows.shape[0]):
            top, bottom, row = region[first_rows[i]], region[last_rows[i]], tile[i]
            for j in range(first_columns.shape[0]):
                pixel = _shrunk_pixel(top, bottom, first_columns[j], last_columns[j])
                row[j, 0] = pixel & 255
                row[j, 1] = (pixel >> 8) & 255
                row[j, 2] = (pixel >> 16) & 255


@_kernel()
def shrink_to_float(regions, first_rows, last_rows, first_columns, last_columns, table, out):
    """regions (k, H, W) uint32 RGBX -> out (k, t, t, 3) float32, channel c of grey level v
    written as ``table[c, v]``: a 3 x 256 table is cheaper than converting and scaling."""
    for n in range(regions.shape[0]):
        region, tile = regions[n], out[n]
        for i in range(first_rows.shape[0]):
            top, bottom, row = region[first_rows[i]], region[last_rows[i]], tile[i]
            for j in range(first_columns.shape[0]):
                pixel = _shrunk_pixel(top, bottom, first_columns[j], last_columns[j])
                row[j, 0] = table[0, pixel & 255]
                row[j, 1] = table[1, (pixel >> 8) & 255]
                row[j, 2] = table[2, (pixel >> 16) & 255]
