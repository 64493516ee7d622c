"""Map OpenSlide's pyramid levels onto a TIFF file's tiled pages, and read their raw tiles.

The TIFF reader only takes a slide when it can reproduce OpenSlide's pixels: the level's page must
be a tiled, 8-bit, 3-sample, chunky page in the main IFD chain whose size is exactly the level's
size, compressed with a codec decoded here. Anything else is answered with the reason, so
``open_reader`` can record why OpenSlide was chosen instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from histo_encoders.errors import SlideOpenError

# TIFF compression tag -> codec name. 33003 (Aperio JPEG 2000 in YCbCr) is left out on purpose:
# its colour conversion is not one we can check against OpenSlide here.
CODECS: dict[int, str] = {
    1: "none",
    5: "lzw",
    7: "jpeg",
    8: "deflate",
    32946: "deflate",
    33005: "jpeg2000",
    34712: "jpeg2000",
}
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6
_SOF2 = b"\xff\xc2"  # progressive JPEG: decoded fine on CPU, refused by nvJPEG batches


class TiffLayoutError(ValueError):
    """The level cannot be read from raw TIFF tiles; ``reason`` says why (used for selection)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class TiffLevel:
    """One pyramid level as stored: tile grid, codec and where each tile's bytes live."""

    page_index: int
    width: int
    height: int
    tile_width: int
    tile_height: int
    tiles_across: int
    tiles_down: int
    compression: int
    codec: str
    photometric: int
    jpeg_rgb: bool  # JPEG data stored in RGB (Aperio) rather than YCbCr: decode without conversion
    jpegtables: bytes | None
    offsets: np.ndarray  # (tiles_down * tiles_across,) int64, row-major as in the file
    bytecounts: np.ndarray
    decode: Callable[..., tuple]  # tifffile's decoder for this page (thread-safe, pure)

    @property
    def tile_count(self) -> int:
        return self.tiles_across * self.tiles_down


def open_tiff_level(path: str | Path, level_dimensions: tuple[int, int]) -> TiffLevel:
    """Find the tiled page whose size is ``level_dimensions`` (width, height) and describe it.

    Raises TiffLayoutError with the reason when the file is not a TIFF, no single page matches,
    or the page's layout or codec is one this reader does not decode.
    """
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many kinds on damaged headers
        raise TiffLayoutError(f"not a TIFF file tifffile can parse ({exc})") from exc
    with tif:
        try:
            matches = [
                index
                for index, page in enumerate(tif.pages)
                if page.is_tiled and (page.imagewidth, page.imagelength) == tuple(level_dimensions)
            ]
            if len(matches) != 1:
                raise TiffLayoutError(
                    f"{len(matches)} tiled pages of size "
                    f"{level_dimensions[0]}x{level_dimensions[1]} (need exactly one)"
                )
            level = _describe_page(tif.pages[matches[0]], matches[0])
            _check_jpeg_process(tif.filehandle, level)
        except TiffLayoutError:
            raise
        except Exception as exc:  # a damaged IFD: let OpenSlide judge the slide
            raise TiffLayoutError(f"tifffile cannot describe the level ({exc})") from exc
        return level


