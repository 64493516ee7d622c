"""Choosing a tile reader per slide: the TIFF reader where it reproduces OpenSlide's pixels, else
OpenSlide; the reason is kept in the reader's ``describe().selection``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from histo_encoders.errors import ReaderNotApplicableError
from histo_encoders.readers.base import TileReader
from histo_encoders.readers.openslide_reader import OpenSlideReader
from histo_encoders.readers.tiff_reader import TiffReaderOptions, TiffTileReader

ReaderKind = Literal["auto", "openslide", "tiff"]
READER_KINDS: tuple[str, ...] = ("auto", "openslide", "tiff")


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
    reason is kept in ``reader.describe().selection``); "tiff" insists and raises
    ReaderNotApplicableError when it does not apply; "openslide" always uses OpenSlide.
    Raises ValueError for an unknown ``kind``.
    """
    if kind not in READER_KINDS:
        raise ValueError(f"unknown reader {kind!r}: choose one of {', '.join(READER_KINDS)}")
    if kind == "openslide":
        return _openslide(path, info, grid, "reader 'openslide' asked for")
    if info.backend != "openslide":
        not_a_slide = ReaderNotApplicableError(str(path), "a plain image, not a tiled slide")
        if kind == "tiff":
            raise not_a_slide
        return _openslide(path, info, grid, f"tiff reader not applicable: {not_a_slide.reason}")
    selection = "reader 'tiff' asked for" if kind == "tiff" else "tiff reader applies"
    try:
        return TiffTileReader(path, info, grid, tiff_options, selection=selection)
    except ReaderNotApplicableError as error:
        if kind == "tiff":
            raise
        return _openslide(path, info, grid, f"tiff reader not applicable: {error.reason}")


def _openslide(path: str | Path, info: Any, grid: Any, reason: str) -> OpenSlideReader:
    # The reason is recorded for provenance: why this slide did not get the TIFF reader.
    return OpenSlideReader(path, info, grid, selection=reason)
