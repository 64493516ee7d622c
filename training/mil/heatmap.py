"""Heatmap of a trained model's tile scores (or attention) over the slide thumbnail, as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from histo_encoders.errors import FeatureFileError
from histo_encoders.slides import open_slide

from .data import Bag, collate
from .train import resolve_device

# Attr names the feature writer may use for the tile side in level-0 pixels, most explicit first.
TILE_SIZE_ATTRS = ("tile_size_level0", "patch_size_level0")


@torch.no_grad()
def tile_scores(models: Sequence[nn.Module], bag: Bag, device: str | None = None) -> np.ndarray:
    """Per-tile score of ``bag`` (``(N,)``), averaged over ``models`` (a fold ensemble).

    Chowder and the pooling baselines give the tile's score for the first output; ABMIL and the
    transformer give attention weights.
    """
    target = resolve_device(device)
    batch = collate([bag])
    features, mask = batch.features.to(target), batch.mask.to(target)
    scores = [m.eval().to(target).tile_scores(features, mask)[0].float().cpu() for m in models]
    return torch.stack(scores).mean(0).numpy()


def tile_size_level0(attrs: Mapping[str, Any], override: float | None = None) -> float:
    """Tile side in level-0 pixels from the feature file's attrs (or ``override``).

    Raises:
        FeatureFileError: the attrs do not record it and no override was given.
    """
    if override is not None:
        return float(override)
    for key in TILE_SIZE_ATTRS:
        if key in attrs:
            return float(attrs[key])
    raise FeatureFileError(
        f"The feature file's attrs record no tile size in level-0 pixels (looked for "
        f"{TILE_SIZE_ATTRS}; found {sorted(attrs)}). Pass the tile size explicitly."
    )


def read_thumbnail(slide_path: str | Path, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """A thumbnail of the slide (``(h, w, 3)`` uint8) and its downsample from level 0.

    Raises:
        SlideOpenError: the slide cannot be opened (and the other errors of ``open_slide``).
    """
    with open_slide(slide_path) as slide:
        width, height = slide.info.dimensions
        downsample = max(1.0, max(width, height) / max_side)
        image = slide.read_scaled(downsample)
    # read_scaled rounds the output size: report the downsample the image really has.
    return image, width / image.shape[1]


def score_grid(
    shape: tuple[int, int],
    downsample: float,
    coords: np.ndarray,
    tile_side_level0: float,
    scores: np.ndarray,
) -> np.ndarray:
    """Paint each tile's score (scaled to 0..1) into a ``shape`` grid; NaN where no tile lies."""
    grid = np.full(shape, np.nan, dtype=np.float32)
    span = float(scores.max() - scores.min())
    scaled = (scores - scores.min()) / span if span > 0 else np.full_like(scores, 0.5)
    side = max(1, round(tile_side_level0 / downsample))
    for (x, y), value in zip(coords, scaled, strict=True):
        col, row = int(x / downsample), int(y / downsample)
        grid[row : row + side, col : col + side] = value
    return grid


def render_heatmap(
    thumbnail: np.ndarray,
    downsample: float,
    coords: np.ndarray,
    tile_side_level0: float,
    scores: np.ndarray,
    path: str | Path,
    title: str = "",
) -> Path:
    """Write the thumbnail beside the same thumbnail overlaid with tile scores; returns the path."""
    grid = score_grid(thumbnail.shape[:2], downsample, coords, tile_side_level0, scores)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.5))
    axes[0].imshow(thumbnail)
    axes[1].imshow(thumbnail)
    shown = axes[1].imshow(grid, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="tile score (min-max scaled)")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap_for_slide(
    models: Sequence[nn.Module],
    bag: Bag,
    slide_path: str | Path,
    path: str | Path,
    *,
    title: str = "",
    max_side: int = 1024,
    tile_side: float | None = None,
) -> Path:
    """Score ``bag``'s tiles with ``models`` and draw them over ``slide_path``'s thumbnail.

    Raises:
        FeatureFileError: the bag's attrs give no level-0 tile size and ``tile_side`` is None.
        SlideOpenError: the slide cannot be opened.
    """
    side = tile_size_level0(bag.attrs, tile_side)
    scores = tile_scores(models, bag)
    thumbnail, downsample = read_thumbnail(slide_path, max_side)
    return render_heatmap(thumbnail, downsample, bag.coords, side, scores, path, title)
