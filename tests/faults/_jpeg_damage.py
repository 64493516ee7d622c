"""A corpus of damaged JPEG tiles inside small synthetic slides, for the parity test.

Each case writes a 256 x 256 px Aperio-style slide of 64 px JPEG tiles whose stored tile 5 (or
the shared JPEGTables) is damaged one way, in one of four layouts: self-contained YCbCr tiles
(as tifffile writes them), abbreviated tiles with shared JPEGTables (Aperio), Aperio's RGB
JPEG, and self-contained tiles with restart markers (written by PIL). The damage is done to
the JPEG structure directly (segments found by walking the markers), so every class of damage
lands where it is meant to: the scan data, SOF, SOS, DHT, DQT, DRI, the markers around them,
and the file's tile index.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from histo_encoders.tools.synthetic import render_region
from tests.readers._jpegtables import _split

TILE = 64
SIZE = 256
DAMAGED = 5  # stored tile index (column 1, row 1)
LAYOUTS = ("self", "tables", "rgb", "restart")

Damage = Callable[[bytes | None, bytes, np.random.Generator], tuple[bytes | None, bytes] | None]


def layout_streams(layout: str, downsample: int = 1) -> tuple[bytes | None, list[bytes]]:
    """(shared tables or None, one stream per stored tile in file order) for ``layout``."""
    streams = []
    for y in range(0, SIZE // downsample, TILE):
        for x in range(0, SIZE // downsample, TILE):
            pixels = render_region(
                x * downsample, y * downsample, TILE, TILE, downsample=downsample, mpp=0.5,
                tissue_boxes=((0, 0, SIZE, SIZE),), noise_key=(x, y),
            )  # fmt: skip
            streams.append(_encode(pixels, layout))
    if layout in ("tables", "rgb"):
        return _split(streams[0])[0], [_split(s)[1] for s in streams]
    return None, streams


def _encode(pixels: np.ndarray, layout: str) -> bytes:
    if layout == "restart":
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85, restart_marker_blocks=2)
        return buffer.getvalue()
    rgb = layout == "rgb"
    return imagecodecs.jpeg8_encode(
        pixels,
        level=85,
        colorspace="RGB",
        outcolorspace="RGB" if rgb else "YCBCR",
        subsampling=None if rgb else (2, 2),
        optimize=False,
    )


def write_slide(path: Path, layout: str, tables: bytes | None, tiles: list[bytes]) -> Path:
    """An Aperio SVS at 0.5 um/px holding ``tiles`` at level 0, and an undamaged level 1 (which
    OpenSlide reads when it opens the slide)."""
    description = (
        f"Aperio Image Library v12.0.0 \r\n{SIZE}x{SIZE} [0,0 {SIZE}x{SIZE}] ({TILE}x{TILE})"
        "|AppMag = 20|MPP = 0.5"
    )
    reduced_tables, reduced = layout_streams(layout, downsample=2)
    with tifffile.TiffWriter(path) as writer:
        for level, (level_tables, level_tiles) in enumerate(
            [(tables, tiles), (reduced_tables, reduced)]
        ):
            side = SIZE >> level
            writer.write(
                iter(level_tiles),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"outcolorspace": "rgb" if layout == "rgb" else "ycbcr"},
                jpegtables=level_tables,
                subfiletype=level and 1,
                metadata=None,
                description=description if level == 0 else "",
                resolution=(2e4 / 2**level, 2e4 / 2**level),
                resolutionunit="CENTIMETER",
            )
    return path


def point_past_end(path: Path, *, offset: bool) -> None:
    """Make stored tile DAMAGED's byte count (or offset) point past the end of the file."""
    with tifffile.TiffFile(path) as tif:
        tag = tif.pages[0].tags["TileOffsets" if offset else "TileByteCounts"]
        where, width, values = tag.valueoffset, tag.valuebytecount // tag.count, list(tag.value)
        order = tif.byteorder
        size = path.stat().st_size
    values[DAMAGED] = size + 100 if offset else values[DAMAGED] + size
    with open(path, "r+b") as handle:
        handle.seek(where)
        handle.write(np.asarray(values, dtype=f"{order}u{width}").tobytes())


# --- finding and changing JPEG segments ---------------------------------------------------------


def _segments(stream: bytes) -> list[tuple[int, int, int]]:
    """(position, marker, length) of each segment up to and including SOS."""
    found, position = [], 2
    while position + 4 <= len(stream) and stream[position] == 0xFF:
        marker = stream[position + 1]
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        found.append((position, marker, length))
        if marker == 0xDA:
            break
        position += 2 + length
    return found


