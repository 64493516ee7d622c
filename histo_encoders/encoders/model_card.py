"""Model cards: Hugging Face front matter (written by huggingface_hub's own card classes, so the
hub and ``ModelCard.load`` parse it) plus the facts a pathologist's pipeline needs.

What the weights cannot tell (licence, training data, citation) is said plainly when it is not
known, never borrowed from another record.
"""

from __future__ import annotations

from typing import Any

from histo_encoders.encoders.config import EncoderConfig

# Licence ids the hub knows (https://huggingface.co/docs/hub/repositories-licenses, those our
# encoders use); anything else is written as `other` with its name and a link to its terms.
HUB_LICENSES = frozenset(
    {
        "apache-2.0",
        "mit",
        "bsd-3-clause",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "cc-by-nc-nd-4.0",
        "openrail",
        "unknown",
    }
)
# Where the terms of licences the hub does not know are published.
LICENSE_LINKS = {
    "lunit-non-commercial": "https://github.com/lunit-io/benchmark-ssl-pathology/blob/main/LICENSE",
}
# Without a known link, the card's own licence section says what is known.
CARD_LICENSE_SECTION = "README.md#licence"
UNKNOWN = "unknown"
TAGS = ("timm", "histology", "pathology", "image-feature-extraction", "histo-encoders")


def card_data(config: EncoderConfig) -> Any:
    """The card's front matter as huggingface_hub's ``ModelCardData``."""
    from huggingface_hub import ModelCardData

    license_fields: dict[str, str] = {"license": config.license}
    if config.license not in HUB_LICENSES:
        license_fields = {
            "license": "other",
            "license_name": _license_name(config.license),
            "license_link": LICENSE_LINKS.get(config.license, CARD_LICENSE_SECTION),
        }
    return ModelCardData(
        library_name="timm",
        pipeline_tag="image-feature-extraction",
        tags=list(TAGS),
        datasets=list(config.datasets) or None,
        **license_fields,
    )


def front_matter(config: EncoderConfig) -> dict[str, object]:
    """The card's front matter as a dict (what ``ModelCard.load(...).data.to_dict()`` gives)."""
    return card_data(config).to_dict()


def render_card(
    config: EncoderConfig, *, weights_sha256: str | None = None, notes: str = ""
) -> str:
    """Markdown model card for ``config``; ``notes`` (training details, results) is appended."""
    mpp = f"{config.mpp} um/px" if config.mpp else "not recorded: give --mpp when embedding"
    rows = [
        ("architecture", f"timm `{config.architecture}`" + _model_args(config)),
        ("features", f"{config.num_features}-d, {_embedding(config)}"),
        ("tiles", f"{config.tile_size} px at {mpp}"),
        ("normalization", f"mean {list(config.mean)}, std {list(config.std)}"),
        ("self-supervision", _known(config.ssl_method)),
        ("training data", _known(config.training_data)),
        ("licence", _known(config.license)),
        ("weights sha256", weights_sha256 or config.sha256 or "recorded at first download"),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    body = f"""---
{card_data(config).to_yaml()}
---
# {config.name}

{config.description}

| | |
|---|---|
{table}

## How to load
{_usage(config)}

## Licence
{_licence_text(config)}

## Citation
{config.citation or "None given: the authors of these weights did not say how to cite them."}
"""
    return body + (f"\n{notes.strip()}\n" if notes.strip() else "")


def _usage(config: EncoderConfig) -> str:
    """Loading lines; a folder without a hub id is loaded from its path (timm's local-dir:)."""
    if config.hub_id:
        name, timm_id = config.name, f"hf-hub:{config.hub_id}"
    else:
        name, timm_id = "path/to/this/folder", "local-dir:path/to/this/folder"
    return f"""```python
import histo_encoders
model = histo_encoders.load("{name}")  # timm model, eval mode, pooled features
transform = histo_encoders.get_transform(model)  # this encoder's own normalization
```
Without histo-encoders: `timm.create_model("{timm_id}", pretrained=True, num_classes=0)`.
Cut tiles at {f"{config.mpp} um/px" if config.mpp else "the resolution you give with --mpp"} and \
{config.tile_size} px: `histo-encoders embed SLIDE --encoder {name}`."""


def _licence_text(config: EncoderConfig) -> str:
    if config.license == UNKNOWN or not config.license:
        return (
            "Unknown: whoever wrote this folder did not state the licence of these weights. "
            "Ask their authors before using them."
        )
    link = LICENSE_LINKS.get(config.license)
    return f"{config.license}" + (f": terms at {link}" if link else ".")


def _known(value: str) -> str:
    return (
        value if value and value != UNKNOWN else "unknown (not stated when this folder was written)"
    )


def _license_name(license_text: str) -> str:
    # The hub expects an id-like name: lower case words joined by dashes.
    words = "".join(c if c.isalnum() else " " for c in license_text.lower()).split()
    return "-".join(words)[:64] or UNKNOWN


def _embedding(config: EncoderConfig) -> str:
    if config.pooling == "timm":
        return "global average pooled"
    from histo_encoders.encoders.pooling import get_rule

    return get_rule(config.pooling).description


def _model_args(config: EncoderConfig) -> str:
    return f" with {dict(config.model_args)}" if config.model_args else ""
