"""Batch runs: bad slides are reported and the rest complete; reruns resume and never trust a
half-written file; the summary says what happened to every slide."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from histo_encoders.pipeline import features as features_io
from histo_encoders.pipeline.embed import EmbedOptions
from histo_encoders.pipeline.features import read_features
from histo_encoders.pipeline.run import collect_slides, embed_slides, output_path

CPU = EmbedOptions(device="cpu", workers=0, batch_size=8)


def _copy_slides(synthetic_slides, folder):
    folder.mkdir()
    return [
        shutil.copy(synthetic_slides.svs, folder / "a.svs"),
        shutil.copy(synthetic_slides.tiff, folder / "b.tiff"),
    ]


def test_bad_slides_are_reported_and_the_good_ones_complete(
    synthetic_slides, openslide_fixtures, tiny_encoder, tmp_path
):
    good_a, good_b = _copy_slides(synthetic_slides, tmp_path / "slides")
    slides = [good_a, openslide_fixtures / "unreadable.svs", openslide_fixtures / "unopenable.tiff"]
    slides.append(good_b)
    out = tmp_path / "out"

    summary = embed_slides(slides, tiny_encoder, out, CPU, progress=False)

    by_name = {r.slide.split("/")[-1]: r for r in summary.results}
    assert by_name["a.svs"].status == "ok" and by_name["b.tiff"].status == "ok"
    assert by_name["unreadable.svs"].error_type == "SlideReadError"
    assert by_name["unopenable.tiff"].error_type == "SlideOpenError"
    assert "Unsupported TIFF compression" in by_name["unopenable.tiff"].error
    assert len(summary.failed) == 2
    assert read_features(out / "a.h5")[0].shape[0] == by_name["a.svs"].n_tiles > 0
    assert not (out / "unreadable.h5").exists()
    # The summary is saved beside the outputs, as JSON and CSV.
    record = json.loads((out / "summary.json").read_text())
    assert record["counts"] == {"ok": 2, "failed": 2}
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["status"] for row in rows} == {"ok", "failed"}
    assert "unreadable.svs" in summary.format()


def test_rerun_skips_finished_slides_and_redoes_changed_settings(
    synthetic_slides, tiny_encoder, tmp_path
):
    slides = _copy_slides(synthetic_slides, tmp_path / "slides")
    out = tmp_path / "out"
    embed_slides(slides, tiny_encoder, out, CPU, progress=False)
    written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}

    again = embed_slides(slides, tiny_encoder, out, CPU, progress=False)
    assert [r.status for r in again.results] == ["skipped", "skipped"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == written
    assert again.results[0].n_tiles > 0

    coarser = embed_slides(slides, tiny_encoder, out, CPU.with_updates(mpp=1.0), progress=False)
    assert [r.status for r in coarser.results] == ["ok", "ok"]
    assert read_features(out / "a.h5")[2]["target_mpp"] == 1.0


def test_interrupted_run_resumes_to_the_same_result(
    synthetic_slides, tiny_encoder, tmp_path, monkeypatch
):
    slides = _copy_slides(synthetic_slides, tmp_path / "slides")
    reference = embed_slides(slides, tiny_encoder, tmp_path / "reference", CPU, progress=False)
    out = tmp_path / "out"
    real_write = features_io._write_h5
    calls = []

    def killed_on_second_slide(path, features, coords, attrs):
        calls.append(path)
        if len(calls) == 2:
            real_write(path, features[:3], coords[:3], attrs)  # part of it reaches the disk
            raise KeyboardInterrupt  # ... then the job is killed
        real_write(path, features, coords, attrs)

    monkeypatch.setattr(features_io, "_write_h5", killed_on_second_slide)
    with pytest.raises(KeyboardInterrupt):
        embed_slides(slides, tiny_encoder, out, CPU, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["a.h5"]
    # A stray partial file and a truncated output (a crash outside our writer) are not trusted.
    (out / "b.h5.partial").write_bytes(b"half")
    (out / "b.h5").write_bytes((out / "a.h5").read_bytes()[:300])

    resumed = embed_slides(slides, tiny_encoder, out, CPU, progress=False)

    assert [r.status for r in resumed.results] == ["skipped", "ok"]
    for result in reference.results:
        name = output_path(out, result.slide).name
        expected, expected_coords, _ = read_features(tmp_path / "reference" / name)
        features, coords, _ = read_features(out / name)
        np.testing.assert_array_equal(features, expected)
        np.testing.assert_array_equal(coords, expected_coords)


def test_empty_slide_is_a_note_not_a_failure(synthetic_slides, tiny_encoder, tmp_path):
    summary = embed_slides([synthetic_slides.blank], tiny_encoder, tmp_path, CPU, progress=False)
    assert summary.results[0].status == "empty"
    features, _, attrs = read_features(tmp_path / "blank.h5")
    assert features.shape == (0, 96) and "no tissue" in attrs["note"]
    assert not summary.failed


def test_preview_png_is_written(synthetic_slides, tiny_encoder, tmp_path):
    embed_slides([synthetic_slides.svs], tiny_encoder, tmp_path, CPU, preview=True, progress=False)
    assert (tmp_path / "alpha.preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collect_slides_expands_folders_and_refuses_name_clashes(tmp_path):
    (tmp_path / "x" / "deep").mkdir(parents=True)
    for name in ("x/one.svs", "x/deep/two.tiff", "x/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in collect_slides([tmp_path / "x"])] == ["two.tiff", "one.svs"]
    (tmp_path / "x" / "deep" / "one.svs").write_bytes(b"")
    with pytest.raises(ValueError, match=r"would both write one\.h5"):
        collect_slides([tmp_path / "x"])
    with pytest.raises(FileNotFoundError):
        collect_slides([tmp_path / "missing.svs"])
