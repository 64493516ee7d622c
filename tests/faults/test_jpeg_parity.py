"""Class 2: the TIFF reader's verdict on a damaged JPEG tile is OpenSlide's read_region verdict,
on every tile of a corpus of damage (tests/faults/_jpeg_damage.py), and where both read a tile
their pixels are equal. Before, a tile whose scan was destroyed was decoded to garbage here and
written as features with exit code 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histo_encoders.errors import SlideReadError
from histo_encoders.readers import TiffReaderOptions, TiffTileReader
from histo_encoders.readers.openslide_reader import OpenSlideReader
from histo_encoders.slides.slide import open_slide
from histo_encoders.slides.tiling import plan_tiles
from tests.faults import _jpeg_damage as corpus

CASES = [(layout, name) for layout in corpus.LAYOUTS for name in corpus.DAMAGES]


@pytest.fixture(scope="module")
def streams() -> dict[str, tuple[bytes | None, list[bytes]]]:
    return {layout: corpus.layout_streams(layout) for layout in corpus.LAYOUTS}


def _verdicts(path: Path) -> tuple[np.ndarray | SlideReadError, np.ndarray | SlideReadError]:
    """(OpenSlide's, ours) for the damaged stored tile: its pixels, or the error."""
    with open_slide(path) as slide:
        info = slide.info
    grid = plan_tiles(info, 0.5, corpus.TILE)  # output tile i is stored tile i
    verdicts = []
    for reader in (
        OpenSlideReader(path, info, grid),
        TiffTileReader(path, info, grid, TiffReaderOptions(num_threads=1)),
    ):
        try:
            verdicts.append(reader.read_tiles([corpus.DAMAGED]))
        except SlideReadError as error:
            verdicts.append(error)
        finally:
            reader.close()
    return verdicts[0], verdicts[1]


def _assert_same_verdict(path: Path) -> bool:
    theirs, ours = _verdicts(path)
    refused = isinstance(theirs, SlideReadError)
    assert refused == isinstance(ours, SlideReadError), f"OpenSlide: {theirs!r}\nours: {ours!r}"
    if not refused:
        np.testing.assert_array_equal(ours, theirs)
    return refused


@pytest.mark.parametrize(("layout", "name"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_damaged_tile_gets_openslides_verdict(streams, tmp_path, layout, name) -> None:
    tables, tiles = streams[layout]
    damaged = corpus.DAMAGES[name](tables, tiles[corpus.DAMAGED], np.random.default_rng(len(name)))
    if damaged is None:
        pytest.skip(f"the {layout} layout has no segment for this damage")
    tables, tiles = damaged[0], [*tiles[: corpus.DAMAGED], damaged[1], *tiles[corpus.DAMAGED + 1 :]]
    _assert_same_verdict(corpus.write_slide(tmp_path / "case.svs", layout, tables, tiles))


@pytest.mark.parametrize("layout", corpus.LAYOUTS)
@pytest.mark.parametrize("what", ["byte count", "offset"])
def test_tile_bytes_past_the_end_of_the_file_are_refused_by_both(streams, tmp_path, layout, what):
    tables, tiles = streams[layout]
    path = corpus.write_slide(tmp_path / "case.svs", layout, tables, tiles)
    corpus.point_past_end(path, offset=what == "offset")
    assert _assert_same_verdict(path)


def test_the_corpus_is_large_and_both_verdicts_occur() -> None:
    assert len(CASES) >= 4 * 50
    assert {"random bytes", "zeroed scan", "truncated to 90%", "early EOI"} <= set(corpus.DAMAGES)
