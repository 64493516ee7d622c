"""The generated model cards in model_cards/ are up to date with their records."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_encoders.encoders.registry import get_config
from histo_encoders.tools.model_cards import card_text, generated_names, write_model_cards

CARDS = Path(__file__).resolve().parents[2] / "model_cards"
GENERATED = generated_names()


def test_every_field_record_has_a_generated_card() -> None:
    for name in ("uni", "uni2-h", "virchow2", "h-optimus-0", "prov-gigapath", "kaiko-vitb8"):
        assert name in GENERATED
    assert "lunit-mocov2" not in GENERATED  # hand-written provenance, kept


@pytest.mark.parametrize("name", GENERATED)
def test_card_is_up_to_date(name: str) -> None:
    text = (CARDS / f"{name}.md").read_text(encoding="utf-8")
    assert text == card_text(get_config(name)), (
        f"model_cards/{name}.md is stale: run `python -m histo_encoders.tools.model_cards "
        "model_cards`"
    )


def test_cards_say_what_is_verified_and_what_is_the_authors(tmp_path: Path) -> None:
    (path,) = write_model_cards(tmp_path, ["virchow2"])
    card = path.read_text(encoding="utf-8")
    assert "## What histo-encoders verifies" in card and "## Taken from the authors" in card
    assert "**unpinned**" in card and "https://huggingface.co/paige-ai/Virchow2" in card
    assert "2560-d, class token concatenated with the mean of the patch tokens" in card
    pinned = card_text(get_config("h-optimus-0"))
    assert get_config("h-optimus-0").sha256 in pinned and "weights_only=True" in pinned
    assert "Not gated" in pinned
