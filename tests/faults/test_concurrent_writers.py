"""Class 9: two processes embedding into one --out never both embed a slide, and nobody ever
sees a feature file without its completeness mark under its final name."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest

from histo_encoders.atomic import FileLock
from tests.faults.conftest import REPO, embed_args, leftovers


def _watch(out: Path, stop: threading.Event, seen: list[str], incomplete: list[str]) -> None:
    """Open every .h5 under its final name as soon as it appears: it must be complete."""
    while not stop.is_set():
        for path in out.glob("*.h5"):
            try:
                with h5py.File(path, "r") as h5:
                    if not h5.attrs.get("complete", False):
                        incomplete.append(path.name)
            except OSError as error:  # a half-written file would fail to open
                incomplete.append(f"{path.name}: {error}")
            seen.append(path.name)
        time.sleep(0.005)


@pytest.mark.integration
def test_two_processes_on_one_output_folder_embed_each_slide_once(
    slide_copies, tiny_encoder_dir, tmp_path
) -> None:
    names = {f"s{i}.svs": "svs" for i in range(3)} | {f"t{i}.tiff": "tiff" for i in range(3)}
    slides = slide_copies(**names)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "histo_encoders", "embed", str(slides["s0.svs"].parent)]
    command += embed_args(tiny_encoder_dir, out)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stop, seen, incomplete = threading.Event(), [], []
    watcher = threading.Thread(target=_watch, args=(out, stop, seen, incomplete), daemon=True)
    watcher.start()
    runs = [
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=240) for run in runs]
    stop.set()
    watcher.join()
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
        assert "Traceback" not in stderr
    embedded: dict[str, int] = {name: 0 for name in names}
    for stdout, _ in outputs:
        for line in stdout.splitlines():
            status, *rest = line.split()
            if status in ("ok", "skipped") and rest:
                embedded[Path(rest[0]).name] += status == "ok"
    assert embedded == dict.fromkeys(names, 1)  # each slide embedded by exactly one process
    assert not incomplete and seen
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(f"{Path(n).stem}.h5" for n in names)
    assert leftovers(out) == []


def test_file_lock_excludes_and_survives_removal_by_its_holder(tmp_path: Path) -> None:
    path = tmp_path / ".x.h5.lock"
    first = FileLock(path, remove=True)
    assert first.acquire(blocking=False)
    second = FileLock(path, remove=True)
    assert not second.acquire(blocking=False)
    got = threading.Event()

    def wait_for_it() -> None:
        second.acquire()  # blocks until the first releases (and removes) the file
        got.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.1)
    assert not got.is_set()
    first.release()
    waiter.join(timeout=5)
    assert got.is_set() and second.held and path.exists()  # it locked the new file, not the old
    third = FileLock(path)
    assert not third.acquire(blocking=False)
    second.release()
    assert not path.exists()
