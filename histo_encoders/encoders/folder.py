"""The encoder folder format: timm's hub layout plus our histology metadata.

A folder holds ``config.json``, ``model.safetensors`` and a ``README.md`` model card. timm reads
``architecture``, ``num_classes``, ``num_features``, ``model_args`` and ``pretrained_cfg``; its
``pretrained_cfg`` is a closed dataclass (an unknown key there breaks ``timm.create_model``), while
unknown top-level keys are ignored. So every ``pretrained_cfg`` field is written explicitly (left
out, timm silently assumes ImageNet values) and the histology metadata lives under one top-level
key, ``histo_encoders``.
"""

from __future__ import annotations

from typing import Any

from histo_encoders.encoders.checks import check_config, check_document
from histo_encoders.encoders.config import EncoderConfig

METADATA_KEY = "histo_encoders"
FORMAT_VERSION = 1
_METADATA_FIELDS = (
    "name",
    "mpp",
    "tile_size",
    "ssl_method",
    "training_data",
    "citation",
    "description",
    "aliases",
)


def pretrained_cfg(config: EncoderConfig, *, source: str | None = None) -> dict[str, Any]:
    """timm ``pretrained_cfg`` for ``config``: every field that drives preprocessing, written out."""
    size = config.tile_size
    cfg: dict[str, Any] = {
        "architecture": config.architecture,
        "tag": config.name.replace("-", "_"),
        "custom_load": False,
        "input_size": (3, size, size),
        "fixed_input_size": False,
        "interpolation": config.interpolation,
        "crop_pct": config.crop_pct,
        "crop_mode": "center",
        "mean": config.mean,
        "std": config.std,
        "num_classes": 0,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": config.license,
    }
    if config.hub_id:
        cfg["hf_hub_id"] = config.hub_id
    if source:
        cfg["source"] = source
    return cfg


def to_config_json(config: EncoderConfig, *, weights_sha256: str | None = None) -> dict[str, Any]:
    """The ``config.json`` of an encoder folder."""
    metadata: dict[str, Any] = {"format_version": FORMAT_VERSION}
    for key in _METADATA_FIELDS:
        value = getattr(config, key)
        metadata[key] = list(value) if isinstance(value, tuple) else value
    if weights_sha256:
        metadata["weights_sha256"] = weights_sha256
    document: dict[str, Any] = {
        "architecture": config.architecture,
        "num_classes": 0,
        "num_features": config.num_features,
        "global_pool": "avg",
        "pretrained_cfg": pretrained_cfg(config),
        METADATA_KEY: metadata,
    }
    if config.model_args:
        document["model_args"] = dict(config.model_args)
    return document


def from_config_json(
    document: dict[str, Any], *, default_name: str, source: str = "config.json"
) -> EncoderConfig:
    """Rebuild an EncoderConfig from a ``config.json`` (ours, or a plain timm one).

    A plain timm config has no histology metadata: mpp is then None and must be given when
    embedding slides. Every field is checked first (``source`` names the file in errors):
    raises ConfigError, or InvalidConfigValueError naming a field outside its allowed range.
    """
    check_document(document, source=source)
    cfg = document["pretrained_cfg"]
    meta = document.get(METADATA_KEY) or {}
    config = EncoderConfig(
        name=meta.get("name", default_name),
        architecture=document["architecture"],
        num_features=int(document.get("num_features") or 0),
        tile_size=int(meta.get("tile_size", cfg["input_size"][-1])),
        mpp=meta.get("mpp"),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        license=cfg.get("license", "unknown"),
        ssl_method=meta.get("ssl_method", "unknown"),
        training_data=meta.get("training_data", "unknown"),
        citation=meta.get("citation", ""),
        description=meta.get("description", f"encoder loaded from {default_name}"),
        hub_id=cfg.get("hf_hub_id"),
        sha256=meta.get("weights_sha256"),
        interpolation=cfg.get("interpolation", "bicubic"),
        crop_pct=float(cfg.get("crop_pct", 1.0)),
        model_args=document.get("model_args") or {},
        aliases=tuple(meta.get("aliases", ())),
    )
    return check_config(config, source=source)
