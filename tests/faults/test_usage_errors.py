"""Class 11: usage errors are not crashes. Every numeric flag is checked when the command line
is parsed: exit code 2 and one line naming the flag and the allowed range, no traceback; a bug
is exit code 4 and one line, and --debug shows the traceback."""

from __future__ import annotations

import pytest

from histo_encoders.cli import main
from tests.faults.conftest import run_cli

EMBED_FLAGS = [
    ("--batch-size", "0", "from 1 to 65536"),
    ("--batch-size", "-3", "from 1 to 65536"),
    ("--batch-size", "8.5", "integer"),
    ("--workers", "-1", "from 0 to 256"),
    ("--mpp", "0", "[0.05, 20]"),
    ("--mpp", "-0.5", "[0.05, 20]"),
    ("--mpp", "nan", "[0.05, 20]"),
    ("--mpp", "inf", "[0.05, 20]"),
    ("--mpp", "half", "[0.05, 20]"),
    ("--slide-mpp", "0", "[0.05, 20]"),
    ("--slide-mpp", "350", "[0.05, 20]"),
    ("--tile-size", "0", "from 8 to 8192"),
    ("--tile-size", "-224", "from 8 to 8192"),
    ("--min-tissue", "5", "[0, 1]"),
    ("--min-tissue", "-0.1", "[0, 1]"),
    ("--reader", "nonsense", "choose from"),
    ("--precision", "fp8", "choose from"),
]
BENCHMARK_FLAGS = [
    ("--repeats", "0", "from 1 to 1000"),
    ("--threads", "-1", "from 0 to 1024"),
    ("--max-tiles", "0", ">= 1"),
    ("--model-tiles", "0", ">= 1"),
    ("--batch-size", "0", "from 1 to 65536"),
    ("--mpp", "0", "[0.05, 20]"),
    ("--tile-size", "1", "from 8 to 8192"),
]


def _assert_one_line(ran, flag: str, allowed: str) -> None:
    assert ran.code == 2
    assert ran.err.count("\n") == 1, ran.err
    assert flag in ran.err and allowed in ran.err


@pytest.mark.parametrize(("flag", "value", "allowed"), EMBED_FLAGS)
def test_embed_flags_are_checked_at_parse_time(capsys, tmp_path, flag, value, allowed) -> None:
    ran = run_cli(capsys, "embed", "x.svs", "--out", str(tmp_path / "o"), flag, value)
    _assert_one_line(ran, flag, allowed)
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.parametrize(("flag", "value", "allowed"), BENCHMARK_FLAGS)
def test_benchmark_flags_are_checked_at_parse_time(capsys, flag, value, allowed) -> None:
    _assert_one_line(run_cli(capsys, "benchmark", flag, value), flag, allowed)


def test_out_being_a_file_is_a_usage_error(capsys, tmp_path, synthetic_slides) -> None:
    existing = tmp_path / "features.h5"
    existing.write_text("not a folder")
    ran = run_cli(capsys, "embed", str(synthetic_slides.svs), "--out", str(existing))
    assert ran.code == 2 and "--out" in ran.err and ran.err.count("\n") == 1
    assert existing.read_text() == "not a folder"


def test_a_bug_is_exit_code_4_and_debug_shows_the_traceback(capsys, monkeypatch) -> None:
    from histo_encoders.cli import encoders as encoder_commands

    def broken(args):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(encoder_commands, "_run_list", broken)
    ran = run_cli(capsys, "list")
    assert ran.code == 4 and "internal error (TypeError)" in ran.err and "--debug" in ran.err
    assert main(["--debug", "list"]) == 4
    assert "Traceback" in capsys.readouterr().err
    assert main(["list", "--debug"]) == 4  # after the command too
    assert "Traceback" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys) -> None:
    for argv in (["--help"], ["embed", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        printed = capsys.readouterr().out
        for code in ("0 ", "1 ", "2 ", "3 ", "4 "):
            assert f"\n  {code}" in printed
        assert "disk full" in printed
