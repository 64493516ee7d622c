"""The encoder folder format: timm's hub layout plus our histology metadata.

A folder holds ``config.json``, ``model.safetensors`` and a ``README.md`` model card. timm reads
``architecture``, ``num_classes``, ``num_features``, ``model_args`` and ``pretrained_cfg``; its
``pretrained_cfg`` is a closed dataclass (an unknown key there breaks ``timm.create_model``), while
unknown top-level keys are ignored. So every ``pretrained_cfg`` field is written explicitly (left
out, timm silently assumes ImageNet values) and the histology metadata lives under one top-level
key, ``histo_encoders``.

Layer classes in ``model_args`` (``mlp_layer``) are written by name: a config.json cannot carry a
class, so plain timm users pass it in code, as the authors of such weights tell them to.
"""

from __future__ import annotations

from typing import Any

from histo_encoders.encoders.checks import check_config, check_document
from histo_encoders.encoders.config import IMAGENET_MEAN, IMAGENET_STD, EncoderConfig
from histo_encoders.errors import ConfigError

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
    "datasets",
    "pooling",
)
# How to record what a plain timm folder lacks, in the words of the error messages.
HOW_TO_ADD_METADATA = (
    'add it to the folder\'s config.json as a top-level "histo_encoders": {"mpp": 0.5, '
    '"tile_size": 224} (timm ignores that key)'
)
# What timm's own pooling is set to for each rule (top-level "global_pool", as timm writes it).
_GLOBAL_POOL = {"timm": "avg", "cls": "token", "cls+mean": ""}


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
        "first_conv": _architecture_default(config.architecture, "first_conv", "conv1"),
        "classifier": _architecture_default(config.architecture, "classifier", "fc"),
        "license": config.license,
    }
    if config.hub_id:
        cfg["hf_hub_id"] = config.hub_id
    if source:
        cfg["source"] = source
    return cfg


def _architecture_default(architecture: str, key: str, fallback: str) -> str:
    """A pretrained_cfg field of the architecture's default timm weights (layer names)."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(architecture)
    return getattr(cfg, key, None) or fallback


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
        "global_pool": _GLOBAL_POOL.get(config.pooling, "avg"),
        "pretrained_cfg": pretrained_cfg(config),
        METADATA_KEY: metadata,
    }
    if config.model_args:
        document["model_args"] = dict(config.model_args)
    return document


def from_config_json(
    document: dict[str, Any], *, default_name: str, source: str = "config.json"
) -> EncoderConfig:
    """Rebuild an EncoderConfig from a ``config.json``: ours, or any one timm loads.

    A folder written by timm's ``save_for_hf`` (or any timm hub repo) has no histology metadata:
    mpp is then None and must be given when embedding (``--mpp``), the tile size is timm's
    ``input_size``, and ``num_classes`` / a classifier head are ignored (encoders give pooled
    features). timm's older layout, with the ``pretrained_cfg`` fields at the top level, is read
    too; normalization missing from the file is the architecture's timm default, as timm does.
    Every field is then checked (``source`` names the file in errors): raises ConfigError when
    even the architecture is missing, InvalidConfigValueError naming a field outside its range.
    """
    if not isinstance(document, dict) or not isinstance(document.get("architecture"), str):
        raise ConfigError(
            f"{source} has no 'architecture': it is not a timm model folder. Create one with "
            "`histo-encoders convert`, `histo-encoders publish` or timm's save_for_hf."
        )
    architecture = document["architecture"]
    cfg = document.get("pretrained_cfg")
    if not isinstance(cfg, dict):
        cfg = document  # timm's older config.json: pretrained_cfg fields at the top level
    defaults = _timm_defaults(architecture)
    cfg = {
        **cfg,
        "mean": cfg.get("mean") or defaults.get("mean") or IMAGENET_MEAN,
        "std": cfg.get("std") or defaults.get("std") or IMAGENET_STD,
        "input_size": cfg.get("input_size") or defaults.get("input_size") or (3, 224, 224),
    }
    check_document({**document, "pretrained_cfg": cfg}, source=source)
    meta = document.get(METADATA_KEY) or {}
    model_args = {k: v for k, v in (document.get("model_args") or {}).items() if k != "num_classes"}
    plain = METADATA_KEY not in document
    description = meta.get("description") or (
        f"timm model folder {default_name}: it records no histology metadata (mpp, tile size); "
        f"give --mpp / --tile-size when embedding, or {HOW_TO_ADD_METADATA}"
        if plain
        else f"encoder loaded from {default_name}"
    )
    config = EncoderConfig(
        name=meta.get("name", default_name),
        architecture=architecture,
        num_features=int(document.get("num_features") or 0),
        tile_size=int(meta.get("tile_size") or cfg["input_size"][-1]),
        mpp=meta.get("mpp"),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        license=cfg.get("license") or "unknown",
        ssl_method=meta.get("ssl_method", "unknown"),
        training_data=meta.get("training_data", "unknown"),
        citation=meta.get("citation", ""),
        description=description,
        hub_id=cfg.get("hf_hub_id"),
        sha256=meta.get("weights_sha256"),
        interpolation=cfg.get("interpolation") or defaults.get("interpolation") or "bicubic",
        crop_pct=float(cfg.get("crop_pct", 1.0) if not plain else 1.0),
        model_args=model_args,
        aliases=tuple(meta.get("aliases", ())),
        datasets=tuple(meta.get("datasets", ())),
        pooling=meta.get("pooling", "timm"),
    )
    return check_config(config, source=source)


def _timm_defaults(architecture: str) -> dict[str, Any]:
    """timm's default pretrained_cfg of ``architecture`` (empty when timm has none)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(architecture)
    except Exception:  # unknown to this timm version: check_config says so clearly
        return {}
    return cfg.to_dict() if cfg is not None else {}
