"""The stored tiles of one TIFF level: their decoding, the cache of tiles in flight, and pasting
them into regions.

A stored tile is decoded once, by whichever thread needs it first, and kept only while an output
tile still needs it (:class:`StoredTileCache` counts the uses). Decoding refuses damage instead of
returning grey or garbage pixels: libjpeg's fatal errors come through imagecodecs, the damage
libjpeg only warns about (which OpenSlide refuses) is found by
:func:`~.tiff_layout.validate_jpeg`, and a tile whose bytes lie past the end of the file, or
anything else a decoder raises, is a SlideReadError naming the tile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np

from histo_encoders.errors import SlideReadError
from histo_encoders.readers.buffers import SPARE_BUFFERS, scratch_array
from histo_encoders.readers.tiff_layout import (
    RawTileSource,
    TiffLevel,
    TileDataError,
    validate_jpeg,
)

_GLASS = 255  # OpenSlide's transparent pixels (outside the level, missing tiles) read as white
_USUAL_SPAN = 9  # stored tiles under one region: up to 3 x 3 when regions are under 2 tiles wide
_ABSENT_TILE = np.zeros((1, 1), np.uint32)  # fills the tuple of tiles where there is none


class StoredTileDecoder:
    """Decodes stored tiles of one level by index; safe to call from many threads at once."""

    def __init__(self, path: str | Path, level: TiffLevel, level_number: int) -> None:
        self.path = str(path)
        self.level = level
        self._level_number = level_number
        self._source = RawTileSource(path, level)

    def read_bytes(self, tile_index: int) -> bytes | None:
        """A stored tile's raw bytes; None where the file leaves the tile out.

        Raises SlideReadError when they are not all in the file.
        """
        try:
            return self._source.read(tile_index)
        except TileDataError as error:
            raise self._read_error(tile_index, error) from error

    def check_jpeg(self, tile_index: int, data: bytes) -> None:
        """Raise SlideReadError when OpenSlide would refuse this JPEG tile's ``data``."""
        damage = validate_jpeg(data, self.level.jpegtables)
        if damage is not None:
            raise self._read_error(tile_index, ValueError(damage))

    def decode_rgb(self, tile_index: int) -> np.ndarray | None:
        """One stored tile as (tile_height, tile_width, 3) uint8; None if the file omits it.

        Raises SlideReadError if its data cannot be decoded (same message shape as OpenSlide's).
        """
        data = self.read_bytes(tile_index)
        if data is None:
            return None
        level = self.level
        try:
            decoded = level.decode(data, tile_index, jpegtables=level.jpegtables)[0]
        except Exception as error:  # imagecodecs' and tifffile's errors have no common base
            raise self._read_error(tile_index, error) from error
        # libjpeg's fatal errors came through above; damage it only warns about is caught here.
        if level.codec == "jpeg":
            self.check_jpeg(tile_index, data)
        shape = (level.tile_height, level.tile_width, 3)
        if decoded.dtype != np.uint8 or decoded.size != np.prod(shape):
            why = f"decoded {decoded.dtype} pixels of shape {decoded.shape}, not {shape} uint8"
            raise self._read_error(tile_index, ValueError(why))
        return decoded.reshape(shape)

    def decode_rgbx(self, tile_index: int) -> np.ndarray | None:
        """One stored tile as (tile_height, tile_width, 4) uint8 RGBX; None if the file omits it.

        JPEG is decoded by libjpeg-turbo straight to 4-byte pixels (the colour conversion is
        the same as to RGB); other codecs, and JPEG data it rejects, go through
        :meth:`decode_rgb` (which raises the SlideReadError) and are widened.
        """
        level = self.level
        if level.codec == "jpeg":
            data = self.read_bytes(tile_index)
            if data is None:
                return None
            decoded = self._jpeg_to_rgbx(data)
            if decoded is not None:
                self.check_jpeg(tile_index, data)
                return decoded
        rgb = self.decode_rgb(tile_index)
        if rgb is None:
            return None
        rgbx = SPARE_BUFFERS.take(self.spare_key)
        if rgbx is None:
            rgbx = _new_tile((*rgb.shape[:2], 4))
        rgbx[..., :3] = rgb
        rgbx[..., 3] = _GLASS
        return rgbx

    @property
    def spare_key(self) -> tuple:
        """The key decoded RGBX tiles of this level are kept under between streams."""
        return ("tile", self.level.tile_height, self.level.tile_width, 4)

    def close(self) -> None:
        """Close the file."""
        self._source.close()

    def _jpeg_to_rgbx(self, data: bytes) -> np.ndarray | None:
        level = self.level
        shape = (level.tile_height, level.tile_width, 4)
        out = SPARE_BUFFERS.take(self.spare_key)
        try:
            decoded = imagecodecs.jpeg8_decode(
                data,
                tables=level.jpegtables,
                colorspace="RGB" if level.jpeg_rgb else None,
                outcolorspace="RGBA",
                shape=shape[:2],
                out=out if out is not None else _new_tile(shape),
            )
        except Exception:  # decode_rgb decodes it again and raises the error with its context
            return None
        return decoded if decoded.shape == shape else None

    def _read_error(self, tile_index: int, error: Exception) -> SlideReadError:
        row, column = divmod(tile_index, self.level.tiles_across)
        return SlideReadError(
            self.path,
            f"could not decode stored tile {tile_index} (column {column}, row {row}) of level "
            f"{self._level_number}: {error}. The file is probably corrupt there; re-export or "
            "re-scan the slide, or leave it out of the run.",
        )


