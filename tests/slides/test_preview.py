"""write_preview: a PNG where tissue is tinted and every planned tile is outlined."""

from __future__ import annotations

import numpy as np
from PIL import Image

from histo_encoders.slides.preview import GRID_COLOUR, write_preview
from histo_encoders.slides.slide import open_slide
from histo_encoders.slides.tiling import plan_tiles
from histo_encoders.slides.tissue import detect_tissue
from histo_encoders.tools.synthetic import write_synthetic_slide


def test_preview_tints_tissue_and_outlines_tiles(tmp_path):
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
        path = write_preview(slide, mask, grid, tmp_path / "out" / "preview.png", max_size=256)
    assert len(grid) == 4  # 256 px level-0 tiles over the 512 px box
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape == (256, 256, 3)
    # Tile (256, 256) level-0 -> (64, 64) in the preview: its corner is outlined in the grid colour.
    np.testing.assert_array_equal(image[64, 64], GRID_COLOUR)
    np.testing.assert_array_equal(image[64, 100], GRID_COLOUR)
    # Inside a tile the tissue is tinted: green now exceeds red, which pink H&E never shows.
    inside = image[20:40, 20:40].reshape(-1, 3).mean(axis=0)
    glass = image[200:250, 200:250].reshape(-1, 3).mean(axis=0)
    assert inside[1] > inside[0]
    assert glass.min() > 220  # glass stays untinted and unoutlined


def test_preview_without_mask_or_grid_is_the_thumbnail(tmp_path):
    written = write_synthetic_slide(tmp_path / "s.tiff", width=512, height=256, downsamples=(1,))
    with open_slide(written.path) as slide:
        path = write_preview(slide, None, None, tmp_path / "plain.png", max_size=128)
        thumb, _ = slide.thumbnail(128)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), thumb)
