"""open_reader: the TIFF reader for SVS and tiled TIFF it reproduces, OpenSlide otherwise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_encoders.errors import ReaderNotApplicableError
from histo_encoders.readers import open_reader
from histo_encoders.slides.slide import open_slide
from histo_encoders.slides.tiling import plan_tiles
from histo_encoders.tools.synthetic import write_synthetic_slide
from tests.fixture_paths import OPENSLIDE_FIXTURES as FIXTURES
from tests.readers._jpegtables import write_jpegtables_slide


def _reader_for(path: Path, kind: str = "auto", mpp: float | None = None, target: float = 0.5):
    with open_slide(path, mpp=mpp) as slide:
        info = slide.info
    grid = plan_tiles(info, target, 32)
    return open_reader(path, info, grid, kind), info, grid


@pytest.mark.parametrize(
    ("kind", "compression"), [("svs", "jpeg"), ("tiff", "jpeg"), ("tiff", "deflate")]
)
def test_auto_picks_tiff_for_synthetic_svs_and_tiled_tiff(tmp_path, kind, compression):
    slide = write_synthetic_slide(
        tmp_path / f"s.{kind}", width=300, height=200, kind=kind, compression=compression, tile=64
    )
    reader, _, _ = _reader_for(slide.path)
    described = reader.describe().as_dict()
    assert reader.name == "tiff"
    assert described["decode_path"] == f"cpu:imagecodecs-{compression}"
    reader.close()


def test_auto_picks_tiff_for_aperio_jpegtables(tmp_path):
    path = write_jpegtables_slide(tmp_path / "aperio.svs", width=300, height=200, mpp=0.25)
    reader, _, _ = _reader_for(path)
    assert reader.name == "tiff"
    assert reader.describe().as_dict()["jpegtables"] is True
    reader.close()


def test_auto_picks_openslide_for_a_plain_image_and_says_why(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(np.full((100, 120, 3), 200, np.uint8)).save(path)
    reader, _, _ = _reader_for(path, mpp=0.5)
    assert reader.name != "tiff"
    assert "plain image" in reader.describe().as_dict()["selection"]
    with pytest.raises(ReaderNotApplicableError):
        _reader_for(path, kind="tiff", mpp=0.5)


def test_auto_keeps_openslide_where_positions_fall_between_level_pixels(tmp_path):
    slide = write_synthetic_slide(tmp_path / "s.svs", width=1200, height=800, tile=64)
    reader, info, grid = _reader_for(slide.path, target=1.0)  # level 1, downsample 4
    assert grid.level == 1
    odd = dataclasses.replace(grid, coords=np.array([[1, 2]], dtype=np.int64))
    chosen = open_reader(slide.path, info, odd)
    assert chosen.name == "openslide"
    assert "between pixels" in chosen.describe().as_dict()["selection"]
    with pytest.raises(ReaderNotApplicableError, match="between pixels"):
        open_reader(slide.path, info, odd, kind="tiff")
    reader.close()


def test_openslide_when_asked_and_unknown_kinds_refused():
    reader, info, grid = _reader_for(FIXTURES / "small.svs", kind="openslide", target=0.499)
    assert reader.name == "openslide"
    with pytest.raises(ValueError, match="unknown reader"):
        open_reader(FIXTURES / "small.svs", info, grid, "cucim")


def test_real_aperio_fixture_gets_the_tiff_reader_and_the_same_pixels():
    path = FIXTURES / "small.svs"
    with open_slide(path) as slide:
        info = slide.info
    grid = plan_tiles(info, info.mpp, 16)
    reader = open_reader(path, info, grid)
    described = reader.describe().as_dict()
    assert reader.name == "tiff"
    assert described["codec"] == "jpeg" and described["jpegtables"] is True
    expected = open_reader(path, info, grid, "openslide").read_tiles([0])
    assert np.abs(reader.read_tiles([0]).astype(int) - expected).max() <= 1
    reader.close()


def test_auto_keeps_openslide_for_vendors_with_their_own_tile_layout(tmp_path):
    slide = write_synthetic_slide(tmp_path / "s.tiff", width=300, height=200, kind="tiff", tile=64)
    with open_slide(slide.path) as opened:
        info = dataclasses.replace(opened.info, vendor="leica")  # SCN places images itself
    grid = plan_tiles(info, 0.5, 32)
    reader = open_reader(slide.path, info, grid)
    assert reader.name == "openslide"
    assert "vendor 'leica'" in reader.describe().as_dict()["selection"]
