"""Tile readers: OpenSlide (the reference, any format) and raw TIFF tiles (decode once, fast).

``open_reader(path, info, grid)`` picks the TIFF reader when the slide is a TIFF-family file
(Aperio SVS, generic tiled TIFF) whose level pages, codec and tile positions it reproduces
exactly, and OpenSlide for everything else. The reader's ``describe()`` says which ran and why.

The readers' resize (:mod:`.resize`) and compiled loops (:mod:`.kernels`) live here because only
the readers use them.
"""

from histo_encoders._lazy import lazy_exports

_EXPORTS = {
    "ReaderReport": "base",
    "StreamingTileReader": "base",
    "TileReader": "base",
    "READER_KINDS": "choose",
    "ReaderKind": "choose",
    "open_reader": "choose",
    "OpenSlideReader": "openslide_reader",
    "resize_tile": "resize",
    "ReaderStats": "tiff_reader",
    "TiffReaderOptions": "tiff_reader",
    "TiffTileReader": "tiff_reader",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
