"""Every registry record is complete and consistent with its architecture and model card."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from histo_encoders import errors
from histo_encoders.encoders import pooling
from histo_encoders.encoders.load import build_model
from histo_encoders.encoders.model_card import front_matter
from histo_encoders.encoders.registry import get_config, list_encoders, register_encoder

CARDS = Path(__file__).resolve().parents[2] / "model_cards"
NAMES = list(list_encoders())


def _card_front_matter(path: Path) -> dict[str, object]:
    # The hub's own parser: what it cannot read, the hub cannot either.
    from huggingface_hub import ModelCard

    return ModelCard.load(path).data.to_dict()


@pytest.mark.parametrize("name", NAMES)
def test_record_is_complete(name: str) -> None:
    config = get_config(name)
    assert config.mpp is not None and 0.1 <= config.mpp <= 2.0
    assert config.tile_size >= 32
    assert all(0.0 < m < 1.0 for m in config.mean) and all(0.0 < s < 1.0 for s in config.std)
    assert config.license and config.citation and config.training_data and config.ssl_method
    assert config.crop_pct == 1.0, "tiles must never be centre-cropped"
    assert config.hub_id and re.fullmatch(r"[\w.-]+/[\w.-]+", config.hub_id)
    # Unpinned records are allowed (verified by trust on first use, marked in `list`), but a pin
    # is a full commit id and a full sha256, and a hash only ever comes with its commit.
    if config.revision:
        assert re.fullmatch(r"[0-9a-f]{40}", config.revision), "pin a full commit id"
    if config.sha256:
        assert config.revision and re.fullmatch(r"[0-9a-f]{64}", config.sha256)
    assert config.weights_file in ("model.safetensors", "pytorch_model.bin")
    assert config.pooling in pooling.RULES
    if config.gated:
        assert "Gated" in config.notes, "say how access is granted"


@pytest.mark.parametrize("name", NAMES)
def test_record_fits_its_architecture(name: str) -> None:
    # Full size, on the meta device: no memory, no weights; the embedding is the record's width.
    config = get_config(name)
    with torch.device("meta"):
        model = pooling.apply_pooling(build_model(config), config.pooling)
        embedding = model(torch.empty(2, 3, config.tile_size, config.tile_size))
    assert model.num_features == config.num_features == embedding.shape[1]


@pytest.mark.parametrize("name", NAMES)
def test_model_card_matches_record(name: str) -> None:
    config = get_config(name)
    text = (CARDS / f"{name}.md").read_text(encoding="utf-8")
    assert _card_front_matter(CARDS / f"{name}.md") == front_matter(config)
    assert f"{config.mpp} um/px" in text and f"{config.tile_size} px" in text
    assert str(list(config.mean)) in text and str(list(config.std)) in text
    assert config.license in text and config.description in text


def test_aliases_resolve_to_the_same_record() -> None:
    assert get_config("resnet50.tv_in1k") is get_config("imagenet")
    assert get_config("lunit_mocov2") is get_config("lunit-mocov2")


def test_records_are_frozen() -> None:
    config = get_config("imagenet")
    with pytest.raises(AttributeError):
        config.mpp = 0.25  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.model_args["layers"] = [1]  # type: ignore[index]


def test_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_encoder(get_config("imagenet").with_updates(aliases=()))


def test_unpublished_record_says_so_on_its_card() -> None:
    config = get_config("moco-camelyon")
    assert not config.published
    assert "Not published yet" in (CARDS / "moco-camelyon.md").read_text(encoding="utf-8")
    with pytest.raises(errors.EncoderNotPublishedError):
        __import__("histo_encoders").load("moco-camelyon")


def test_readme_encoder_table_lists_every_record() -> None:
    readme = (CARDS.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Encoders", 1)[1].split("\n## ", 1)[0]
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in section.splitlines()
        if line.startswith("| `")
    }
    for name in NAMES:
        assert name in rows, f"README's encoder table lacks {name}"
        config = get_config(name)
        if config.sources:  # the field's records: the row states the record's facts
            row = rows[name]
            assert (
                f"| {config.num_features} (" in row
                and f"{config.tile_size} px @ {config.mpp}" in row
            )
            assert ("| yes |" if config.gated else "| no |") in row
            pin = {"commit+sha256": "commit + sha256"}.get(config.pinned, config.pinned)
            assert row.rstrip().endswith(f"| {pin} |")
