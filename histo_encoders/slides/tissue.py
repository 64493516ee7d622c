"""Where the tissue is: a boolean mask from a low-resolution view, and per-tile tissue fractions.

The mask is computed at ``mask_mpp`` (8 um/px by default, about 32x below a 0.25 um/px scan) from
the coarsest pyramid level at least that fine, so a whole slide costs one small read. Two
features are offered: grayscale darkness thresholded by Otsu (the tiling of Dehaene et al. 2020)
or HSV saturation (as CLAM does; it ignores grey dust and shadows). Either way a threshold floor
keeps plain glass from being split in two by Otsu when a slide holds no tissue at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from histo_encoders.slides.slide import Slide


@dataclass(frozen=True)
class TissueSettings:
    """How tissue is found. Sizes are in mask pixels (one mask pixel = ``mask_mpp`` microns).

    method: "otsu" thresholds grayscale darkness (255 - gray), "saturation" HSV saturation;
        both on a 0..255 scale where tissue is the high side.
    mask_mpp: resolution of the mask in um/px.
    threshold: fixed threshold on that scale; None picks one per slide with Otsu's method.
    threshold_floor: the threshold never goes below this, so glass with a little noise
        (darkness or saturation under ~20) is never tissue, even on a blank slide.
    median_size: median filter width applied to the feature before thresholding (removes specks).
    closing_radius: morphological closing radius, joins tissue broken by pale regions.
    dilation_radius: extra dilation after closing, keeps tile edges at the tissue border.
    min_object_area: connected regions smaller than this many mask pixels are dropped.
    min_tissue: default fraction of a tile that must be tissue for the tile to be kept
        (0.6, as in the paper's tiling).
    """

    method: Literal["otsu", "saturation"] = "otsu"
    mask_mpp: float = 8.0
    threshold: float | None = None
    threshold_floor: float = 20.0
    median_size: int = 7
    closing_radius: int = 2
    dilation_radius: int = 0
    min_object_area: int = 16
    min_tissue: float = 0.6

    def __post_init__(self) -> None:
        if self.method not in ("otsu", "saturation"):
            raise ValueError(f"method must be 'otsu' or 'saturation', got {self.method!r}")
        if self.mask_mpp <= 0:
            raise ValueError(f"mask_mpp must be positive, got {self.mask_mpp}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue is a fraction in [0, 1], got {self.min_tissue}")


@dataclass(frozen=True, eq=False)
class TissueMask:
    """A boolean tissue mask; mask pixel (row, col) covers level-0 pixels from
    ``(col * downsample, row * downsample)`` over ``downsample`` pixels each way."""

    mask: np.ndarray
    downsample: float
    threshold: float = float("nan")

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the slide's area that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def detect_tissue(slide: Slide, settings: TissueSettings | None = None) -> TissueMask:
    """Find tissue on a low-resolution view of ``slide``.

    Returns a :class:`TissueMask`; a slide with no tissue gives an all-False mask, not an error.
    Raises SlideReadError if the low-resolution level cannot be decoded.
    """
    settings = settings or TissueSettings()
    downsample = max(1.0, settings.mask_mpp / slide.info.mpp)
    pixels = slide.read_scaled(downsample)
    feature = _feature(pixels, settings.method)
    if settings.median_size > 1:
        feature = ndimage.median_filter(feature, size=settings.median_size, mode="nearest")
    threshold = settings.threshold if settings.threshold is not None else otsu_threshold(feature)
    threshold = max(threshold, settings.threshold_floor)
    mask = _clean(feature > threshold, settings)
    return TissueMask(mask=mask, downsample=downsample, threshold=float(threshold))


def tissue_fraction(
    tissue_mask: TissueMask, coords: np.ndarray, tile_size_level0: float
) -> np.ndarray:
    """Fraction (N,) of each square tile that is tissue, exact for fractional mask pixels.

    ``coords`` are (N, 2) level-0 top-left (x, y); ``tile_size_level0`` the tile side in level-0
    pixels. Uses an integral image, so each tile costs O(1); parts outside the mask count as glass.
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    integral = _integral_image(tissue_mask.mask)
    scale = 1.0 / tissue_mask.downsample
    x0, y0 = coords[:, 0] * scale, coords[:, 1] * scale
    side = tile_size_level0 * scale
    area = (
        _integral_at(integral, x0 + side, y0 + side)
        - _integral_at(integral, x0, y0 + side)
        - _integral_at(integral, x0 + side, y0)
        + _integral_at(integral, x0, y0)
    )
    return np.clip(area / (side * side), 0.0, 1.0)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold on 0..255 values: ``values > threshold`` is the brighter class."""
    histogram = np.bincount(np.clip(values, 0, 255).astype(np.uint8).ravel(), minlength=256)
    histogram = histogram.astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = sum_low / weight_low
        mean_high = (sum_low[-1] - sum_low) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between = np.nan_to_num(between, nan=-1.0)
    if between.max() <= 0:  # one grey level only: nothing to separate
        return float(levels[histogram > 0].max(initial=0.0))
    # Every threshold inside an empty gap of the histogram scores the same: take the gap's middle.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-12))
    return float(best[0] + best[-1]) / 2


def _feature(pixels: np.ndarray, method: str) -> np.ndarray:
    """0..255 uint8 map where tissue is high: darkness or HSV saturation."""
    rgb = pixels.astype(np.float32)
    if method == "otsu":
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return np.clip(255.0 - gray, 0, 255).astype(np.uint8)
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1.0) * 255.0, 0.0)
    return saturation.astype(np.uint8)


def _clean(mask: np.ndarray, settings: TissueSettings) -> np.ndarray:
    """Close gaps, optionally dilate, and drop connected regions that are too small."""
    if settings.closing_radius > 0:
        # Pad so closing does not erode tissue that touches the slide's border.
        pad = settings.closing_radius
        padded = np.pad(mask, pad, mode="edge")
        padded = ndimage.binary_closing(padded, structure=_disk(settings.closing_radius))
        mask = padded[pad:-pad, pad:-pad]
    if settings.dilation_radius > 0:
        mask = ndimage.binary_dilation(mask, structure=_disk(settings.dilation_radius))
    if settings.min_object_area > 1 and mask.any():
        labels, count = ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        keep = sizes >= settings.min_object_area
        keep[0] = False
        mask = keep[labels]
    return mask.astype(bool)


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius


def _integral_image(mask: np.ndarray) -> np.ndarray:
    """(H + 1, W + 1) cumulative sums with a zero first row and column."""
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.float64), axis=1)
    return integral


def _integral_at(integral: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tissue area in [0, x) x [0, y) mask pixels for fractional x, y.

    The integral of a piecewise-constant mask is bilinear inside each pixel, so bilinear
    interpolation of the integral image is exact, not an approximation.
    """
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    x = np.clip(x, 0.0, width)
    y = np.clip(y, 0.0, height)
    col = np.minimum(np.floor(x).astype(np.int64), max(width - 1, 0))
    row = np.minimum(np.floor(y).astype(np.int64), max(height - 1, 0))
    fx, fy = x - col, y - row
    top = integral[row, col] * (1 - fx) + integral[row, col + 1] * fx
    bottom = integral[row + 1, col] * (1 - fx) + integral[row + 1, col + 1] * fx
    return top * (1 - fy) + bottom * fy


def boxes_to_mask(
    shape: tuple[int, int], boxes: Sequence[tuple[int, int, int, int]], downsample: float
) -> TissueMask:
    """A mask with level-0 boxes (x0, y0, x1, y1) set: ground truth for tests and demos."""
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        rows = slice(round(y0 / downsample), round(y1 / downsample))
        cols = slice(round(x0 / downsample), round(x1 / downsample))
        mask[rows, cols] = True
    return TissueMask(mask=mask, downsample=downsample)
