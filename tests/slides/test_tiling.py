"""plan_tiles: level choice, read size, exact level-0 steps, tissue filtering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histo_encoders.errors import TargetResolutionError
from histo_encoders.slides.slide import SlideInfo, open_slide
from histo_encoders.slides.tiling import plan_tiles
from histo_encoders.slides.tissue import TissueSettings, boxes_to_mask, detect_tissue
from histo_encoders.tools.synthetic import write_synthetic_slide


def _info(mpp: float, width: int = 20000, height: int = 15000, downsamples=(1, 4, 16)) -> SlideInfo:
    """Geometry of a slide without writing one: plan_tiles only needs the SlideInfo."""
    return SlideInfo(
        path=Path("virtual.svs"),
        dimensions=(width, height),
        level_count=len(downsamples),
        level_dimensions=tuple((width // d, height // d) for d in downsamples),
        level_downsamples=tuple(float(d) for d in downsamples),
        mpp=mpp,
        mpp_source="given",
        vendor="test",
        file_size=0,
        backend="openslide",
    )


def _steps(coords: np.ndarray) -> tuple[set[int], set[int]]:
    xs, ys = np.unique(coords[:, 0]), np.unique(coords[:, 1])
    return set(np.diff(xs).tolist()), set(np.diff(ys).tolist())


def test_half_micron_tiles_from_a_quarter_micron_slide_step_by_twice_the_tile():
    grid = plan_tiles(_info(0.25), target_mpp=0.5, tile_size=224)
    assert grid.level == 0  # level 1 is 1.0 um/px: too coarse for 0.5
    assert grid.read_size == 448
    assert grid.tile_size_level0 == 448.0
    assert _steps(grid.coords) == ({448}, {448})
    assert grid.coords.dtype == np.int64
    assert grid.coords.shape == (20000 // 448 * (15000 // 448), 2)


def test_slide_already_at_target_reads_tile_size_regions():
    grid = plan_tiles(_info(0.5, downsamples=(1, 4)), target_mpp=0.5, tile_size=224)
    assert (grid.level, grid.read_size, grid.tile_size_level0) == (0, 224, 224.0)
    assert _steps(grid.coords) == ({224}, {224})


@pytest.mark.parametrize(
    ("target", "level", "read_size", "step"),
    [(1.0, 1, 224, 896.0), (2.0, 1, 448, 1792.0), (4.0, 2, 224, 3584.0), (8.0, 2, 448, 7168.0)],
)
def test_coarse_targets_read_the_coarsest_fine_enough_level(target, level, read_size, step):
    # Levels at 0.25, 1.0 and 4.0 um/px: 2.0 and 8.0 have no level of their own.
    grid = plan_tiles(_info(0.25), target_mpp=target, tile_size=224)
    assert (grid.level, grid.read_size, grid.tile_size_level0) == (level, read_size, step)
    assert grid.level_mpp == pytest.approx(0.25 * 4**level)


def test_odd_scanner_mpp_keeps_the_exact_step_without_drift():
    grid = plan_tiles(_info(0.2528), target_mpp=0.5, tile_size=224)
    step = 224 * 0.5 / 0.2528
    assert grid.read_size == round(224 * 0.5 / 0.2528) == 443
    assert grid.tile_size_level0 == pytest.approx(step)
    xs = np.unique(grid.coords[:, 0])
    np.testing.assert_array_equal(xs, np.floor(np.arange(len(xs)) * step + 0.5))
    # A whole-pixel step of 443 would have drifted by 1.7 px after 40 tiles; the exact one does not.
    assert xs[40] == round(40 * step) == 17722


def test_a_level_slightly_coarser_than_target_serves_it_without_upsampling():
    grid = plan_tiles(_info(0.2528), target_mpp=0.25, tile_size=224)
    assert grid.level == 0
    assert grid.read_size == 224  # never fewer pixels than the tile: resize never upsamples
    assert grid.effective_mpp == pytest.approx(0.2528)


def test_target_finer_than_level_zero_is_refused_with_a_clear_message():
    with pytest.raises(TargetResolutionError) as caught:
        plan_tiles(_info(0.5), target_mpp=0.25, tile_size=224)
    message = str(caught.value)
    assert "upsampling" in message and "--mpp" in message and "0.5" in message
    plan_tiles(_info(0.5), target_mpp=0.48, tile_size=224)  # within the 5% tolerance


def test_only_tiles_fully_inside_the_slide():
    info = _info(0.25, width=2000, height=1000)
    grid = plan_tiles(info, target_mpp=0.5, tile_size=224)
    assert len(grid) == (2000 // 448) * (1000 // 448) == 8
    assert (grid.coords[:, 0] + 448 <= 2000).all() and (grid.coords[:, 1] + 448 <= 1000).all()
    tiny = plan_tiles(_info(0.25, width=400, height=400), target_mpp=0.5, tile_size=224)
    assert len(tiny) == 0 and tiny.coords.shape == (0, 2)


def test_tissue_fraction_threshold_decides_which_tiles_stay():
    info = _info(0.5, width=1024, height=1024, downsamples=(1,))
    # Tissue covers x in [0, 320): tile 0 fully, tile 1 (256..512) for a quarter.
    mask = boxes_to_mask((64, 64), [(0, 0, 320, 1024)], downsample=16.0)
    strict = plan_tiles(info, 0.5, 256, tissue_mask=mask, min_tissue=0.6)
    lenient = plan_tiles(info, 0.5, 256, tissue_mask=mask, min_tissue=0.2)
    assert set(strict.coords[:, 0].tolist()) == {0}
    assert set(lenient.coords[:, 0].tolist()) == {0, 256}


@pytest.mark.parametrize(
    ("kind", "mpp", "target"), [("svs", 0.25, 0.5), ("tiff", 0.5, 0.5), ("tiff", 0.25, 1.0)]
)
def test_tiles_land_on_the_planted_tissue(tmp_path, kind, mpp, target):
    tile_size = 64
    step = round(tile_size * target / mpp)
    # Two boxes aligned to the grid: 3x2 and 2x2 tiles of tissue.
    boxes = [(step, step, 4 * step, 3 * step), (6 * step, 4 * step, 8 * step, 6 * step)]
    written = write_synthetic_slide(
        tmp_path / f"s.{kind}",
        width=9 * step + 17,
        height=7 * step + 5,
        mpp=mpp,
        kind=kind,
        downsamples=(1, 4),
        tissue_boxes=boxes,
    )
    expected = {
        (x, y) for x0, y0, x1, y1 in boxes for x in range(x0, x1, step) for y in range(y0, y1, step)
    }
    with open_slide(written.path) as slide:
        mask = detect_tissue(slide, TissueSettings(mask_mpp=4 * mpp, median_size=3))
        grid = plan_tiles(slide.info, target, tile_size, tissue_mask=mask, min_tissue=0.6)
    assert {tuple(c) for c in grid.coords.tolist()} == expected
    assert grid.tile_size_level0 == step


def test_blank_slide_gives_no_tiles(tmp_path):
    written = write_synthetic_slide(
        tmp_path / "blank.svs", width=1024, height=1024, tissue_boxes=(), downsamples=(1, 4)
    )
    with open_slide(written.path) as slide:
        mask = detect_tissue(slide)
        grid = plan_tiles(slide.info, 0.5, 224, tissue_mask=mask)
    assert not mask.mask.any()
    assert len(grid) == 0
    assert grid.coords.shape == (0, 2)


def test_coords_cannot_be_modified_in_place():
    grid = plan_tiles(_info(0.5, width=1024, height=1024), 0.5, 256)
    with pytest.raises(ValueError):
        grid.coords[0, 0] = 5
