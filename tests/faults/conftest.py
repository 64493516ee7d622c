"""Helpers for the fault suite: running the command line as a user does, and small file faults.

Every test here creates its fault itself and asserts what the user sees: the exit code, the
summary rows, the files on disk, and that no Python traceback reached the terminal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from histo_encoders.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ran:
    """What a user saw: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> Ran:
    """``histo-encoders ARGS`` in this process (argparse's own exits included)."""
    try:
        code = main(list(args))
    except SystemExit as exited:
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return Ran(code, captured.out, captured.err)


def run_subprocess(*args: str, timeout: float = 180, env: dict | None = None) -> Ran:
    """``python -m histo_encoders ARGS`` in a fresh process (a crash shows as a signal)."""
    result = subprocess.run(
        [sys.executable, "-m", "histo_encoders", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return Ran(result.returncode, result.stdout, result.stderr)


def embed_args(encoder: Path, out: Path, *extra: str) -> list[str]:
    """The options every embed in this suite uses: the tiny encoder on the CPU, quietly."""
    return [
        "--encoder", str(encoder), "--out", str(out), "--device", "cpu", "--workers", "0",
        "--batch-size", "16", "--no-progress", *extra,
    ]  # fmt: skip


def summary_rows(out: Path) -> dict[str, dict]:
    """summary.json's rows by slide file name."""
    record = json.loads((out / "summary.json").read_text())
    return {Path(row["slide"]).name: row for row in record["slides"]}


def leftovers(folder: Path) -> list[str]:
    """Temporary files and locks a writer left behind (there must be none)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".lock")))


@pytest.fixture
def slide_copies(synthetic_slides, tmp_path: Path):
    """Copy the session's synthetic slides under new names into a folder of this test."""

    def copy(folder: str = "slides", **names: str) -> dict[str, Path]:
        target = tmp_path / folder
        target.mkdir(exist_ok=True)
        sources = {"svs": synthetic_slides.svs, "tiff": synthetic_slides.tiff}
        return {
            name: Path(shutil.copy(sources[kind], target / name)) for name, kind in names.items()
        }

    return copy
