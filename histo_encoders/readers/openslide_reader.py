"""The reference tile reader: OpenSlide ``read_region`` at the grid's level, then resize_tile.

It reads any format OpenSlide reads (and plain images through the same Slide wrapper). A failed
read is retried once on a freshly opened handle, because OpenSlide keeps a handle broken after
any error; a second failure raises SlideReadError for the slide, never a tile of garbage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from histo_encoders.errors import SlideReadError
from histo_encoders.readers.base import ReaderReport
from histo_encoders.readers.resize import resize_tile
from histo_encoders.slides.slide import Slide, SlideInfo
from histo_encoders.slides.tiling import TileGrid


class OpenSlideReader:
    """Tile reader over :class:`~histo_encoders.slides.slide.Slide`; picklable, opens lazily."""

    streams = False  # read by worker processes, a batch at a time, through read_tiles

    def __init__(
        self, path: str | Path, info: SlideInfo, grid: TileGrid, *, selection: str | None = None
    ) -> None:
        self.path = Path(path)
        self.info = info
        self.grid = grid
        self.selection = selection
        self.name = "openslide" if info.backend == "openslide" else "image"
        self._slide: Slide | None = None

    def describe(self) -> ReaderReport:
        """Provenance: ``read_region`` per tile at the grid's level, and why this reader."""
        return ReaderReport(
            self.name, f"{self.name}:read_region", self.selection, {"level": self.grid.level}
        )

    def __getstate__(self) -> dict:
        # An open OpenSlide handle cannot cross a process boundary: the worker opens its own.
        state = self.__dict__.copy()
        state["_slide"] = None
        return state

    def read_tiles(self, indices: Sequence[int]) -> np.ndarray:
        """Return (B, tile_size, tile_size, 3) uint8 tiles for grid rows ``indices``.

        Raises SlideReadError (from the OpenSlide error) if a region fails twice, and
        IndexError for an index outside the grid.
        """
        size = self.grid.tile_size
        tiles = np.empty((len(indices), size, size, 3), dtype=np.uint8)
        for slot, index in enumerate(indices):
            tiles[slot] = self.read_tile(int(index))
        return tiles

    def read_tile(self, index: int) -> np.ndarray:
        """One (tile_size, tile_size, 3) uint8 tile, retried once on a reopened slide."""
        x, y = (int(v) for v in self.grid.coords[index])
        try:
            region = self._read_region(x, y)
        except SlideReadError:
            self._reopen()
            try:
                region = self._read_region(x, y)
            except SlideReadError as error:
                raise SlideReadError(
                    self.path,
                    f"tile {index} at level-0 ({x}, {y}) could not be decoded, even after "
                    f"reopening the slide: {error.__cause__ or error}. The file is corrupt "
                    "there; re-export or re-scan it, or leave the slide out of the run.",
                ) from error
        return resize_tile(region, self.grid.tile_size)

    def close(self) -> None:
        """Close the slide; a later read opens it again."""
        if self._slide is not None:
            self._slide.close()
            self._slide = None

    def _read_region(self, x: int, y: int) -> np.ndarray:
        size = (self.grid.read_size, self.grid.read_size)
        return self._open().read_region((x, y), self.grid.level, size)

    def _open(self) -> Slide:
        if self._slide is None:
            self._slide = Slide.from_info(self.info)
        return self._slide

    def _reopen(self) -> None:
        self.close()
        self._open()