def _scan(stream: bytes) -> tuple[int, int]:
    """(first byte of compressed data, position of the last end-of-image marker)."""
    for position, marker, length in _segments(stream):
        if marker == 0xDA:
            return position + 2 + length, stream.rfind(b"\xff\xd9")
    raise ValueError("no scan")


def _patch(stream: bytes, at: int, data: bytes) -> bytes:
    return stream[:at] + data + stream[at + len(data) :]


def on_tile(change: Callable[[bytes, np.random.Generator], bytes]) -> Damage:
    return lambda tables, tile, rng: (tables, change(tile, rng))


def on_scan(change: Callable[[bytes, int, int, np.random.Generator], bytes]) -> Damage:
    def damage(tables, tile, rng):
        start, end = _scan(tile)
        return tables, change(tile, start, end, rng)

    return damage


def on_segment(marker: int, change: Callable, nth: int = 0) -> Damage:
    """Damage the ``nth`` segment ``marker`` wherever it is (shared tables first)."""

    def damage(tables, tile, rng):
        for where in ("tables", "tile"):
            stream = tables if where == "tables" else tile
            if stream is None:
                continue
            found = [s for s in _segments(stream) if s[1] == marker]
            if len(found) > nth:
                changed = change(stream, *found[nth], rng)
                return (changed, tile) if where == "tables" else (tables, changed)
        return None  # this layout has no such segment

    return damage


def _bit_flip(tile, start, end, rng):
    at = int(rng.integers(start, end))
    return _patch(tile, at, bytes([tile[at] ^ (1 << int(rng.integers(0, 8)))]))


def _random_byte(tile, start, end, rng):
    return _patch(tile, int(rng.integers(start, end)), bytes([int(rng.integers(0, 256))]))


def _zero_run(tile, start, end, rng):
    at = int(rng.integers(start, max(start + 1, end - 40)))
    return _patch(tile, at, bytes(int(rng.integers(1, 40))))


def _find_then(pattern: bytes, change: Callable[[bytes, int], bytes]):
    def apply(tile, start, end, rng):
        at = tile.find(pattern, start, end)
        return change(tile, at) if at >= 0 else tile

    return apply


def _length(value_of: Callable[[int], int]):
    return lambda s, p, m, length, r: _patch(s, p + 2, value_of(length).to_bytes(2, "big"))


