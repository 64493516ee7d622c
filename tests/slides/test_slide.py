"""open_slide: geometry, where the mpp comes from, refusals, plain images, broken files."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from histo_encoders.errors import (
    ImplausibleMppError,
    MissingMppError,
    SlideOpenError,
    SlideReadError,
)
from histo_encoders.slides.slide import Slide, open_slide
from histo_encoders.tools.synthetic import write_synthetic_slide
from tests.fixture_paths import OPENSLIDE_FIXTURES as FIXTURES


@pytest.fixture(scope="module")
def svs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slide")
    return write_synthetic_slide(
        folder / "slide.svs", width=1024, height=768, mpp=0.25, tissue_boxes=[(256, 256, 768, 512)]
    )


def test_synthetic_svs_geometry_and_mpp(svs):
    with open_slide(svs.path) as slide:
        info = slide.info
    assert info.dimensions == (1024, 768)
    assert info.level_count == 3
    assert info.level_dimensions == ((1024, 768), (256, 192), (64, 48))
    assert info.level_downsamples == (1.0, 4.0, 16.0)
    assert info.mpp == pytest.approx(0.25)
    assert info.level_mpp(1) == pytest.approx(1.0)
    assert info.mpp_source == "openslide.mpp-x/y"
    assert info.vendor == "aperio"
    assert info.backend == "openslide"
    assert info.file_size == svs.path.stat().st_size


def test_exact_mpp_is_kept_not_rounded_to_a_magnification(tmp_path):
    written = write_synthetic_slide(
        tmp_path / "s.tiff", width=512, height=512, mpp=0.2528, kind="tiff", downsamples=(1,)
    )
    with open_slide(written.path) as slide:
        assert slide.info.mpp == pytest.approx(0.2528, abs=1e-9)
        assert slide.info.vendor == "generic-tiff"


def test_given_mpp_overrides_the_file(svs):
    with open_slide(svs.path, mpp=0.2) as slide:
        assert slide.info.mpp == 0.2
        assert slide.info.mpp_source == "given"


@pytest.mark.parametrize("kind", ["svs", "tiff"])
def test_slide_without_mpp_is_refused_with_how_to_give_it(tmp_path, kind):
    written = write_synthetic_slide(
        tmp_path / f"s.{kind}", width=256, height=256, kind=kind, with_mpp=False, downsamples=(1,)
    )
    with pytest.raises(MissingMppError) as caught:
        open_slide(written.path)
    assert "--slide-mpp" in str(caught.value)
    assert "mpp=" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with open_slide(written.path, mpp=0.5) as slide:
        assert slide.info.mpp == 0.5


def test_x_and_y_mpp_disagreeing_is_refused(tmp_path):
    path = tmp_path / "aniso.tiff"
    tifffile.imwrite(
        path,
        np.full((256, 256, 3), 240, np.uint8),
        tile=(256, 256),
        photometric="rgb",
        resolution=(1e4 / 0.25, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    with pytest.raises(ImplausibleMppError, match="differs between x"):
        open_slide(path)


def test_given_mpp_must_be_plausible_too(svs):
    with pytest.raises(ImplausibleMppError, match="outside the plausible"):
        open_slide(svs.path, mpp=350.0)


def test_read_region_is_rgb_uint8_and_white_outside_the_slide(svs):
    with open_slide(svs.path) as slide:
        inside = slide.read_region((300, 300), 0, (32, 16))
        outside = slide.read_region((1000, 740), 0, (64, 64))
        level1 = slide.read_region((256, 256), 1, (16, 16))
    assert inside.shape == (16, 32, 3)
    assert inside.dtype == np.uint8
    assert inside.std() > 5  # textured tissue
    # The part beyond the slide's edge (x >= 1024 or y >= 768) reads as white glass.
    assert (outside[28:, :] == 255).all()
    assert (outside[:, 24:] == 255).all()
    assert level1.shape == (16, 16, 3)


def test_read_scaled_uses_a_coarse_level_and_gives_the_whole_slide(svs):
    with open_slide(svs.path) as slide:
        assert slide.best_level_for(32.0) == 2
        assert slide.best_level_for(3.9) == 0
        scaled = slide.read_scaled(32.0)
        thumb, downsample = slide.thumbnail(max_size=100)
    assert scaled.shape == (24, 32, 3)
    # Tissue box (256..768, 256..512) is pink in the scaled view, the corner is glass.
    assert (scaled[10, 16].max() - scaled[10, 16].min()) > 40
    assert scaled[1, 1].min() > 220
    assert max(thumb.shape[:2]) <= 100
    assert downsample == pytest.approx(10.24)


def test_from_info_keeps_a_given_mpp(svs):
    with open_slide(svs.path, mpp=0.3) as slide:
        info = slide.info
    with Slide.from_info(info) as again:
        assert again.info.mpp == 0.3
        assert again.read_region((0, 0), 0, (4, 4)).shape == (4, 4, 3)


def test_real_small_svs_opens_with_its_exact_mpp():
    with open_slide(FIXTURES / "small.svs") as slide:
        assert slide.info.mpp == pytest.approx(0.499)
        assert slide.info.dimensions == (16, 16)
        assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)


def test_real_unreadable_svs_opens_but_reading_raises_and_reopen_recovers_the_handle():
    with open_slide(FIXTURES / "unreadable.svs") as slide:
        assert slide.info.mpp == pytest.approx(0.499)
        with pytest.raises(SlideReadError) as caught:
            slide.read_region((0, 0), 0, (16, 16))
        assert isinstance(caught.value.__cause__, openslide.OpenSlideError)
        assert "corrupt" in str(caught.value)
        slide.reopen()
        with pytest.raises(SlideReadError):
            slide.read_region((0, 0), 0, (16, 16))


def test_real_unopenable_tiff_raises_slide_open_error_from_openslide():
    with pytest.raises(SlideOpenError) as caught:
        open_slide(FIXTURES / "unopenable.tiff")
    assert isinstance(caught.value.__cause__, openslide.OpenSlideError)
    assert isinstance(caught.value, OSError)
    assert "unopenable.tiff" in str(caught.value)


def test_real_boxes_tiff_nonsense_mpp_is_refused_unless_given():
    with pytest.raises(ImplausibleMppError, match=r"352\.778"):
        open_slide(FIXTURES / "boxes.tiff")
    with open_slide(FIXTURES / "boxes.tiff", mpp=0.5) as slide:
        assert slide.info.level_count == 4
        assert slide.info.mpp == 0.5


def test_missing_file_is_a_slide_open_error(tmp_path):
    with pytest.raises(SlideOpenError, match="no such file"):
        open_slide(tmp_path / "nope.svs")


def test_plain_png_works_with_a_given_mpp(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    with pytest.raises(MissingMppError):
        open_slide(tmp_path / "plain.png")
    with open_slide(tmp_path / "plain.png", mpp=0.5) as slide:
        assert slide.info.backend == "image"
        assert slide.info.vendor == "png"
        assert slide.info.dimensions == (60, 40)
        region = slide.read_region((50, 30), 0, (20, 20))
    np.testing.assert_array_equal(region[:10, :10], pixels[30:40, 50:60])
    assert (region[10:] == 255).all() and (region[:, 10:] == 255).all()


def test_plain_image_dpi_is_used_and_screen_dpi_refused(tmp_path):
    pixels = np.full((20, 20, 3), 200, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scan.png", dpi=(50800, 50800))
    Image.fromarray(pixels).save(tmp_path / "screen.jpg", dpi=(72, 72))
    with open_slide(tmp_path / "scan.png") as slide:
        assert slide.info.mpp == pytest.approx(0.5, rel=1e-3)
        assert slide.info.mpp_source == "image dpi"
    with pytest.raises(ImplausibleMppError):
        open_slide(tmp_path / "screen.jpg")
    with open_slide(tmp_path / "screen.jpg", mpp=1.0) as slide:
        assert slide.info.mpp == 1.0


def test_a_file_nothing_can_read_is_a_slide_open_error(tmp_path):
    path = tmp_path / "junk.svs"
    path.write_bytes(b"not an image at all" * 10)
    with pytest.raises(SlideOpenError):
        open_slide(path)


def test_read_scaled_in_small_strips_matches_one_strip(svs, monkeypatch):
    with open_slide(svs.path) as slide:
        whole = slide.read_scaled(4.0)
        monkeypatch.setattr("histo_encoders.slides.slide._STRIP_PIXELS", 256 * 12)
        stripped = slide.read_scaled(4.0)
        level1 = slide.read_level(1)
    assert whole.shape == stripped.shape == (192, 256, 3)
    np.testing.assert_array_equal(whole, stripped)
    np.testing.assert_array_equal(whole, level1)  # downsample 4 is exactly level 1


def test_read_region_returns_a_writable_array(svs):
    # Callers normalise tiles in place; a read-only view from PIL would make that fail.
    with open_slide(svs.path) as slide:
        assert slide.read_region((300, 300), 0, (8, 8)).flags.writeable
        assert slide.read_region((1020, 760), 0, (8, 8)).flags.writeable
