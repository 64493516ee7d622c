"""Synthetic slides: OpenSlide must open them as real scanners' files, with known tissue."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

from histo_encoders.tools.synthetic import render_region, write_synthetic_slide

SIZE = (1024, 768)


def _read_rgb(slide: openslide.OpenSlide, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.asarray(slide.read_region((x0, y0), 0, (x1 - x0, y1 - y0)).convert("RGB"))


@pytest.mark.parametrize(
    ("kind", "compression", "mpp", "vendor"),
    [
        ("svs", "jpeg", 0.25, "aperio"),
        ("tiff", "deflate", 0.5, "generic-tiff"),
        ("tiff", None, 0.2528, "generic-tiff"),
    ],
)
def test_openslide_sees_every_level_and_the_mpp(tmp_path, kind, compression, mpp, vendor):
    written = write_synthetic_slide(
        tmp_path / f"slide.{kind}",
        width=SIZE[0],
        height=SIZE[1],
        mpp=mpp,
        kind=kind,
        compression=compression,
        downsamples=(1, 4, 16),
    )
    with openslide.OpenSlide(written.path) as slide:
        assert slide.properties["openslide.vendor"] == vendor
        assert slide.level_count == 3
        assert slide.level_dimensions == ((1024, 768), (256, 192), (64, 48))
        assert slide.level_downsamples == pytest.approx((1.0, 4.0, 16.0))
        # The exact mpp survives: 0.2528 must not come back as a nominal 0.25.
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-6)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(mpp, rel=1e-6)
    assert written.dimensions == SIZE


@pytest.mark.parametrize("kind", ["svs", "tiff"])
def test_without_mpp_openslide_reports_none(tmp_path, kind):
    written = write_synthetic_slide(
        tmp_path / f"slide.{kind}", width=512, height=512, kind=kind, with_mpp=False
    )
    with openslide.OpenSlide(written.path) as slide:
        assert "openslide.mpp-x" not in slide.properties


def test_tissue_is_coloured_where_planted_and_glass_elsewhere(tmp_path):
    box = (256, 128, 768, 512)
    written = write_synthetic_slide(
        tmp_path / "slide.svs", width=SIZE[0], height=SIZE[1], tissue_boxes=[box]
    )
    with openslide.OpenSlide(written.path) as slide:
        tissue = _read_rgb(slide, (box[0] + 8, box[1] + 8, box[2] - 8, box[3] - 8)).astype(float)
        glass = _read_rgb(slide, (0, 600, 1024, 768)).astype(float)
    tissue_saturation = tissue.max(axis=2) - tissue.min(axis=2)
    assert tissue_saturation.mean() > 50  # pink/purple, clearly not grey
    assert tissue.std() > 10  # textured: nuclei on stroma
    assert 230 <= glass.mean() <= 248
    assert (glass.max(axis=2) - glass.min(axis=2)).mean() < 10
    assert written.tissue_boxes == (box,)


def test_blank_slide_has_no_tissue(tmp_path):
    written = write_synthetic_slide(tmp_path / "blank.tiff", width=512, height=512, tissue_boxes=())
    with openslide.OpenSlide(written.path) as slide:
        pixels = _read_rgb(slide, (0, 0, 512, 512)).astype(float)
    assert written.tissue_boxes == ()
    assert pixels.min() > 200


def test_same_seed_same_file_other_seed_other_texture(tmp_path):
    args = dict(width=512, height=512, compression="deflate")
    first = write_synthetic_slide(tmp_path / "a.tiff", seed=3, **args)
    again = write_synthetic_slide(tmp_path / "b.tiff", seed=3, **args)
    other = write_synthetic_slide(tmp_path / "c.tiff", seed=4, **args)
    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.path.read_bytes() != other.path.read_bytes()


def test_rejects_impossible_geometry(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        write_synthetic_slide(tmp_path / "x.tiff", tile=100)
    with pytest.raises(ValueError, match="downsamples"):
        write_synthetic_slide(tmp_path / "x.tiff", downsamples=(4, 1))


def test_render_region_is_the_image_the_slide_is_written_from(tmp_path):
    box = (64, 64, 448, 448)
    written = write_synthetic_slide(
        tmp_path / "s.tiff", width=512, height=512, compression=None, tissue_boxes=[box], tile=256
    )
    # Same pixels, same noise: tile (row 0, column 256) of level 0 has noise key (0, 0, 256).
    expected = render_region(256, 0, 256, 256, mpp=0.25, tissue_boxes=[box], noise_key=(0, 0, 256))
    with openslide.OpenSlide(written.path) as slide:
        np.testing.assert_array_equal(_read_rgb(slide, (256, 0, 512, 256)), expected)
