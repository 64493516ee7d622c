"""Heatmap of a trained model's tile scores (or attention) over the slide thumbnail, as a PNG.

Two panels of the same size (the slide, and the slide under the scores), a colorbar that says
what is shown (attention weights for attention models, tile scores otherwise), the slide's true
label and predicted probability in the title, and a scale bar when the resolution is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt
import numpy as np
import torch
from mpl_toolkits.axes_grid1 import make_axes_locatable
from torch import nn

from histo_encoders.errors import FeatureFileError
from histo_encoders.slides import open_slide

from .data import Bag, collate
from .train import resolve_device

# Attr names the feature writer may use for the tile side in level-0 pixels, most explicit first.
TILE_SIZE_ATTRS = ("tile_size_level0", "patch_size_level0")
# Models whose tile_scores are attention weights (the rest give per-tile scores).
ATTENTION_MODELS = ("DeepMIL", "TransformerMIL")


def score_label(models: Sequence[nn.Module]) -> str:
    """What ``tile_scores`` gives for these models, for the colorbar."""
    kinds = {
        getattr(m, "score_kind", None)
        or ("attention" if type(m).__name__ in ATTENTION_MODELS else "tile score")
        for m in models
    }
    kind = kinds.pop() if len(kinds) == 1 else "tile score"
    return f"{kind} (min-max scaled over the slide)"


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
    if "patch_size" in attrs and "downsample" in attrs:  # CLAM: the side at patch_level
        return float(attrs["patch_size"]) * float(np.ravel(attrs["downsample"])[0])
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
    *,
    label: str = "tile score (min-max scaled over the slide)",
    um_per_px: float | None = None,
) -> Path:
    """Write the thumbnail beside the same thumbnail overlaid with tile scores; returns the path.

    ``label`` names the colorbar; ``um_per_px`` (thumbnail pixels) draws a scale bar.
    """
    grid = score_grid(thumbnail.shape[:2], downsample, coords, tile_side_level0, scores)
    height, width = thumbnail.shape[:2]
    panel = 4.8
    fig, axes = plt.subplots(1, 2, figsize=(2 * panel + 1.2, panel * height / width + 0.9))
    axes[0].imshow(thumbnail)
    axes[1].imshow(thumbnail)
    shown = axes[1].imshow(grid, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    # Both panels give up the same strip on their right, so they stay the same size; the
    # colorbar lives in the second one's strip and is exactly as tall as the image.
    strips = [make_axes_locatable(ax).append_axes("right", size="4%", pad=0.08) for ax in axes]
    strips[0].axis("off")
    colorbar = fig.colorbar(shown, cax=strips[1])
    colorbar.set_label(label)
    axes[0].set_title("slide", fontsize=10)
    axes[1].set_title(label.split(" (")[0], fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        if um_per_px:
            _scale_bar(ax, width, height, um_per_px)
    fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _scale_bar(ax: Any, width: int, height: int, um_per_px: float) -> None:
    raw = um_per_px * width / 5
    power = 10 ** np.floor(np.log10(raw))
    length = max(m * power for m in (1, 2, 5, 10) if m * power <= raw)
    pixels = length / um_per_px
    x0, y0 = 0.04 * width, 0.95 * height
    ax.plot([x0, x0 + pixels], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
    text = f"{length / 1000:g} mm" if length >= 1000 else f"{length:g} µm"
    ax.text(
        x0,
        y0 - 0.02 * height,
        text,
        fontsize=8,
        va="bottom",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
    )


def heatmap_for_slide(
    models: Sequence[nn.Module],
    bag: Bag,
    slide_path: str | Path,
    path: str | Path,
    *,
    title: str = "",
    max_side: int = 1024,
    tile_side: float | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Score ``bag``'s tiles with ``models`` and draw them over ``slide_path``'s thumbnail.

    The title adds the slide's true label and the models' mean predicted probability.

    Raises:
        FeatureFileError: the bag's attrs give no level-0 tile size and ``tile_side`` is None,
            or the feature file has no coordinates.
        SlideOpenError: the slide cannot be opened.
    """
    if bag.coords is None:
        raise FeatureFileError(
            f"The features of {bag.slide_id} have no tile coordinates (a .pt file): a heatmap "
            "needs the .h5 file with `coords`."
        )
    side = tile_size_level0(bag.attrs, tile_side)
    scores = tile_scores(models, bag)
    thumbnail, downsample = read_thumbnail(slide_path, max_side)
    mpp = bag.attrs.get("slide_mpp")
    heading = "\n".join(t for t in (title, prediction_line(models, bag, class_names)) if t)
    return render_heatmap(
        thumbnail,
        downsample,
        bag.coords,
        side,
        scores,
        path,
        heading,
        label=score_label(models),
        um_per_px=float(mpp) * downsample if mpp else None,
    )


def prediction_line(
    models: Sequence[nn.Module], bag: Bag, class_names: Sequence[str] | None = None
) -> str:
    """ "true label: tumor, predicted P(tumor) = 0.93" (mean over ``models``)."""
    from .train import predict

    probs = np.mean([np.atleast_1d(predict(m, [bag])[0]) for m in models], axis=0)
    names = list(class_names) if class_names else None
    true = names[bag.label] if names and bag.label < len(names) else str(bag.label)
    if probs.size == 1:  # binary: the probability of the positive (second) class
        positive = names[1] if names and len(names) > 1 else "positive"
        return f"true label: {true}; predicted P({positive}) = {float(probs[0]):.2f}"
    best = int(np.argmax(probs))
    best_name = names[best] if names and best < len(names) else str(best)
    return f"true label: {true}; predicted {best_name} (P = {float(probs[best]):.2f})"
