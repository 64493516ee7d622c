"""What the benchmark compares the pipeline's tile supply with: the field's usual loader and the
floor set by JPEG decoding alone.

The field's loader is a CLAM-style Dataset calling OpenSlide ``read_region`` per tile, PIL
resize, ToTensor/Normalize, batched by a DataLoader (0 or more worker processes). The decode
floor decodes every level-0 stored tile once, with the bytes read beforehand.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from histo_encoders.readers.tiff_layout import RawTileSource, open_tiff_level
from histo_encoders.slides import SlideInfo, TileGrid
from histo_encoders.tools.timing import Stopwatch


def openslide_loop(
    path: str | Path,
    grid: TileGrid,
    indices: np.ndarray,
    *,
    workers: int,
    batch_size: int,
    normalize: tuple[tuple[float, ...], tuple[float, ...]],
) -> tuple[int, Stopwatch]:
    """Deliver ``indices`` as normalized float batches the field's way; (tiles, stopwatch)."""
    dataset = _ClamStyleTiles(
        str(path), grid.coords[indices], grid.level, grid.read_size, grid.tile_size, normalize
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    with Stopwatch() as watch:  # worker start-up included, as users pay it
        count = sum(len(batch) for batch in loader)
    return count, watch


def decode_floor(path: str | Path, info: SlideInfo, threads: int) -> tuple[int, str, Stopwatch]:
    """Decode every level-0 stored tile once with ``threads`` threads; (tiles, codec, watch)."""
    level = open_tiff_level(path, tuple(info.level_dimensions[0]))
    source = RawTileSource(path, level)
    try:
        data = [source.read(index) for index in range(level.tile_count)]
    finally:
        source.close()

    def decode(index: int) -> None:
        if data[index] is not None:
            level.decode(data[index], index, jpegtables=level.jpegtables)

    with ThreadPoolExecutor(threads) as pool, Stopwatch() as watch:
        for _ in pool.map(decode, range(level.tile_count)):
            pass
    return level.tile_count, level.codec, watch


class _ClamStyleTiles(Dataset):
    """What CLAM-style pipelines do per tile; opens OpenSlide lazily in each worker."""

    def __init__(
        self,
        path: str,
        coords: np.ndarray,
        level: int,
        read_size: int,
        tile_size: int,
        normalize: tuple[tuple[float, ...], tuple[float, ...]],
    ):
        from torchvision import transforms

        self.path = path
        self.coords = np.asarray(coords)
        self.level = level
        self.read_size = read_size
        self.tile_size = tile_size
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(*normalize)]
        )
        self._slide: openslide.OpenSlide | None = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._slide is None:
            self._slide = openslide.OpenSlide(self.path)
        x, y = (int(v) for v in self.coords[index])
        size = (self.read_size, self.read_size)
        image = self._slide.read_region((x, y), self.level, size).convert("RGB")
        if self.read_size != self.tile_size:
            image = image.resize((self.tile_size, self.tile_size), Image.Resampling.BOX)
        return self.transform(image)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_slide": None}
