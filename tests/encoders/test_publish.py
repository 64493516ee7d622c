"""Encoder folders: what publish writes is what load and plain timm read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import histo_encoders
from histo_encoders import errors
from histo_encoders.encoders.publish import publish_checkpoint
from tests.encoder_kit import TINY, export_tiny, features, seeded_state

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_folder_loads_identically_with_histo_encoders_and_plain_timm(tmp_path: Path) -> None:
    folder = export_tiny(tmp_path / "tiny")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    ours = histo_encoders.load(folder)
    plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert torch.equal(features(ours, X), features(plain, X))
    assert ours.histo_config.mpp == TINY.mpp and ours.histo_config.tile_size == TINY.tile_size


def test_config_json_writes_every_preprocessing_field(tmp_path: Path) -> None:
    document = json.loads((export_tiny(tmp_path / "tiny") / "config.json").read_text())
    cfg = document["pretrained_cfg"]
    assert cfg["mean"] == list(TINY.mean) and cfg["std"] == list(TINY.std)
    assert cfg["crop_pct"] == 1.0 and cfg["input_size"] == [3, 32, 32]
    assert cfg["interpolation"] and cfg["license"] == "apache-2.0"
    meta = document["histo_encoders"]
    assert meta["mpp"] == 0.5 and meta["tile_size"] == 32 and len(meta["weights_sha256"]) == 64
    assert "mpp" not in cfg, "timm rejects unknown pretrained_cfg keys"


def test_corrupt_weights_file_is_refused(tmp_path: Path) -> None:
    folder = export_tiny(tmp_path / "tiny")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated download
    with pytest.raises(errors.ChecksumMismatchError):
        histo_encoders.load(folder)
    document = json.loads((folder / "config.json").read_text())
    del document["histo_encoders"]["weights_sha256"]
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(errors.CorruptWeightsError, match="truncated"):
        histo_encoders.load(folder)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    wrong = TINY.with_updates(
        architecture="resnet18", num_features=512, model_args={"layers": [1, 1, 1, 1]}
    )
    with pytest.raises(errors.WeightsMismatchError, match="missing"):
        histo_encoders.export_encoder(tmp_path / "x", seeded_state(TINY), wrong)
    assert not (tmp_path / "x").exists()


def test_existing_folder_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    export_tiny(tmp_path / "tiny")
    with pytest.raises(FileExistsError):
        export_tiny(tmp_path / "tiny")


def test_training_checkpoint_publishes_as_a_registered_name(tmp_path: Path) -> None:
    meta = {
        "architecture": "test_resnet",
        "num_features": 96,
        "tile_size": 32,
        "mpp": 0.5,
        "mean": list(TINY.mean),
        "std": list(TINY.std),
        "training_data": "synthetic tiles",
        "citation": "Dehaene et al. 2020, arXiv:2012.03583",  # as training/ writes it
        "card_notes": "## Training\n3 steps of MoCo v2 on synthetic tiles.",
    }
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"encoder_state_dict": seeded_state(), "encoder_meta": meta, "step": 3}, checkpoint)
    folder = publish_checkpoint(checkpoint, tmp_path / "moco", name="moco-camelyon")
    model = histo_encoders.load(folder)
    assert model.histo_config.name == "moco-camelyon"
    assert model.histo_config.ssl_method == "MoCo v2" and model.histo_config.mpp == 0.5
    card = (folder / "README.md").read_text()
    assert "3 steps of MoCo v2" in card and "arXiv:2012.03583" in card
    # The registered record's texts are not borrowed: its training data, its "not published".
    assert "Camelyon16 training slides" not in card and "not yet published" not in card
    assert model.histo_config.training_data == "synthetic tiles"


def test_training_checkpoint_publishes_under_a_new_name(tmp_path: Path) -> None:
    meta = {
        "architecture": "test_resnet",
        "num_features": 96,
        "tile_size": 32,
        "mpp": 0.5,
        "mean": list(TINY.mean),
        "std": list(TINY.std),
        "training_data": "synthetic tiles",
        "license": "cc-by-4.0",
        "description": "a fresh encoder",
    }
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"encoder_state_dict": seeded_state(), "encoder_meta": meta}, checkpoint)
    model = histo_encoders.load(publish_checkpoint(checkpoint, tmp_path / "new", name="my-moco"))
    config = model.histo_config
    assert (config.name, config.training_data, config.license) == (
        "my-moco",
        "synthetic tiles",
        "cc-by-4.0",
    )


def test_plain_timm_save_for_hf_folder_loads_like_timm_does(tmp_path: Path) -> None:
    from timm.models import save_for_hf

    trained = timm.create_model("test_resnet", pretrained=False, num_classes=5)  # with a head
    save_for_hf(trained, tmp_path / "plain")  # config.json with num_classes, pytorch_model.bin
    save_for_hf(trained, tmp_path / "safe", safe_serialization=True)
    for folder in (tmp_path / "plain", tmp_path / "safe"):
        ours = histo_encoders.load(folder)
        plain = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()
        assert torch.equal(features(ours, X), features(plain, X))
        config = ours.histo_config
        assert config.mpp is None and config.tile_size == 160  # timm's input_size
        assert '"histo_encoders": {"mpp"' in config.description  # says how to add it
        assert ours.histo_provenance.dropped_keys == ("fc.bias", "fc.weight")


def test_folders_follow_the_umask(tmp_path: Path) -> None:
    import os

    previous = os.umask(0o022)
    try:
        folder = export_tiny(tmp_path / "shared")
    finally:
        os.umask(previous)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "README.md": 0o644,
        "config.json": 0o644,
        "model.safetensors": 0o644,
    }
