"""A real kill: `histo-encoders embed` stopped with SIGKILL part-way leaves nothing that a rerun
takes as finished, and the rerun ends with exactly what an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from histo_encoders.pipeline.features import read_features
from histo_encoders.tools.synthetic import write_synthetic_slide
from tests.fixture_paths import REPO


def _embed_command(slides: list[Path], encoder: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "histo_encoders", "embed", *map(str, slides),
        "--encoder", str(encoder), "--out", str(out),
        "--device", "cpu", "--workers", "0", "--batch-size", "4", "--no-progress",
    ]  # fmt: skip


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _kill_after_first_output(command: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.h5")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.integration
def test_killed_run_resumes_to_the_uninterrupted_result(tiny_encoder_dir: Path, tmp_path: Path):
    slides = [
        write_synthetic_slide(tmp_path / f"s{i}.svs", width=1536, height=1024, mpp=0.5, seed=i).path
        for i in range(3)
    ]
    out, reference = tmp_path / "killed", tmp_path / "reference"
    _kill_after_first_output(_embed_command(slides, tiny_encoder_dir, out), out)

    finished = sorted(p.name for p in out.glob("*.h5"))
    assert 1 <= len(finished) < 3, "the kill should land while slides remain"
    for path in out.glob("*.h5"):
        read_features(path)  # a file under its final name is always a complete one

    rerun = _run(_embed_command(slides, tiny_encoder_dir, out))
    assert rerun.returncode == 0, rerun.stderr
    assert _run(_embed_command(slides, tiny_encoder_dir, reference)).returncode == 0
    for slide in slides:
        name = f"{slide.stem}.h5"
        features, coords, _ = read_features(out / name)
        expected_features, expected_coords, _ = read_features(reference / name)
        np.testing.assert_array_equal(coords, expected_coords)
        np.testing.assert_allclose(features, expected_features, rtol=1e-6, atol=1e-6)
    assert not list(out.glob("*.partial")), "leftovers of the killed write are cleaned or replaced"
