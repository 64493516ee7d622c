"""Write SVS-like slides whose JPEG tiles share one JPEGTables tag, as real Aperio files do.

tifffile writes self-contained JPEG tiles; Aperio scanners store the quantization and Huffman
tables once per page (TIFF tag 347) and abbreviated streams per tile. Tiles are encoded here with
fixed tables (no Huffman optimisation), the tables are moved into the tag and each tile keeps
only its frame and scan. ``rgb_jpeg=True`` stores JPEG data in RGB without colour conversion and
without JFIF/Adobe markers (photometric RGB), the layout tifffile notes as "found in Aperio SVS".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from histo_encoders.tools.synthetic import default_tissue_boxes, render_region

_TABLE_MARKERS = (0xDB, 0xC4)  # DQT, DHT
_APP_MARKERS = range(0xE0, 0xF0)  # JFIF, Adobe...: Aperio tile streams carry none


def write_jpegtables_slide(
    path: str | Path,
    *,
    width: int,
    height: int,
    mpp: float,
    tile: int = 128,
    downsamples: Sequence[int] = (1, 4),
    rgb_jpeg: bool = False,
    quality: int = 85,
) -> Path:
    """Write an Aperio-style SVS with shared JPEGTables; returns its path."""
    path = Path(path)
    boxes = default_tissue_boxes(width, height)
    with tifffile.TiffWriter(path) as writer:
        for level, downsample in enumerate(downsamples):
            level_w, level_h = max(1, width // downsample), max(1, height // downsample)
            scale = width / level_w
            streams = _level_streams(level_w, level_h, scale, tile, mpp, boxes, rgb_jpeg, quality)
            tables, first = _split(next(streams))
            description = (
                f"Aperio Image Library v12.0.0 \r\n{width}x{height} [0,0 {width}x{height}] "
                f"({tile}x{tile})|AppMag = {10 / mpp:g}|MPP = {mpp:g}"
            )
            writer.write(
                _chain(first, (_split(s)[1] for s in streams)),
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"outcolorspace": "rgb" if rgb_jpeg else "ycbcr"},
                jpegtables=tables,
                subfiletype=0 if level == 0 else 1,
                metadata=None,
                description=description if level == 0 else "",
                resolution=(1e4 / (mpp * scale), 1e4 / (mpp * scale)),
                resolutionunit="CENTIMETER",
            )
    return path


def _level_streams(level_w, level_h, scale, tile, mpp, boxes, rgb_jpeg, quality) -> Iterator:
    for ty in range(0, level_h, tile):
        for tx in range(0, level_w, tile):
            pixels = render_region(
                tx * scale, ty * scale, tile, tile, downsample=scale, mpp=mpp,
                tissue_boxes=boxes, noise_key=(tx, ty),
            )  # fmt: skip
            yield imagecodecs.jpeg8_encode(
                pixels,
                level=quality,
                colorspace="RGB",
                outcolorspace="RGB" if rgb_jpeg else "YCBCR",
                subsampling=None if rgb_jpeg else (2, 2),
                optimize=False,
            )


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _split(stream: bytes) -> tuple[bytes, bytes]:
    """(tables-only stream, abbreviated tile stream) of a baseline JPEG."""
    tables, frame = [b"\xff\xd8"], [b"\xff\xd8"]
    position = 2
    while True:
        marker = stream[position + 1]
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        segment = stream[position : position + 2 + length]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data up to EOI
            frame.append(stream[position:])
            break
        if marker in _TABLE_MARKERS:
            tables.append(segment)
        elif marker not in _APP_MARKERS:
            frame.append(segment)
        position += 2 + length
    tables.append(b"\xff\xd9")
    return b"".join(tables), b"".join(frame)