def _describe_page(page: tifffile.TiffPage, index: int) -> TiffLevel:
    _check_page(page)
    across = -(-page.imagewidth // page.tilewidth)
    down = -(-page.imagelength // page.tilelength)
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    if offsets.size != across * down:
        raise TiffLayoutError(f"page {index} has {offsets.size} tiles, expected {across * down}")
    codec = CODECS[page.compression]
    return TiffLevel(
        page_index=index,
        width=page.imagewidth,
        height=page.imagelength,
        tile_width=page.tilewidth,
        tile_height=page.tilelength,
        tiles_across=across,
        tiles_down=down,
        compression=int(page.compression),
        codec=codec,
        photometric=int(page.photometric),
        jpeg_rgb=codec == "jpeg" and page.photometric == _PHOTOMETRIC_RGB and not page.is_jfif,
        jpegtables=page.jpegtables,
        offsets=offsets,
        bytecounts=np.asarray(page.databytecounts, dtype=np.int64),
        decode=page.decode,
    )


def _check_jpeg_process(handle: tifffile.FileHandle, level: TiffLevel) -> None:
    """Refuse a level whose JPEG tiles use a process the tile checks do not verify (progressive,
    12-bit, arithmetic...), judged on its first stored tile: OpenSlide reads those slides."""
    if level.codec != "jpeg":
        return
    from histo_encoders.readers.jpeg_check import MESSAGES, UNVERIFIED, jpeg_warning

    present = np.flatnonzero(level.bytecounts > 0)
    if len(present) == 0:
        return
    first = int(present[0])
    handle.seek(int(level.offsets[first]))
    data = handle.read(int(level.bytecounts[first]))
    if jpeg_warning(data, level.jpegtables) == UNVERIFIED:
        raise TiffLayoutError(MESSAGES[UNVERIFIED])


def _check_page(page: tifffile.TiffPage) -> None:
    if page.compression not in CODECS:
        raise TiffLayoutError(f"compression {int(page.compression)} is not decoded here")
    if page.photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
        raise TiffLayoutError(f"photometric {int(page.photometric)} is not RGB or YCbCr")
    if page.photometric == _PHOTOMETRIC_YCBCR and CODECS[page.compression] != "jpeg":
        raise TiffLayoutError("YCbCr pixels outside JPEG would need OpenSlide's conversion")
    if page.samplesperpixel != 3 or page.bitspersample != 8 or page.planarconfig != 1:
        raise TiffLayoutError(
            f"{page.samplesperpixel} samples of {page.bitspersample} bits, planar "
            f"{int(page.planarconfig)} (need 3 x 8-bit, chunky)"
        )
    if page.imagedepth != 1 or page.tiledepth != 1:
        raise TiffLayoutError("volumetric tiles are not slide tiles")


class TileDataError(ValueError):
    """A stored tile's bytes cannot be read from the file (the decoder adds which tile)."""


class RawTileSource:
    """Reads one stored tile's bytes by index; safe to call from many threads at once."""

    def __init__(self, path: str | Path, level: TiffLevel) -> None:
        self.path = str(path)
        self._level = level
        try:
            self._file = open(path, "rb")  # noqa: SIM115 - held open for the reader's lifetime
        except OSError as exc:
            raise SlideOpenError(path, f"cannot open the file for tile reads ({exc})") from exc
        # pread takes the offset with it, so threads need no lock; elsewhere seek+read do.
        self._lock = None if hasattr(os, "pread") else threading.Lock()
        self._size = os.fstat(self._file.fileno()).st_size

    def read(self, tile_index: int) -> bytes | None:
        """The stored bytes of a tile, or None for a tile the file leaves out (count 0).

        Raises TileDataError when the tile's bytes are not all in the file (an offset or byte
        count pointing past its end, as OpenSlide's "Cannot read raw tile") or cannot be read.
        """
        count = int(self._level.bytecounts[tile_index])
        if count == 0:
            return None
        offset = int(self._level.offsets[tile_index])
        if offset < 0 or count < 0 or offset + count > self._size:
            raise TileDataError(
                f"its {count} bytes at offset {offset} lie past the end of the file "
                f"({self._size} bytes)"
            )
        try:
            if self._lock is None:
                data = os.pread(self._file.fileno(), count, offset)
            else:
                with self._lock:
                    self._file.seek(offset)
                    data = self._file.read(count)
        except OSError as error:
            raise TileDataError(f"reading its bytes failed ({error})") from error
        if len(data) != count:
            raise TileDataError(f"the file ends after {len(data)} of its {count} bytes")
        return data

    def close(self) -> None:
        self._file.close()


def is_progressive_jpeg(data: bytes, jpegtables: bytes | None) -> bool:
    """Whether a JPEG tile uses progressive coding (SOF2), which batched nvJPEG refuses."""
    return _SOF2 in data[:2048] or (jpegtables is not None and _SOF2 in jpegtables)


def full_jpeg_stream(data: bytes, jpegtables: bytes | None) -> bytes:
    """A self-contained JPEG: the shared tables spliced in front of an abbreviated tile stream.

    Aperio SVS keep quantization and Huffman tables once per page (JPEGTables); decoders that
    take whole streams (nvJPEG) need them inside each tile: tables without their EOI, then the
    tile without its SOI.
    """
    if jpegtables is None or len(jpegtables) <= 4:
        return data
    return jpegtables[:-2] + data[2:]


def validate_jpeg(data: bytes, jpegtables: bytes | None = None) -> str | None:
    """The reason OpenSlide would refuse a JPEG tile, or None when it decodes it cleanly.

    libjpeg only warns on truncated or damaged compressed data and fills the rest with grey;
    imagecodecs does not report those warnings, whereas OpenSlide turns them into errors.
    :func:`~histo_encoders.readers.jpeg_check.jpeg_warning` finds the warning libjpeg would
    give (the fatal errors imagecodecs raises itself), so a bad tile is an error, never pixels.
    """
    # Compiled: checking in Python would hold the GIL that the decoding threads need.
    from histo_encoders.readers.jpeg_check import MESSAGES, jpeg_warning

    code = jpeg_warning(data, jpegtables)
    return None if code == 0 else MESSAGES[code]
