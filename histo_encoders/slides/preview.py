"""A PNG to check a slide's tiling by eye: thumbnail, tissue mask tinted, tile grid outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from histo_encoders.slides.slide import Slide
from histo_encoders.slides.tiling import TileGrid
from histo_encoders.slides.tissue import TissueMask

TISSUE_TINT = (0, 170, 90)  # green: absent from H&E, so the tint stands out
TINT_ALPHA = 0.35
GRID_COLOUR = (20, 60, 220)


def write_preview(
    slide: Slide,
    tissue_mask: TissueMask | None,
    grid: TileGrid | None,
    path: str | Path,
    *,
    max_size: int = 1024,
) -> Path:
    """Write ``path`` (PNG): the slide's thumbnail (longer side <= ``max_size``), tissue tinted
    green, each planned tile outlined in blue. Returns the path written.

    Raises SlideReadError if the thumbnail cannot be read.
    """
    path = Path(path)
    pixels, downsample = slide.thumbnail(max_size)
    if tissue_mask is not None:
        pixels = _tint(pixels, tissue_mask)
    image = Image.fromarray(pixels)
    if grid is not None:
        _outline_tiles(image, grid, downsample)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _tint(pixels: np.ndarray, tissue_mask: TissueMask) -> np.ndarray:
    height, width = pixels.shape[:2]
    # Nearest neighbour keeps the mask's blocks honest: the preview shows what tiling used.
    mask_image = Image.fromarray(tissue_mask.mask.astype(np.uint8) * 255)
    mask = np.asarray(mask_image.resize((width, height), Image.Resampling.NEAREST)) > 0
    tinted = pixels.astype(np.float32)
    tinted[mask] = (1 - TINT_ALPHA) * tinted[mask] + TINT_ALPHA * np.array(TISSUE_TINT)
    return np.clip(np.rint(tinted), 0, 255).astype(np.uint8)


def _outline_tiles(image: Image.Image, grid: TileGrid, downsample: float) -> None:
    draw = ImageDraw.Draw(image)
    side = grid.tile_size_level0 / downsample
    for x, y in grid.coords / downsample:
        draw.rectangle([x, y, x + side - 1, y + side - 1], outline=GRID_COLOUR, width=1)
