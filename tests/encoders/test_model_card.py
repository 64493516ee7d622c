"""Model cards the hub parses, that say what is known and what is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from histo_encoders.cli import main
from histo_encoders.encoders.model_card import front_matter, render_card
from histo_encoders.encoders.registry import get_config, register_encoder, unregister_encoder
from histo_encoders.tools.demo import demo_encoder_config
from tests.encoder_kit import TINY, seeded_state


def _load(text: str, tmp_path: Path) -> ModelCard:
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    return ModelCard.load(path)


def test_demo_card_parses_and_links_its_other_licence(tmp_path):
    config = demo_encoder_config()  # its licence text holds a colon: hand-written YAML broke
    card = _load(render_card(config), tmp_path)
    data = card.data.to_dict()
    assert data == front_matter(config)
    assert data["license"] == "other" and data["license_link"] and data["license_name"]
    assert config.license in card.text


@pytest.mark.parametrize("name", ["imagenet", "lunit-mocov2"])
def test_registry_cards_parse(name, tmp_path):
    config = get_config(name)
    data = _load(render_card(config), tmp_path).data.to_dict()
    if name == "lunit-mocov2":
        assert data["license_link"].startswith("https://github.com/lunit-io/")
    else:
        assert data["license"] == "bsd-3-clause" and data["datasets"] == ["ILSVRC/imagenet-1k"]


def test_folder_without_hub_id_says_local_dir(tmp_path):
    text = render_card(TINY.with_updates(hub_id=None))
    assert 'timm.create_model("local-dir:path/to/this/folder"' in text
    assert "hf-hub:" not in text


def test_convert_like_takes_texts_from_flags_not_from_the_record(tmp_path, capsys):
    state = {f"module.encoder_q.{k}": v for k, v in seeded_state(TINY).items()}
    checkpoint = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": state}, checkpoint)
    register_encoder(
        TINY.with_updates(
            name="record-x",
            training_data="Camelyon16 secret slides",
            citation="Someone 2020",
            license="lunit-non-commercial",
            description="Weights not yet published.",
            published=False,
        )
    )
    try:
        base = ["convert", str(checkpoint), "--name", "mine", "--like", "record-x"]
        assert main([*base, "--out", str(tmp_path / "bare")]) == 0
        flags = ["--license", "cc-by-4.0", "--description", "My encoder.", "--dataset", "org/d"]
        flags += ["--training-data", "my slides", "--citation", "Me 2026"]
        assert main([*base, "--out", str(tmp_path / "given"), *flags]) == 0
    finally:
        unregister_encoder("record-x")
    bare = _load((tmp_path / "bare" / "README.md").read_text(), tmp_path)
    for borrowed in ("Camelyon16 secret", "Someone 2020", "lunit", "not yet published"):
        assert borrowed not in bare.content
    assert bare.data.license == "unknown" and "Ask their authors" in bare.content
    assert "training data | unknown" in bare.content
    given = ModelCard.load(tmp_path / "given" / "README.md")
    assert given.data.license == "cc-by-4.0" and given.data.datasets == ["org/d"]
    for text in ("My encoder.", "my slides", "Me 2026"):
        assert text in given.content
