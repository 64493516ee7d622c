"""OpenSlideReader: pixels equal a direct read + resize, retry once, picklable for workers."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import openslide
import pytest

from histo_encoders.errors import SlideReadError
from histo_encoders.readers.base import TileReader
from histo_encoders.readers.openslide_reader import OpenSlideReader
from histo_encoders.readers.resize import resize_tile
from histo_encoders.slides.slide import Slide, open_slide
from histo_encoders.slides.tiling import plan_tiles
from histo_encoders.tools.synthetic import write_synthetic_slide
from tests.fixture_paths import OPENSLIDE_FIXTURES as FIXTURES


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reader")
    common = dict(width=1536, height=1280, downsamples=(1, 4), tissue_boxes=[(0, 0, 1536, 1280)])
    return {
        0.25: write_synthetic_slide(folder / "q.svs", mpp=0.25, **common).path,
        0.2528: write_synthetic_slide(folder / "odd.tiff", mpp=0.2528, kind="tiff", **common).path,
    }


def _direct(path: Path, x: int, y: int, level: int, read_size: int, tile_size: int) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as handle:
        region = np.asarray(handle.read_region((x, y), level, (read_size, read_size)))
    return resize_tile(np.ascontiguousarray(region[..., :3]), tile_size)


@pytest.mark.parametrize(
    ("mpp", "target", "tile_size", "level", "read_size"),
    [
        (0.25, 0.5, 64, 0, 128),
        (0.25, 1.0, 64, 1, 64),
        (0.25, 2.0, 64, 1, 128),
        (0.2528, 0.5, 224, 0, 443),
    ],
)
def test_tiles_equal_a_direct_openslide_read_and_resize(
    slides, mpp, target, tile_size, level, read_size
):
    path = slides[mpp]
    with open_slide(path) as slide:
        grid = plan_tiles(slide.info, target, tile_size)
    assert (grid.level, grid.read_size) == (level, read_size)
    reader = OpenSlideReader(path, slide.info, grid)
    picks = [0, len(grid) // 2, len(grid) - 1]
    tiles = reader.read_tiles(picks)
    reader.close()
    assert tiles.shape == (3, tile_size, tile_size, 3) and tiles.dtype == np.uint8
    for tile, index in zip(tiles, picks, strict=True):
        x, y = grid.coords[index].tolist()
        np.testing.assert_array_equal(tile, _direct(path, x, y, level, read_size, tile_size))


def test_reader_meets_the_protocol_and_keeps_index_order(slides):
    with open_slide(slides[0.25]) as slide:
        grid = plan_tiles(slide.info, 0.5, 64)
    reader = OpenSlideReader(slides[0.25], slide.info, grid)
    assert isinstance(reader, TileReader)
    assert reader.name == "openslide"
    forward = reader.read_tiles([1, 2])
    backward = reader.read_tiles([2, 1])
    np.testing.assert_array_equal(forward, backward[::-1])
    assert reader.read_tiles([]).shape == (0, 64, 64, 3)
    reader.close()
    np.testing.assert_array_equal(reader.read_tiles([1]), forward[:1])  # reopens after close


def _read_in_worker(reader: OpenSlideReader) -> np.ndarray:
    return reader.read_tiles([0, 3])


def test_reader_is_picklable_and_reads_in_another_process(slides):
    with open_slide(slides[0.25]) as slide:
        grid = plan_tiles(slide.info, 0.5, 64)
    reader = OpenSlideReader(slides[0.25], slide.info, grid)
    expected = reader.read_tiles([0, 3])  # the handle is open now and must not be pickled
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read_tiles([0, 3]), expected)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        from_worker = pool.apply(_read_in_worker, (reader,))
    np.testing.assert_array_equal(from_worker, expected)
    reader.close()


def test_real_small_svs_tile_reads():
    with open_slide(FIXTURES / "small.svs") as slide:
        grid = plan_tiles(slide.info, 0.499, 16)
    reader = OpenSlideReader(FIXTURES / "small.svs", slide.info, grid)
    assert len(grid) == 1
    assert reader.read_tiles([0]).shape == (1, 16, 16, 3)


def test_real_unreadable_svs_is_retried_once_on_a_fresh_handle_then_raises(monkeypatch):
    with open_slide(FIXTURES / "unreadable.svs") as slide:
        grid = plan_tiles(slide.info, 0.499, 16)
    opened = []
    original = Slide.from_info.__func__

    def counting_from_info(cls, info):
        opened.append(info.path)
        return original(cls, info)

    monkeypatch.setattr(Slide, "from_info", classmethod(counting_from_info))
    reader = OpenSlideReader(FIXTURES / "unreadable.svs", slide.info, grid)
    with pytest.raises(SlideReadError) as caught:
        reader.read_tiles([0])
    assert len(opened) == 2  # first open, then one reopen for the retry
    assert "even after reopening" in str(caught.value)
    assert isinstance(caught.value.__cause__, SlideReadError)
    assert isinstance(caught.value.__cause__.__cause__, openslide.OpenSlideError)
    reader.close()


def test_plain_image_slide_reads_through_the_same_reader(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(2).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    with open_slide(tmp_path / "plain.png", mpp=0.25) as slide:
        grid = plan_tiles(slide.info, 0.5, 32)
    reader = OpenSlideReader(tmp_path / "plain.png", slide.info, grid)
    assert reader.name == "image"
    tiles = reader.read_tiles([0])
    np.testing.assert_array_equal(tiles[0], resize_tile(pixels[:64, :64], 32))
