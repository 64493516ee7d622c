"""detect_tissue finds planted tissue; tissue_fraction is exact and per-tile O(1)."""

from __future__ import annotations

import numpy as np
import pytest

from histo_encoders.slides.slide import open_slide
from histo_encoders.slides.tissue import (
    TissueMask,
    TissueSettings,
    boxes_to_mask,
    detect_tissue,
    otsu_threshold,
    tissue_fraction,
)
from histo_encoders.tools.synthetic import write_synthetic_slide

BOX = (512, 384, 1536, 1152)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tissue")
    # A large box plus a speck of 24x24 px (6 um): too small to be a tissue region.
    written = write_synthetic_slide(
        folder / "s.svs",
        width=2048,
        height=1536,
        tissue_boxes=[BOX, (1800, 200, 1824, 224)],
        downsamples=(1, 4, 16),
    )
    return written.path


def _iou(mask: np.ndarray, expected: np.ndarray) -> float:
    return (mask & expected).sum() / (mask | expected).sum()


@pytest.mark.parametrize("method", ["otsu", "saturation"])
def test_mask_covers_the_planted_tissue_and_drops_specks(slide_path, method):
    with open_slide(slide_path) as slide:
        found = detect_tissue(slide, TissueSettings(method=method))
    assert found.downsample == pytest.approx(32.0)  # 8 um/px over a 0.25 um/px slide
    assert found.mask.shape == (48, 64)
    assert found.mask.dtype == bool
    expected = boxes_to_mask(found.mask.shape, [BOX], found.downsample).mask
    assert _iou(found.mask, expected) > 0.9
    assert not found.mask[:12, 52:].any()  # the speck near (1800, 200) was removed


def test_blank_slide_gives_an_empty_mask_not_an_error(tmp_path):
    written = write_synthetic_slide(tmp_path / "b.tiff", width=1024, height=1024, tissue_boxes=())
    with open_slide(written.path) as slide:
        for method in ("otsu", "saturation"):
            found = detect_tissue(slide, TissueSettings(method=method))
            assert not found.mask.any()
            assert found.tissue_fraction == 0.0


def test_fixed_threshold_overrides_otsu(slide_path):
    with open_slide(slide_path) as slide:
        nothing = detect_tissue(slide, TissueSettings(threshold=254))
    assert not nothing.mask.any()
    assert nothing.threshold == 254


def test_coarser_mask_mpp_gives_a_coarser_mask(slide_path):
    with open_slide(slide_path) as slide:
        found = detect_tissue(slide, TissueSettings(mask_mpp=16.0, median_size=3))
    assert found.downsample == pytest.approx(64.0)
    assert found.mask.shape == (24, 32)


def test_tissue_fraction_is_exact_for_fractional_tiles():
    rng = np.random.default_rng(1)
    mask = rng.random((20, 30)) > 0.5
    tissue = TissueMask(mask=mask, downsample=8.0)
    coords = np.stack([rng.integers(-40, 240, 200), rng.integers(-40, 160, 200)], axis=1)
    side = 37.0  # not a multiple of the mask pixel: tiles cut mask pixels in parts
    fractions = tissue_fraction(tissue, coords, side)
    # Brute force on a 1 level-0 px grid: a mask pixel is 8x8 level-0 pixels.
    fine = np.kron(mask, np.ones((8, 8), dtype=bool))
    padded = np.zeros((fine.shape[0] + 400, fine.shape[1] + 400), dtype=bool)
    padded[200:-200, 200:-200] = fine
    expected = [
        padded[y + 200 : y + 200 + 37, x + 200 : x + 200 + 37].mean() for x, y in coords.tolist()
    ]
    np.testing.assert_allclose(fractions, expected, atol=1e-9)


def test_tissue_fraction_full_and_empty():
    tissue = TissueMask(mask=np.ones((10, 10), dtype=bool), downsample=4.0)
    fractions = tissue_fraction(tissue, np.array([[0, 0], [20, 20], [36, 36], [100, 100]]), 8.0)
    np.testing.assert_allclose(fractions, [1.0, 1.0, 0.5 * 0.5, 0.0])


def test_otsu_threshold_splits_two_populations_in_the_middle_of_the_gap():
    values = np.concatenate([np.full(300, 15), np.full(100, 81)])
    assert otsu_threshold(values) == pytest.approx(47.5)


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="method"):
        TissueSettings(method="magic")
    with pytest.raises(ValueError, match="min_tissue"):
        TissueSettings(min_tissue=60)
