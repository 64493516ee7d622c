"""A PNG to check a slide's tiling by eye, fit for a figure: the thumbnail in its own colours,
tissue outlined, every planned tile outlined, a scale bar, and a legend that says how many tiles
were cut at which resolution (or that no tissue was found)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from histo_encoders.slides.slide import Slide
from histo_encoders.slides.tiling import TileGrid
from histo_encoders.slides.tissue import TissueMask

TISSUE_COLOUR = (0, 150, 70)  # green: absent from H&E, so the outline stands out
GLASS_GREY = (200, 200, 200)
GLASS_DIM = 0.35  # glass is greyed this much; tissue keeps its own H&E colours
GRID_COLOUR = (20, 60, 220)
NOTE_COLOUR = (190, 20, 20)
TEXT_COLOUR = (20, 20, 20)
_LEGEND_WIDTH = 520  # px: the legend's text fits, whatever the thumbnail's width
_FONT_SIZE = 14
_PAD = 8


def write_preview(
    slide: Slide,
    tissue_mask: TissueMask | None,
    grid: TileGrid | None,
    path: str | Path,
    *,
    max_size: int = 1024,
) -> Path:
    """Write ``path`` (PNG): the slide's thumbnail (longer side <= ``max_size``) at the top
    left, glass greyed around the outlined tissue, each planned tile outlined in blue, a scale
    bar, and a legend below (tile count, tile size and resolution, or "no tissue found").
    Returns the path written.

    Raises SlideReadError if the thumbnail cannot be read.
    """
    path = Path(path)
    pixels, downsample = slide.thumbnail(max_size)
    if tissue_mask is not None:
        pixels = _grey_glass(pixels, _mask_at(tissue_mask, pixels.shape[:2]))
    image = Image.fromarray(pixels)
    if tissue_mask is not None:
        _outline_tissue(image, _mask_at(tissue_mask, pixels.shape[:2]))
    if grid is not None:
        _outline_tiles(image, grid, downsample)
    um_per_px = slide.info.mpp * downsample
    if grid is not None and not len(grid):
        _centre_note(image, "No tissue found")
    _scale_bar(image, um_per_px)
    canvas = _with_legend(image, _legend_lines(slide, tissue_mask, grid, um_per_px))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def _font(size: int = _FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _mask_at(tissue_mask: TissueMask, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    # Nearest neighbour keeps the mask's blocks honest: the preview shows what tiling used.
    mask_image = Image.fromarray(tissue_mask.mask.astype(np.uint8) * 255)
    return np.asarray(mask_image.resize((width, height), Image.Resampling.NEAREST)) > 0


def _grey_glass(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = pixels.astype(np.float32)
    glass = ~mask
    out[glass] = (1 - GLASS_DIM) * out[glass] + GLASS_DIM * np.array(GLASS_GREY)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _erode(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def _outline_tissue(image: Image.Image, mask: np.ndarray) -> None:
    edge = mask & ~_erode(_erode(mask))  # a 2 px line just inside the tissue's border
    pixels = np.array(image)
    pixels[edge] = TISSUE_COLOUR
    image.paste(Image.fromarray(pixels))


def _outline_tiles(image: Image.Image, grid: TileGrid, downsample: float) -> None:
    draw = ImageDraw.Draw(image)
    side = grid.tile_size_level0 / downsample
    for x, y in grid.coords / downsample:
        draw.rectangle([x, y, x + side - 1, y + side - 1], outline=GRID_COLOUR, width=1)


def _centre_note(image: Image.Image, text: str) -> None:
    font = _font(max(12, image.width // 20))
    _, _, right, bottom = font.getbbox(text)
    x, y = (image.width - right) // 2, (image.height - bottom) // 2
    draw = ImageDraw.Draw(image)
    draw.rectangle([x - 8, y - 6, x + right + 8, y + bottom + 6], fill=(255, 255, 255))
    draw.text((x, y), text, fill=NOTE_COLOUR, font=font)


def nice_length(um_per_px: float, target_px: float) -> float:
    """A round length in microns (1, 2 or 5 times a power of ten) near ``target_px`` pixels."""
    raw = um_per_px * max(target_px, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    return max((m * power for m in (1, 2, 5, 10) if m * power <= raw), default=power)


def _format_length(um: float) -> str:
    return f"{um / 1000:g} mm" if um >= 1000 else f"{um:g} um"


def _scale_bar(image: Image.Image, um_per_px: float) -> None:
    width, height = image.size
    length_um = nice_length(um_per_px, width / 5)
    length_px = max(1, round(length_um / um_per_px))
    font = _font(max(9, min(_FONT_SIZE, height // 12)))
    label = _format_length(length_um)
    bar_h = max(2, height // 150)
    label_h = font.getbbox(label)[3]
    x0, y1 = _PAD, height - _PAD
    y0 = y1 - bar_h
    draw = ImageDraw.Draw(image)
    box_w = max(length_px, font.getbbox(label)[2]) + 8
    draw.rectangle([x0 - 4, y0 - label_h - 8, x0 + box_w - 4, y1 + 4], fill=(255, 255, 255))
    draw.rectangle([x0, y0, x0 + length_px - 1, y1 - 1], fill=TEXT_COLOUR)
    draw.text((x0, y0 - label_h - 4), label, fill=TEXT_COLOUR, font=font)


def _legend_lines(
    slide: Slide, tissue_mask: TissueMask | None, grid: TileGrid | None, um_per_px: float
) -> list[tuple[str, tuple[int, int, int], tuple[int, int, int] | None]]:
    """(text, text colour, swatch colour) per legend line."""
    info = slide.info
    lines: list[tuple[str, tuple[int, int, int], tuple[int, int, int] | None]] = [
        (
            f"{info.path.name}: {info.dimensions[0]} x {info.dimensions[1]} px at "
            f"{info.mpp:.4g} um/px ({info.mpp_source})",
            TEXT_COLOUR,
            None,
        )
    ]
    if tissue_mask is not None:
        lines.append(("tissue (outlined; glass greyed)", TEXT_COLOUR, TISSUE_COLOUR))
    if grid is not None and len(grid):
        lines.append(
            (
                f"{len(grid)} tiles of {grid.tile_size} px at {grid.target_mpp:g} um/px "
                f"({grid.tile_size_level0:.1f} px at level 0; read at level {grid.level})",
                TEXT_COLOUR,
                GRID_COLOUR,
            )
        )
    elif grid is not None:
        lines.append(
            (
                f"No tissue found: no {grid.tile_size} px tile at {grid.target_mpp:g} um/px "
                "reached the tissue threshold; nothing was embedded.",
                NOTE_COLOUR,
                None,
            )
        )
    lines.append((f"preview: {um_per_px:.3g} um per preview pixel", TEXT_COLOUR, None))
    return lines


def _with_legend(
    image: Image.Image,
    lines: list[tuple[str, tuple[int, int, int], tuple[int, int, int] | None]],
) -> Image.Image:
    font = _font()
    line_h = _FONT_SIZE + 6
    width = max(image.width, _LEGEND_WIDTH)
    wrapped = [
        (part, colour, swatch if i == 0 else None)
        for text, colour, swatch in lines
        for i, part in enumerate(_wrap(text, font, width - 3 * _PAD - line_h))
    ]
    canvas = Image.new("RGB", (width, image.height + _PAD * 2 + line_h * len(wrapped)), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = image.height + _PAD
    for text, colour, swatch in wrapped:
        if swatch is not None:
            draw.rectangle(
                [_PAD, y + 3, _PAD + line_h - 8, y + line_h - 5], outline=swatch, width=2
            )
        draw.text((_PAD + line_h, y), text, fill=colour, font=font)
        y += line_h
    return canvas


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if current and font.getbbox(candidate)[2] > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current] if current else lines