DAMAGES: dict[str, Damage] = {
    # the whole tile
    "random bytes": on_tile(lambda s, r: r.bytes(len(s))),
    "random bytes after SOI": on_tile(lambda s, r: s[:2] + r.bytes(len(s) - 2)),
    "missing SOI": on_tile(lambda s, r: s[2:]),
    "two SOIs": on_tile(lambda s, r: b"\xff\xd8" + s),
    "truncated to 90%": on_tile(lambda s, r: s[: len(s) * 9 // 10]),
    "truncated to 50%": on_tile(lambda s, r: s[: len(s) // 2]),
    "truncated in the header": on_tile(lambda s, r: s[: _scan(s)[0] - 3]),
    "truncated after SOS": on_tile(lambda s, r: s[: _scan(s)[0]]),
    "early EOI": on_tile(lambda s, r: s[: len(s) * 6 // 10] + b"\xff\xd9"),
    "no EOI": on_tile(lambda s, r: s[:-2]),
    "half an EOI": on_tile(lambda s, r: s[:-1]),
    "zeroed tail with its EOI": on_tile(lambda s, r: s[: len(s) * 6 // 10] + bytes(len(s) - len(s) * 6 // 10)),
    "garbage after EOI": on_tile(lambda s, r: s + r.bytes(64)),
    "zeros after EOI": on_tile(lambda s, r: s + bytes(64)),
    # the compressed scan
    "random scan": on_scan(lambda s, a, b, r: s[:a] + r.bytes(b - a) + s[b:]),
    "zeroed scan": on_scan(lambda s, a, b, r: s[:a] + bytes(b - a) + s[b:]),
    "zeroed middle third of the scan": on_scan(lambda s, a, b, r: _patch(s, a + (b - a) // 3, bytes((b - a) // 3))),
    "EOI inside the scan": on_scan(lambda s, a, b, r: _patch(s, (a + b) // 2, b"\xff\xd9")),
    "DHT marker inside the scan": on_scan(lambda s, a, b, r: _patch(s, (a + b) // 2, b"\xff\xc4")),
    "RST0 inside the scan": on_scan(lambda s, a, b, r: _patch(s, (a + b) // 2, b"\xff\xd0")),
    "broken byte stuffing": on_scan(_find_then(b"\xff\x00", lambda s, i: _patch(s, i, b"\xff\x01"))),
    "fill bytes before EOI": on_scan(lambda s, a, b, r: s[:b] + b"\xff\xff\xff" + s[b:]),
    **{f"bit flip {k}": on_scan(_bit_flip) for k in range(8)},
    **{f"random byte {k}": on_scan(_random_byte) for k in range(4)},
    **{f"zero run {k}": on_scan(_zero_run) for k in range(4)},
    # SOF
    "SOF height 0": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 5, b"\0\0")),
    "SOF taller than the data": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 5, (int.from_bytes(s[p + 5 : p + 7], "big") + 16).to_bytes(2, "big"))),
    "SOF narrower than the tile": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 7, (int.from_bytes(s[p + 7 : p + 9], "big") - 16).to_bytes(2, "big"))),
    "SOF precision 12": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 4, b"\x0c")),
    "SOF one component": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 9, b"\x01")),
    "SOF four components": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 9, b"\x04")),
    "SOF bad sampling": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 11, b"\x33")),
    "SOF quantization table 3": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 12, b"\x03")),
    "SOF length short": on_segment(0xC0, _length(lambda n: n - 3)),
    "SOF made progressive": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 1, b"\xc2")),
    "SOF made lossless": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 1, b"\xc3")),
    "SOF zeroed": on_segment(0xC0, lambda s, p, m, n, r: _patch(s, p + 2, bytes(n))),
    # SOS
    "SOS two components": on_segment(0xDA, lambda s, p, m, n, r: _patch(s, p + 4, b"\x02")),
    "SOS unknown component": on_segment(0xDA, lambda s, p, m, n, r: _patch(s, p + 5, b"\x09")),
    "SOS bad table ids": on_segment(0xDA, lambda s, p, m, n, r: _patch(s, p + 6, b"\x55")),
    "SOS spectral selection": on_segment(0xDA, lambda s, p, m, n, r: _patch(s, p + n - 1, b"\x05\x20")),
    "SOS successive approximation": on_segment(0xDA, lambda s, p, m, n, r: _patch(s, p + n + 1, b"\x11")),
    "SOS length long": on_segment(0xDA, _length(lambda n: n + 4)),
    "SOS length short": on_segment(0xDA, _length(lambda n: n - 2)),
    "SOS zeroed": on_segment(0xDA, lambda s, p, m, n, r: _patch(s, p + 2, bytes(n))),
    "SOS marker destroyed": on_segment(0xDA, lambda s, p, m, n, r: _patch(s, p, b"\0\0")),
    # DHT
    "DHT counts overflow": on_segment(0xC4, lambda s, p, m, n, r: _patch(s, p + 5, b"\xff" * 4)),
    "DHT bad class": on_segment(0xC4, lambda s, p, m, n, r: _patch(s, p + 4, b"\x25")),
    "DHT length short": on_segment(0xC4, _length(lambda n: n - 5)),
    "DHT values zeroed": on_segment(0xC4, lambda s, p, m, n, r: _patch(s, p + 21, bytes(n - 19)), nth=1),
    "DHT counts shifted": on_segment(0xC4, lambda s, p, m, n, r: _patch(s, p + 5, s[p + 6 : p + 21] + b"\0"), nth=1),
    "DHT removed": on_segment(0xC4, lambda s, p, m, n, r: s[:p] + s[p + 2 + n :]),
    # DQT
    "DQT bad precision": on_segment(0xDB, lambda s, p, m, n, r: _patch(s, p + 4, b"\x20")),
    "DQT bad table id": on_segment(0xDB, lambda s, p, m, n, r: _patch(s, p + 4, b"\x07")),
    "DQT length short": on_segment(0xDB, _length(lambda n: n - 10)),
    "DQT zero values": on_segment(0xDB, lambda s, p, m, n, r: _patch(s, p + 5, bytes(64))),
    "DQT removed": on_segment(0xDB, lambda s, p, m, n, r: s[:p] + s[p + 2 + n :]),
    # restart markers (the restart layout)
    "restart markers out of order": on_scan(_find_then(b"\xff\xd1", lambda s, i: _patch(s, i, b"\xff\xd3"))),
    "restart marker removed": on_scan(_find_then(b"\xff\xd2", lambda s, i: s[:i] + s[i + 2 :])),
    "bytes before a restart marker": on_scan(_find_then(b"\xff\xd1", lambda s, i: s[:i] + b"\x12\x34" + s[i:])),
    "DRI interval 0": on_segment(0xDD, lambda s, p, m, n, r: _patch(s, p + 4, b"\0\0")),
    "DRI interval changed": on_segment(0xDD, lambda s, p, m, n, r: _patch(s, p + 4, b"\0\x07")),
}  # fmt: skip
