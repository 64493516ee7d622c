"""write_preview: the thumbnail in its own colours, tissue outlined, every planned tile outlined,
a scale bar and a legend; a note when no tissue was found."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histo_encoders.slides.preview import GRID_COLOUR, NOTE_COLOUR, nice_length, write_preview
from histo_encoders.slides.slide import open_slide
from histo_encoders.slides.tiling import plan_tiles
from histo_encoders.slides.tissue import detect_tissue
from histo_encoders.tools.synthetic import write_synthetic_slide


def test_preview_keeps_tissue_colours_outlines_tiles_and_adds_a_legend(tmp_path):
    written = write_synthetic_slide(
        tmp_path / "s.svs",
        width=1024,
        height=1024,
        downsamples=(1, 4),
        tissue_boxes=[(0, 0, 512, 512)],
    )
    with open_slide(written.path) as slide:
        mask = detect_tissue(slide)
        grid = plan_tiles(slide.info, 0.5, 128, tissue_mask=mask)
        thumb, _ = slide.thumbnail(256)
        path = write_preview(slide, mask, grid, tmp_path / "out" / "preview.png", max_size=256)
    assert len(grid) == 4  # 256 px level-0 tiles over the 512 px box
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # The thumbnail sits at the top left; the legend below it is wide enough to be read.
    assert image.shape[0] > 256 + 40 and image.shape[1] >= 256
    # Tile (256, 256) level-0 -> (64, 64) in the preview: its corner is outlined in the grid colour.
    np.testing.assert_array_equal(image[64, 64], GRID_COLOUR)
    np.testing.assert_array_equal(image[64, 100], GRID_COLOUR)
    # Inside a tile the tissue keeps its H&E colours exactly (no tint over it).
    np.testing.assert_array_equal(image[20:40, 20:40], thumb[20:40, 20:40])
    glass = image[150:180, 200:250].reshape(-1, 3)
    assert glass.min() > 180 and np.ptp(glass.mean(axis=0)) < 10  # greyed, not coloured
    legend = image[260:].reshape(-1, 3)
    assert (np.abs(legend - GRID_COLOUR).sum(axis=1) == 0).any()  # the tiles' swatch


def test_empty_slide_preview_says_no_tissue_found(tmp_path):
    written = write_synthetic_slide(tmp_path / "b.svs", width=512, height=512, tissue_boxes=())
    with open_slide(written.path) as slide:
        mask = detect_tissue(slide)
        grid = plan_tiles(slide.info, 0.5, 64, tissue_mask=mask)
        path = write_preview(slide, mask, grid, tmp_path / "b.png", max_size=256)
    assert len(grid) == 0
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (np.abs(image - NOTE_COLOUR).sum(axis=2) < 60).sum()
    assert red > 50  # the note, in the picture and in the legend


@pytest.mark.parametrize(
    ("um_per_px", "target_px", "expected"), [(1.0, 200, 200), (0.5, 230, 100), (8.0, 200, 1000)]
)
def test_scale_bar_lengths_are_round(um_per_px, target_px, expected):
    assert nice_length(um_per_px, target_px) == expected


def test_preview_without_mask_or_grid_is_the_thumbnail_and_a_legend(tmp_path):
    written = write_synthetic_slide(tmp_path / "s.tiff", width=512, height=256, downsamples=(1,))
    with open_slide(written.path) as slide:
        path = write_preview(slide, None, None, tmp_path / "plain.png", max_size=128)
        thumb, _ = slide.thumbnail(128)
    image = np.asarray(Image.open(path).convert("RGB"))
    # Everything but the scale bar's corner is the thumbnail.
    np.testing.assert_array_equal(image[:20, :128], thumb[:20, :])
