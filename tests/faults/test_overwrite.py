"""Class 10: ``publish``/``convert --overwrite`` replaces only an encoder folder histo-encoders
wrote, by writing the new one beside it and swapping; any other folder is left untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from histo_encoders.encoders import publish
from histo_encoders.encoders.trust import sha256_file
from tests.encoder_kit import TINY, export_tiny, seeded_state
from tests.faults.conftest import run_cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    meta = {"architecture": "test_resnet", "num_features": 96, "tile_size": 32, "mpp": 0.5}
    meta |= {"mean": [0.5] * 3, "std": [0.25] * 3}
    path = tmp_path_factory.mktemp("ckpt") / "trained.pt"
    torch.save({"encoder_state_dict": seeded_state(TINY, seed=7), "encoder_meta": meta}, path)
    return path


@pytest.fixture(scope="module")
def moco_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = {f"module.encoder_q.{k}": v for k, v in seeded_state(TINY, seed=8).items()}
    path = tmp_path_factory.mktemp("moco") / "moco.pth.tar"
    torch.save({"state_dict": state}, path)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _unrelated(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "target"
    folder.mkdir()
    if kind == "a folder of notes":
        (folder / "notes.txt").write_text("lab notebook")
        (folder / "results.csv").write_text("slide,auc\n")
    elif kind == "an empty folder":
        pass
    elif kind == "a transformers model":  # same three file names, not our config.json
        (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
        (folder / "model.safetensors").write_bytes(b"weights of something else")
        (folder / "README.md").write_text("# another model")
    elif kind == "an encoder folder with a user file":
        export_tiny(tmp_path / "enc")
        for p in (tmp_path / "enc").iterdir():
            (folder / p.name).write_bytes(p.read_bytes())
        (folder / "my-notes.txt").write_text("keep me")
    return folder


KINDS = [
    "a folder of notes",
    "an empty folder",
    "a transformers model",
    "an encoder folder with a user file",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["publish", "convert"])
def test_overwrite_refuses_anything_but_an_encoder_folder(
    checkpoint, moco_checkpoint, tmp_path, capsys, kind, command
) -> None:
    folder = _unrelated(tmp_path, kind)
    before = _snapshot(folder)
    if command == "publish":
        args = ["publish", str(checkpoint), "--name", "trained-tiny"]
    else:
        args = ["convert", str(moco_checkpoint), "--name", "moco-camelyon"]
    ran = run_cli(capsys, *args, "--out", str(folder), "--overwrite")
    assert ran.code == 2
    assert "not an encoder folder" in ran.err and ran.err.count("\n") == 1
    assert _snapshot(folder) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging


def test_overwrite_refuses_a_link_to_an_encoder_folder(checkpoint, tmp_path, capsys) -> None:
    real = export_tiny(tmp_path / "real")
    link = tmp_path / "link"
    os.symlink(real, link)
    ran = run_cli(
        capsys, "publish", str(checkpoint), "--name", "x", "--out", str(link), "--overwrite"
    )
    assert ran.code == 2 and link.is_symlink() and (real / "model.safetensors").exists()


def test_without_overwrite_an_existing_folder_is_refused(checkpoint, tmp_path, capsys) -> None:
    folder = export_tiny(tmp_path / "enc")
    ran = run_cli(capsys, "publish", str(checkpoint), "--name", "x", "--out", str(folder))
    assert ran.code == 2 and "--overwrite" in ran.err


def test_overwrite_swaps_an_encoder_folder_whole(checkpoint, tmp_path, capsys, monkeypatch):
    folder = export_tiny(tmp_path / "enc", seed=1)
    old_sha = sha256_file(folder / "model.safetensors")
    before = _snapshot(folder)

    def crash_while_writing(staging, state, config, notes):
        (staging / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish, "_write_folder", crash_while_writing)
    ran = run_cli(
        capsys, "publish", str(checkpoint), "--name", "t", "--out", str(folder), "--overwrite"
    )
    assert ran.code == 3 and _snapshot(folder) == before  # the old folder, whole
    monkeypatch.undo()
    ran = run_cli(
        capsys, "publish", str(checkpoint), "--name", "t", "--out", str(folder), "--overwrite"
    )
    assert ran.code == 0
    assert sha256_file(folder / "model.safetensors") != old_sha
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]  # no staging or old copy left
