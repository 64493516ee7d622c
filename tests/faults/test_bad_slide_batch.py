"""Class 1: one bad slide never stops a batch. Whatever goes wrong while reading or embedding a
slide (tile data past the end of the file, an error inside a decoder, a compiled loop, the
model, the HDF5 writer) is that slide's failure, with its reason in summary.json/csv; the other
slides finish and the exit code is 1."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from histo_encoders.pipeline import features as features_io
from histo_encoders.pipeline import run as run_module
from histo_encoders.pipeline.features import read_features
from histo_encoders.readers import tiff_reader
from tests.faults.conftest import embed_args, leftovers, run_cli, summary_rows


def _point_tiles_past_the_end(path: Path) -> None:
    """Every tile offset of every level but the lowest (which OpenSlide reads when it opens a
    slide) now points past the end of the file."""
    with tifffile.TiffFile(path) as tif:
        tags = [page.tags["TileOffsets"] for page in tif.pages[:-1]]
        spots = [(t.valueoffset, t.valuebytecount // t.count, t.count) for t in tags]
        order = tif.byteorder
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        for where, width, count in spots:
            handle.seek(where)
            handle.write(np.full(count, size + 4096, dtype=f"{order}u{width}").tobytes())


@pytest.mark.parametrize("reader", ["tiff", "auto", "openslide"])
def test_tile_data_past_the_end_of_the_file_fails_that_slide_and_the_batch_goes_on(
    slide_copies, tiny_encoder_dir, tmp_path, capsys, reader
) -> None:
    slides = slide_copies(**{"a.svs": "svs", "bad.svs": "svs", "c.svs": "svs"})
    _point_tiles_past_the_end(slides["bad.svs"])
    out = tmp_path / "out"
    ran = run_cli(
        capsys,
        "embed",
        *map(str, slides.values()),
        *embed_args(tiny_encoder_dir, out, "--reader", reader),
    )
    assert ran.code == 1
    rows = summary_rows(out)
    assert rows["a.svs"]["status"] == rows["c.svs"]["status"] == "ok"
    assert rows["bad.svs"]["status"] == "failed"
    assert rows["bad.svs"]["error_type"] == "SlideReadError"
    assert "failed" in ran.out and "bad.svs" in ran.out
    assert not (out / "bad.h5").exists() and read_features(out / "c.h5")[0].shape[0] > 0
    with open(out / "summary.csv") as handle:
        assert {row["status"] for row in csv.DictReader(handle)} == {"ok", "failed"}
    assert leftovers(out) == []


def test_past_the_end_reason_is_said_in_words(slide_copies, tiny_encoder_dir, tmp_path, capsys):
    slides = slide_copies(**{"bad.svs": "svs"})
    _point_tiles_past_the_end(slides["bad.svs"])
    out = tmp_path / "out"
    run_cli(
        capsys,
        "embed",
        str(slides["bad.svs"]),
        *embed_args(tiny_encoder_dir, out, "--reader", "tiff"),
    )
    assert "past the end of the file" in summary_rows(out)["bad.svs"]["error"]


def _fail_on(name: str, error: BaseException, real):
    """Wrap ``real`` so that it raises ``error`` while the slide ``name`` is being embedded."""

    def wrapped(*args, **kwargs):
        if any(name in str(a) for a in args):
            raise error
        return real(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize(
    "error",
    [
        ZeroDivisionError("division by zero in the model"),
        KeyError("coords"),
        RuntimeError("Unable to synchronously create dataset (h5py)"),
        MemoryError(),
        OSError(5, "Input/output error"),  # EIO reading the slide: not the output's disk
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_exception_of_one_slide_is_that_slides_failure(
    slide_copies, tiny_encoder_dir, tmp_path, capsys, monkeypatch, error
) -> None:
    slides = slide_copies(**{"a.svs": "svs", "b.svs": "svs", "c.tiff": "tiff"})
    monkeypatch.setattr(
        run_module, "embed_prepared", _fail_on("b.svs", error, run_module.embed_prepared)
    )
    out = tmp_path / "out"
    ran = run_cli(capsys, "embed", *map(str, slides.values()), *embed_args(tiny_encoder_dir, out))
    assert ran.code == 1
    rows = summary_rows(out)
    assert (
        rows["b.svs"]["status"] == "failed" and rows["b.svs"]["error_type"] == type(error).__name__
    )
    assert rows["a.svs"]["status"] == rows["c.tiff"]["status"] == "ok"


def test_an_error_inside_a_compiled_loop_is_a_slide_read_error(
    slide_copies, tiny_encoder_dir, tmp_path, capsys, monkeypatch
) -> None:
    slides = slide_copies(**{"a.svs": "svs", "b.tiff": "tiff"})
    real = tiff_reader.paste_region
    calls = {"n": 0}

    def failing_kernel(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # in the first slide, inside the reader's threads
            raise IndexError("index 300 is out of bounds for axis 0 with size 256")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiff_reader, "paste_region", failing_kernel)
    out = tmp_path / "out"
    ran = run_cli(
        capsys,
        "embed",
        *map(str, slides.values()),
        *embed_args(tiny_encoder_dir, out, "--reader", "tiff"),
    )
    rows = summary_rows(out)
    assert ran.code == 1
    assert (
        rows["a.svs"]["error_type"] == "SlideReadError" and "IndexError" in rows["a.svs"]["error"]
    )
    assert rows["b.tiff"]["status"] == "ok"


def test_an_error_while_writing_the_hdf5_file_leaves_no_file(
    slide_copies, tiny_encoder_dir, tmp_path, capsys, monkeypatch
) -> None:
    slides = slide_copies(**{"a.svs": "svs", "b.svs": "svs"})
    real = features_io._write_h5

    def half_written(path, features, coords, attrs):
        if "b.h5" in str(path):
            real(path, features[:2], coords[:2], attrs)
            raise RuntimeError("Can't write data (h5py)")
        real(path, features, coords, attrs)

    monkeypatch.setattr(features_io, "_write_h5", half_written)
    out = tmp_path / "out"
    ran = run_cli(capsys, "embed", *map(str, slides.values()), *embed_args(tiny_encoder_dir, out))
    assert ran.code == 1 and summary_rows(out)["b.svs"]["status"] == "failed"
    assert sorted(p.name for p in out.glob("*.h5")) == ["a.h5"] and leftovers(out) == []
