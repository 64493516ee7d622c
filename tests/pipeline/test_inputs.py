"""Which files a run takes for slides, per-slide resolutions, and the progress it shows."""

from __future__ import annotations

import io
import shutil

import pytest

from histo_encoders.cli import main
from histo_encoders.pipeline.features import read_features
from histo_encoders.pipeline.inputs import collect_slides, mpp_for, read_slide_mpps
from histo_encoders.pipeline.progress import RunProgress


def _touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_search_skips_outputs_unreadable_formats_and_groups_dicom_series(tmp_path):
    _touch(
        tmp_path,
        "a.svs", "b.ndpi", "c.mrxs", "d.czi", "e.png", "a.preview.png", ".hidden.svs",
        ".f.h5.123.ab.partial", "notes.txt",
        "series-1/level0.dcm", "series-1/level1.dcm", "series-1/label.dcm",
        "vms/slide.vms", "vms/slide.jpg", "vms/slide_map.jpg",
        "out/x.svs", "out/x.preview.png", "out/pt_files/x.pt",
    )  # fmt: skip
    found = collect_slides([tmp_path], exclude=[tmp_path / "out"])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == ["a.svs", "b.ndpi", "c.mrxs", "e.png", "series-1", "vms/slide.vms"]
    # A series folder given by name, or a .czi given by name, is taken as given.
    assert collect_slides([tmp_path / "series-1"]) == [tmp_path / "series-1"]
    assert collect_slides([tmp_path / "d.czi"]) == [tmp_path / "d.czi"]


def test_slide_mpp_csv_reads_our_trident_and_slide2vec_columns(tmp_path):
    ours = tmp_path / "ours.csv"
    ours.write_text("slide,mpp\nboxes.tiff,0.5\nother.svs,\n")
    trident = tmp_path / "trident.csv"
    trident.write_text("wsi,mpp\nsub/boxes.tiff,0.25\n")
    slide2vec = tmp_path / "slide2vec.csv"
    slide2vec.write_text("sample_id,image_path,spacing_at_level_0\nboxes,/data/boxes.tiff,0.3\n")
    assert read_slide_mpps(ours) == {"boxes.tiff": 0.5}  # an empty value: the file's own
    assert mpp_for("/x/boxes.tiff", read_slide_mpps(trident)) == 0.25
    assert mpp_for("/elsewhere/boxes.tiff", read_slide_mpps(slide2vec)) == 0.3
    assert mpp_for("/x/unlisted.svs", read_slide_mpps(ours)) is None
    bad = tmp_path / "bad.csv"
    bad.write_text("name,resolution\na,1\n")
    with pytest.raises(ValueError, match="slide column"):
        read_slide_mpps(bad)
    bad.write_text("slide,mpp\na,-1\n")
    with pytest.raises(ValueError, match="positive"):
        read_slide_mpps(bad)


def _args(encoder, out):
    return ["--encoder", str(encoder), "--out", str(out), "--device", "cpu", "--workers", "0"]


def test_rerun_with_out_inside_the_slide_folder_and_per_slide_mpps(
    synthetic_slides, openslide_fixtures, tiny_encoder_dir, tmp_path, capsys
):
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(synthetic_slides.svs, slides)
    shutil.copy(openslide_fixtures / "boxes.tiff", slides)  # records an implausible mpp
    table = tmp_path / "mpp.csv"
    table.write_text("slide,mpp\nboxes.tiff,0.5\n")
    args = [str(slides), *_args(tiny_encoder_dir, slides / "out"), "--no-progress"]
    args += ["--preview", "--slide-mpp", str(table), "--pt-files"]
    assert main(["embed", *args]) == 0
    assert main(["embed", *args]) == 0  # the rerun finds its own outputs and skips them
    printed = capsys.readouterr().out
    assert printed.count("skipped") >= 1 and "failed" not in printed.split("summary")[-1]
    attrs = read_features(slides / "out" / "boxes.h5")[2]
    assert attrs["slide_mpp"] == 0.5 and attrs["slide_mpp_source"] == "given"
    assert (slides / "out" / "pt_files" / "boxes.pt").is_file()


def test_progress_knows_each_slides_total_and_leaves_one_line_per_slide():
    stream = io.StringIO()
    progress = RunProgress(2, file=stream)
    progress.start_slide("/data/a.svs")
    progress.planned(5)
    progress.tiles_done(5)  # a slide that fits in one batch
    progress.end_slide("/data/a.svs", "ok", "5 tiles")
    progress.start_slide("/data/b.svs")
    progress.planned(0)
    progress.end_slide("/data/b.svs", "empty", "0 tiles")
    progress.close()
    text = stream.getvalue()
    assert "5/5" in text and "[1/2] a.svs" in text
    assert "[1/2] ok      a.svs  5 tiles\n" in text and "[2/2] empty   b.svs" in text
    assert "rank" not in text
    assert text.endswith(" 0 tiles\n")  # no bar left over: the summary starts its own line
    ranked = io.StringIO()
    progress = RunProgress(1, file=ranked, rank=1, world_size=2)
    progress.start_slide("c.svs")
    progress.end_slide("c.svs", "ok")
    assert "rank 1/2 [1/1] ok" in ranked.getvalue()
