"""Model cards: Hugging Face YAML front matter plus the facts a pathologist's pipeline needs."""

from __future__ import annotations

from histo_encoders.encoders.config import EncoderConfig

# Licence ids the hub knows; anything else is written as `other` with its name.
_HUB_LICENSES = {
    "apache-2.0",
    "mit",
    "bsd-3-clause",
    "cc-by-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-nd-4.0",
}


def front_matter(config: EncoderConfig) -> dict[str, object]:
    """The card's YAML front matter as a dict (also what tests compare with the registry)."""
    meta: dict[str, object] = {"library_name": "timm"}
    if config.license in _HUB_LICENSES:
        meta["license"] = config.license
    else:
        meta["license"] = "other"
        meta["license_name"] = config.license
    meta["pipeline_tag"] = "image-feature-extraction"
    meta["tags"] = ["timm", "histology", "pathology", "image-feature-extraction", "histo-encoders"]
    return meta


def _yaml(meta: dict[str, object]) -> str:
    lines = []
    for key, value in meta.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"- {item}" for item in value)
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def render_card(
    config: EncoderConfig, *, weights_sha256: str | None = None, notes: str = ""
) -> str:
    """Markdown model card for ``config``; ``notes`` (training details, results) is appended."""
    hub = f"hf-hub:{config.hub_id}" if config.hub_id else "path/to/this/folder"
    mpp = f"{config.mpp} um/px" if config.mpp else "not recorded: give --mpp when embedding"
    rows = [
        ("architecture", f"timm `{config.architecture}`" + _model_args(config)),
        ("features", f"{config.num_features}-d, {_embedding(config)}"),
        ("tiles", f"{config.tile_size} px at {mpp}"),
        ("normalization", f"mean {list(config.mean)}, std {list(config.std)}"),
        ("self-supervision", config.ssl_method),
        ("training data", config.training_data),
        ("licence", config.license),
        ("weights sha256", weights_sha256 or config.sha256 or "recorded at first download"),
    ]
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    body = f"""---
{_yaml(front_matter(config))}
---
# {config.name}

{config.description}

| | |
|---|---|
{table}

## How to load
```python
import histo_encoders
model = histo_encoders.load("{config.name}")  # timm model, eval mode, pooled features
transform = histo_encoders.get_transform(model)  # this encoder's own normalization
```
Without histo-encoders: `timm.create_model("{hub}", pretrained=True)`.
Cut tiles at {mpp} and {config.tile_size} px: `histo-encoders embed SLIDE --encoder {config.name}`.

## Citation
{config.citation or "None given."}
"""
    return body + (f"\n{notes.strip()}\n" if notes.strip() else "")


def _embedding(config: EncoderConfig) -> str:
    if config.pooling == "timm":
        return "global average pooled"
    from histo_encoders.encoders.pooling import get_rule

    return get_rule(config.pooling).description


def _model_args(config: EncoderConfig) -> str:
    return f" with {dict(config.model_args)}" if config.model_args else ""
