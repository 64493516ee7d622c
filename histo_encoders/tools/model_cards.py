"""The repository's ``model_cards/`` for the records that list their sources, generated from them.

Run ``python -m histo_encoders.tools.model_cards model_cards`` after changing such a record; a
test fails while a card is out of date. The card is :func:`render_card` (front matter, facts,
how to load, citation) plus what histo-encoders verifies and what it takes from the authors.
The older records' cards carry hand-written provenance and are not generated.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from histo_encoders.atomic import atomic_write_text
from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.model_card import render_card
from histo_encoders.encoders.pooling import get_rule
from histo_encoders.encoders.registry import get_config, list_encoders


def generated_names() -> list[str]:
    """Registered records whose cards are generated: those that list their sources."""
    return [name for name in list_encoders() if get_config(name).sources]


def card_text(config: EncoderConfig) -> str:
    """The model card of ``config``."""
    return render_card(config, notes=_notes(config))


def write_model_cards(folder: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Write ``<folder>/<name>.md`` for ``names`` (default: :func:`generated_names`)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names if names is not None else generated_names():
        path = out / f"{name}.md"
        atomic_write_text(path, card_text(get_config(name)))
        written.append(path)
    return written


def _notes(config: EncoderConfig) -> str:
    return "\n\n".join(
        [_verified(config), _from_the_authors(config), _access(config), _plain_timm(config)]
    )


def _verified(config: EncoderConfig) -> str:
    if config.pinned == "commit+sha256":
        pin = (
            f"the sha256 pinned in the record (`{config.sha256}`), read from the hub's public "
            f"pages for the file at the pinned commit `{config.revision}`"
        )
    elif config.pinned == "commit":
        pin = (
            f"the hash recorded the first time it is downloaded from commit `{config.revision}` "
            "(the hub's pages did not show this file's sha256): later loads must match it"
        )
    else:
        pin = (
            "the hash recorded the first time each commit's file is downloaded (trust on first "
            "use): the record is **unpinned**, because this repository's commits and file "
            "hashes are not public, so it loads `main`"
        )
    rule = get_rule(config.pooling).description
    return "\n".join(
        [
            "## What histo-encoders verifies",
            f"- Every load hashes `{config.weights_file}` and compares it with {pin}.",
            f"- The weights must fill timm `{config.architecture}` with the record's kwargs "
            "exactly: every key and shape, nothing dropped, nothing left at random."
            + _bin_note(config),
            f"- The embedding is the record's pooling rule: {rule} ({config.num_features}-d). "
            "`load()` returns a module giving exactly that, its `num_features` equal to the width.",
            "- Tested on a tiny same-architecture stand-in served by a local hub: the pooling "
            "rule against a computation by hand, the normalization, the tile geometry, and (where "
            "the record pins a hash) that the pin refuses any other file.",
            "- Not verified here: that these weights reproduce the authors' published results.",
        ]
    )


def _bin_note(config: EncoderConfig) -> str:
    if not config.weights_file.endswith(".bin"):
        return ""
    return (
        "\n- The record names `pytorch_model.bin` (no `model.safetensors` known in the repo): it "
        "is hashed first, then read with `torch.load(weights_only=True)`, which runs no pickled "
        "code."
    )


def _from_the_authors(config: EncoderConfig) -> str:
    sources = "\n".join(f"- {source}" for source in config.sources)
    return (
        "## Taken from the authors\n"
        f"The resolution ({config.mpp} um/px), tile size ({config.tile_size} px), architecture "
        "kwargs, normalization, pooling rule, licence, training data and citation are the "
        "authors' (or, where named, a widely used integration's), read from:\n" + sources
    )


def _access(config: EncoderConfig) -> str:
    url = f"https://huggingface.co/{config.hub_id}"
    if config.gated:
        access = (
            f"Gated: request access at {url}, then give your token (`HF_TOKEN`, or "
            "`hf auth login` once). Without access, loading raises `GatedRepoAccessError`."
        )
    else:
        access = f"Not gated: {url}."
    notes = f"\n\n{config.notes}" if config.notes else ""
    return f"## Access and notes\n{access}{notes}"


def _plain_timm(config: EncoderConfig) -> str:
    layers = {k: v for k, v in config.model_args.items() if k in ("mlp_layer", "act_layer")}
    lines = []
    if layers:
        lines.append(
            "Plain timm needs the layer classes in code (a config.json cannot carry them): "
            "`mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU`."
        )
    if config.pooling == "cls+mean":
        lines.append(
            "Plain timm returns the tokens; the embedding is "
            "`torch.cat([x[:, 0], x[:, model.num_prefix_tokens:].mean(1)], dim=-1)`."
        )
    if not lines:
        lines.append("Plain timm with the kwargs above returns this embedding too.")
    lines.append("Normalize with the mean/std above: they are the record's, whatever the hub's")
    lines[-1] += " config.json says."
    return "## Without histo-encoders\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m histo_encoders.tools.model_cards")
    parser.add_argument("folder", type=Path, help="where to write <name>.md (e.g. model_cards)")
    args = parser.parse_args(argv)
    for path in write_model_cards(args.folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
