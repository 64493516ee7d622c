"""Writing files whole: temporary names per writer, nothing left on failure, leftovers of
killed writers removed by the next writer that holds the lock."""

from __future__ import annotations

import pytest

from histo_encoders.atomic import atomic_write, atomic_write_text, remove_leftovers, temporary_name


def test_two_writers_never_share_a_temporary_name(tmp_path):
    target = tmp_path / "slide.h5"
    assert temporary_name(target) != temporary_name(target)


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")

    def half_then_fail(temporary):
        temporary.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_leftovers_of_killed_writers_are_removed_and_only_theirs(tmp_path):
    target = tmp_path / "s1.h5"
    killed = temporary_name(target)
    killed.write_bytes(b"half a file")
    other = temporary_name(tmp_path / "s10.h5")  # another output's writer: not ours to touch
    other.write_bytes(b"busy")
    assert remove_leftovers(target) == 1
    assert not killed.exists() and other.exists()