class StoredTile:
    """One stored tile, decoded by whichever thread needs it first; others wait for it."""

    __slots__ = ("_decode", "_done", "_error", "_lock", "_value", "index")

    def __init__(self, index: int, decode: Callable[[int], np.ndarray | None]) -> None:
        self.index = index
        self._decode = decode
        self._lock = threading.Lock()
        self._done = False
        self._value: np.ndarray | None = None
        self._error: BaseException | None = None

    def decode_unless_busy(self) -> None:
        """Decode now unless done, or being decoded by another thread (then don't wait)."""
        if not self._done and self._lock.acquire(blocking=False):
            try:
                self._run()
            finally:
                self._lock.release()

    def value(self) -> np.ndarray | None:
        """The decoded tile (decoding it, or waiting for the thread that is); raises its
        decode error."""
        if not self._done:
            with self._lock:
                self._run()
        if self._error is not None:
            raise self._error
        return self._value

    def value_if_decoded(self) -> np.ndarray | None:
        """The decoded tile if a thread has decoded it, else None (never waits)."""
        return self._value if self._done else None

    def _run(self) -> None:
        if self._done:
            return
        try:
            self._value = self._decode(self.index)
        except BaseException as error:  # kept, and raised to every thread that needs the tile
            self._error = error
        self._done = True
        self._decode = None


class StoredTileCache:
    """Stored tiles in flight, with the count of output tiles still needing each (main thread
    only: worker threads get the tiles themselves)."""

    def __init__(
        self, uses: np.ndarray, decode: Callable[[int], Any], stats: Any, spare_key: tuple
    ) -> None:
        self._uses = uses
        self._decode = decode
        self._stats = stats
        self._spare_key = spare_key
        self._live: dict[int, StoredTile] = {}

    def get(self, tile_index: int) -> StoredTile:
        """The tile's entry, created (not yet decoded) on first request."""
        tile = self._live.get(tile_index)
        if tile is None:
            tile = self._live[tile_index] = StoredTile(tile_index, self._decode)
            self._stats.stored_tiles_decoded += 1
            self._stats.peak_decoded_tiles = max(self._stats.peak_decoded_tiles, len(self._live))
        return tile

    def release(self, tile_indices: list[int]) -> None:
        """One output tile needing each of ``tile_indices`` is done: drop tiles nobody needs."""
        for tile_index in tile_indices:
            self._uses[tile_index] -= 1
            if self._uses[tile_index] == 0:
                # Called once the jobs of every output tile needing it are done: reusable.
                value = self._live.pop(tile_index).value_if_decoded()
                if value is not None and value.flags.writeable and value.flags.c_contiguous:
                    SPARE_BUFFERS.give(self._spare_key, value)

    def clear(self) -> None:
        """Forget every tile (after a stream ends or fails)."""
        self._live.clear()


def paste_region(
    region: np.ndarray,
    x: int,
    y: int,
    decoded: list[tuple[int, np.ndarray | None]],
    level: TiffLevel,
) -> None:
    """Fill ``region`` (S, S, 4) uint8 RGBX with level pixels from (x, y), from the decoded
    stored tiles (index, RGBX tile or None where the file leaves it out); white elsewhere."""
    from histo_encoders.readers.kernels import cut_region  # numba: loaded with the first region

    # A tuple of one length per span of stored tiles: numba compiles once per length.
    length = max(len(decoded), _USUAL_SPAN)
    tiles = [_ABSENT_TILE] * length
    tile_x = np.zeros(length, np.int64)
    tile_y = np.zeros(length, np.int64)
    present = np.zeros(length, np.bool_)
    for k, (tile_index, tile) in enumerate(decoded):
        if tile is None:
            continue
        row, column = divmod(tile_index, level.tiles_across)
        tile_x[k], tile_y[k] = column * level.tile_width, row * level.tile_height
        # Read-only arrays are another numba type, and the tuple must hold one type.
        pixels = tile if tile.flags.writeable else tile.copy()
        tiles[k] = pixels.view(np.uint32)[..., 0]
        present[k] = True
    pixels = region.view(np.uint32)[..., 0]
    cut_region(tuple(tiles), tile_x, tile_y, present, x, y, level.width, level.height, pixels)


def new_region(read_size: int) -> np.ndarray:
    """A scratch RGBX region for one job: every region it cuts overwrites it."""
    return scratch_array((read_size, read_size, 4))


def _new_tile(shape: tuple[int, ...]) -> np.ndarray:
    """A decoded-tile array (kept for reuse, and not shared with forked children)."""
    return scratch_array(shape, mmap_from=2**16)
