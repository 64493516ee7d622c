"""Tile readers: OpenSlide (the reference, any format) and raw TIFF tiles (decode once, fast).

``open_reader(path, info, grid)`` picks the TIFF reader when the slide is a TIFF-family file
(Aperio SVS, generic tiled TIFF) whose level pages, codec and tile positions it reproduces
exactly, and OpenSlide for everything else. The reader's ``describe()`` says which ran and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from histo_encoders.errors import ReaderNotApplicableError
from histo_encoders.readers.base import TileReader
from histo_encoders.readers.openslide_reader import OpenSlideReader
from histo_encoders.readers.tiff_reader import TiffReaderOptions, TiffTileReader

ReaderKind = Literal["auto", "openslide", "tiff"]
READER_KINDS: tuple[str, ...] = ("auto", "openslide", "tiff")

__all__ = [
    "READER_KINDS",
    "OpenSlideReader",
    "ReaderKind",
    "TiffReaderOptions",
    "TiffTileReader",
    "TileReader",
    "describe_reader",
    "open_reader",
]


def open_reader(
    path: str | Path,
    info: Any,
    grid: Any,
    kind: ReaderKind = "auto",
    *,
    tiff_options: TiffReaderOptions | None = None,
) -> TileReader:
    """A tile reader for ``grid`` of the slide at ``path`` (``info`` from ``open_slide``).

    ``kind="auto"`` chooses the TIFF reader when it applies and OpenSlide otherwise (the
    reason is kept in ``describe_reader(reader)["selection"]``); "tiff" insists and raises
    ReaderNotApplicableError when it does not apply; "openslide" always uses OpenSlide.
    Raises ValueError for an unknown ``kind``.
    """
    if kind not in READER_KINDS:
        raise ValueError(f"unknown reader {kind!r}: choose one of {', '.join(READER_KINDS)}")
    if kind == "openslide":
        return _openslide(path, info, grid, "reader 'openslide' asked for")
    if getattr(info, "backend", "openslide") != "openslide":
        not_a_slide = ReaderNotApplicableError(str(path), "a plain image, not a tiled slide")
        if kind == "tiff":
            raise not_a_slide
        return _openslide(path, info, grid, f"tiff reader not applicable: {not_a_slide.reason}")
    try:
        return TiffTileReader(path, info, grid, tiff_options)
    except ReaderNotApplicableError as error:
        if kind == "tiff":
            raise
        return _openslide(path, info, grid, f"tiff reader not applicable: {error.reason}")


def describe_reader(reader: TileReader) -> dict[str, Any]:
    """Provenance of a reader: its ``describe()`` if it has one, else its name."""
    describe = getattr(reader, "describe", None)
    if describe is not None:
        return dict(describe())
    described = {"reader": reader.name, "decode_path": f"{reader.name}:read_region"}
    selection = getattr(reader, "selection_reason", None)
    if selection is not None:
        described["selection"] = selection
    return described


def _openslide(path: str | Path, info: Any, grid: Any, reason: str) -> OpenSlideReader:
    reader = OpenSlideReader(path, info, grid)
    # Recorded for provenance: why this slide did not get the TIFF reader.
    reader.selection_reason = reason
    return reader
