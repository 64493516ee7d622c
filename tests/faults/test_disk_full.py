"""Class 8: a full (or unwritable) output disk fails the slide being written cleanly, removes its
temporary file, writes the summary of what finished, and stops the run with exit code 3 (the
environment stopped it), never a traceback or a crash. Slides never reached are ``not_run``."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest

from histo_encoders.pipeline import features as features_io
from histo_encoders.pipeline.features import read_features
from tests.faults.conftest import embed_args, leftovers, run_cli, run_subprocess, summary_rows


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size: str):
    """A tmpfs of ``size`` at ``mountpoint`` (needs root and a kernel that allows it)."""
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s filesystem until ``leave`` bytes are free."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def _assert_stopped_cleanly(out: Path, ran) -> None:
    assert ran.code == 3, ran.err
    assert "disk" in ran.err.lower() or "space" in ran.err.lower(), ran.err
    assert "STOPPED" in ran.out and "b.svs" in ran.out  # the summary, printed
    assert not (out / "b.h5").exists() and leftovers(out) == []
    assert read_features(out / "a.h5")[0].shape[0] > 0  # what finished before is intact


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_tmpfs_stops_the_run_cleanly(slide_copies, tiny_encoder_dir, tmp_path, capsys):
    slides = slide_copies(**{"a.svs": "svs", "b.svs": "svs", "c.svs": "svs"})
    with small_filesystem(tmp_path / "disk", "2m") as disk:
        out = disk / "out"
        ran = run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(tiny_encoder_dir, out))
        assert ran.code == 0
        _fill(disk, leave=12 * 1024)  # room for a summary, not for a feature file
        ran = run_subprocess(
            "embed", *map(str, slides.values()), *embed_args(tiny_encoder_dir, out)
        )
        _assert_stopped_cleanly(out, ran)
        rows = summary_rows(out)  # small enough for the space left
        assert rows["a.svs"]["status"] == "skipped"
        assert rows["b.svs"]["status"] == "failed"
        assert rows["b.svs"]["error_type"] == "OutputNotWritableError"
        assert rows["c.svs"]["status"] == "not_run"
        (disk / "filler").unlink()
        rerun = run_cli(
            capsys, "embed", *map(str, slides.values()), *embed_args(tiny_encoder_dir, out)
        )
        assert rerun.code == 0 and summary_rows(out)["c.svs"]["status"] == "ok"  # it resumes


def test_injected_enospc_stops_the_run_with_the_summary_written(
    slide_copies, tiny_encoder_dir, tmp_path, capsys, monkeypatch
) -> None:
    slides = slide_copies(**{"a.svs": "svs", "b.svs": "svs", "c.svs": "svs"})
    real = features_io._write_h5

    def full_disk(path, features, coords, attrs):
        if "b.h5" in str(path):
            real(path, features[:1], coords[:1], attrs)  # part of it reaches the disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, features, coords, attrs)

    monkeypatch.setattr(features_io, "_write_h5", full_disk)
    out = tmp_path / "out"
    ran = run_cli(capsys, "embed", *map(str, slides.values()), *embed_args(tiny_encoder_dir, out))
    _assert_stopped_cleanly(out, ran)
    rows = summary_rows(out)
    assert [rows[n]["status"] for n in ("a.svs", "b.svs", "c.svs")] == ["ok", "failed", "not_run"]
    assert "No space left" in rows["b.svs"]["error"]


def test_an_unwritable_output_folder_is_an_environment_error(
    synthetic_slides, tiny_encoder_dir, tmp_path, capsys
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ran = run_cli(
        capsys, "embed", str(synthetic_slides.svs), *embed_args(tiny_encoder_dir, blocker / "out")
    )
    assert ran.code == 3 and "Cannot write to" in ran.err and ran.err.count("\n") == 1


def test_a_summary_that_cannot_be_written_is_an_environment_error(
    slide_copies, tiny_encoder_dir, tmp_path, capsys, monkeypatch
) -> None:
    from histo_encoders.pipeline import summary as summary_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(summary_module, "atomic_write_text", full)
    slides = slide_copies(**{"a.svs": "svs"})
    out = tmp_path / "out"
    ran = run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(tiny_encoder_dir, out))
    assert ran.code == 3 and "summary could not be written" in ran.err
    assert "a.svs" in ran.out and read_features(out / "a.h5")[0].shape[0] > 0
