"""`pip install histo-encoders[train]` brings training/ along: the benchmark and pretraining run
from any folder, without a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_wheel_ships_training_its_configs_and_console_scripts(tmp_path):
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".*"),
    )
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("histo_encoders-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert {"training/mil/cli.py", "training/configs/moco_camelyon.yaml"} <= names
    for script in ("histo-encoders-mil", "histo-encoders-pretrain", "histo-encoders-reproduce"):
        assert script in scripts
    # Installed elsewhere and run from an unrelated folder: no checkout on the path.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    away = tmp_path / "elsewhere"
    away.mkdir()
    for module in ("training.mil", "training.pretrain"):
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            capture_output=True, text=True, timeout=120, cwd=away, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert str(site) in subprocess.run(
            [sys.executable, "-c", f"import {module.split('.')[0]}; print({module.split('.')[0]}.__file__)"],
            capture_output=True, text=True, cwd=away, env=env,
        ).stdout  # fmt: skip


def test_shipped_configs_load_by_name():
    from training.config import load_config

    config = load_config("moco_tiny", ["run.out=x"])
    assert config.run.out == "x"
