"""Class 12: a feature file is never silently replaced by the features of another slide with the
same file name, embedded in a later run into the same --out."""

from __future__ import annotations

from histo_encoders.pipeline.features import read_features
from tests.faults.conftest import embed_args, run_cli, summary_rows


def test_a_same_named_slide_from_another_folder_is_refused_naming_both(
    slide_copies, tiny_encoder_dir, tmp_path, capsys
) -> None:
    first = slide_copies("cohort-a", **{"s.svs": "svs"})["s.svs"]
    second = slide_copies("cohort-b", **{"s.svs": "tiff"})["s.svs"]  # other content, same name
    out = tmp_path / "out"
    assert run_cli(capsys, "embed", str(first), *embed_args(tiny_encoder_dir, out)).code == 0
    kept = read_features(out / "s.h5")

    ran = run_cli(capsys, "embed", str(second), *embed_args(tiny_encoder_dir, out))
    assert ran.code == 1
    row = summary_rows(out)["s.svs"]
    assert row["status"] == "failed" and row["error_type"] == "OutputConflictError"
    assert str(first) in row["error"] and str(second) in row["slide"]
    features, _, attrs = read_features(out / "s.h5")
    assert attrs["slide_path"] == str(first.resolve())  # the first slide's features, untouched
    assert (features == kept[0]).all()


def test_the_same_slide_at_another_path_is_not_a_conflict(
    slide_copies, tiny_encoder_dir, tmp_path, capsys
) -> None:
    first = slide_copies("cohort-a", **{"s.svs": "svs"})["s.svs"]
    copy = slide_copies("backup", **{"s.svs": "svs"})["s.svs"]  # same bytes
    out = tmp_path / "out"
    assert run_cli(capsys, "embed", str(first), *embed_args(tiny_encoder_dir, out)).code == 0
    # A new setting re-embeds it, from either copy, without a conflict.
    ran = run_cli(
        capsys, "embed", str(copy), *embed_args(tiny_encoder_dir, out, "--min-tissue", "0.3")
    )
    assert ran.code == 0 and summary_rows(out)["s.svs"]["status"] == "ok"


def test_two_same_named_slides_in_one_run_are_a_usage_error(
    slide_copies, tiny_encoder_dir, tmp_path, capsys
) -> None:
    first = slide_copies("a", **{"s.svs": "svs"})["s.svs"]
    second = slide_copies("b", **{"s.svs": "svs"})["s.svs"]
    ran = run_cli(
        capsys, "embed", str(first), str(second), *embed_args(tiny_encoder_dir, tmp_path / "o")
    )
    assert ran.code == 2 and "would both write s.h5" in ran.err
