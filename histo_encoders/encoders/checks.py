"""Field-by-field checks of an encoder's configuration, before any slide is read.

A config.json (from the hub or a local folder) and every registered record are checked here when
an encoder is loaded. A bad value raises :class:`~histo_encoders.errors.InvalidConfigValueError`
naming the field and the range it must be in, instead of loading an encoder that later crashes
mid-batch or writes NaN features (a std holding 0, a tile size of 0) or that timm rejects with
its own error (an unknown architecture).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.errors import ConfigError, InvalidConfigValueError
from histo_encoders.limits import MPP_RANGE, TILE_SIZE_RANGE

# timm's interpolation names (timm.data.transforms.str_to_interp_mode).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MEAN_RANGE = "3 finite numbers in [0, 1] (one per RGB channel, for pixels scaled to [0, 1])"
_STD_RANGE = "3 finite numbers in (0, 1] (one per RGB channel; 0 would divide by zero)"


def check_document(document: object, *, source: str) -> None:
    """Check the types and values of a ``config.json`` document's fields.

    Raises InvalidConfigValueError naming the first bad field (``pretrained_cfg.std``, ...), or
    ConfigError when the document is not a JSON object.
    """
    if not isinstance(document, Mapping):
        raise ConfigError(f"{source}: config.json must hold a JSON object, not {document!r}")
    _text(document.get("architecture"), "architecture", source)
    cfg = document.get("pretrained_cfg")
    if not isinstance(cfg, Mapping):
        raise InvalidConfigValueError(source, "pretrained_cfg", cfg, "a JSON object")
    _triple(cfg.get("mean"), "pretrained_cfg.mean", source, _MEAN_RANGE, low=0.0, high=1.0)
    _triple(
        cfg.get("std"), "pretrained_cfg.std", source, _STD_RANGE, low=0.0, high=1.0, open_low=True
    )
    side = _input_size(cfg.get("input_size"), source)
    if "crop_pct" in cfg:
        _number(cfg["crop_pct"], "pretrained_cfg.crop_pct", source, 0.0, 1.0, open_low=True)
    if "interpolation" in cfg:
        _choice(cfg["interpolation"], "pretrained_cfg.interpolation", source, INTERPOLATIONS)
    if document.get("num_features") is not None:
        _integer(document["num_features"], "num_features", source, 0, 1 << 20)
    if "model_args" in document and not isinstance(document["model_args"], Mapping):
        raise InvalidConfigValueError(source, "model_args", document["model_args"], "a JSON object")
    _check_metadata(document.get("histo_encoders"), side, source)


def _check_metadata(meta: object, side: int, source: str) -> None:
    if meta is None:
        return
    if not isinstance(meta, Mapping):
        raise InvalidConfigValueError(source, "histo_encoders", meta, "a JSON object")
    if "tile_size" in meta:
        tile_size = _integer(
            meta["tile_size"], "histo_encoders.tile_size", source, *TILE_SIZE_RANGE
        )
        if tile_size != side:
            raise InvalidConfigValueError(
                source,
                "histo_encoders.tile_size",
                tile_size,
                f"equal to the side of pretrained_cfg.input_size ({side})",
            )
    if meta.get("mpp") is not None:
        _number(meta["mpp"], "histo_encoders.mpp", source, *MPP_RANGE)
    for key in ("name", "ssl_method", "training_data", "citation", "description"):
        if key in meta and not isinstance(meta[key], str):
            raise InvalidConfigValueError(source, f"histo_encoders.{key}", meta[key], "text")
    aliases = meta.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise InvalidConfigValueError(source, "histo_encoders.aliases", aliases, "a list of text")
    sha256 = meta.get("weights_sha256")
    if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise InvalidConfigValueError(
            source, "histo_encoders.weights_sha256", sha256, "64 lowercase hex digits"
        )


def check_config(config: EncoderConfig, *, source: str) -> EncoderConfig:
    """Check the values of an encoder record (registered, or rebuilt from a config.json).

    Returns ``config``. Raises InvalidConfigValueError naming the first bad field, including an
    architecture timm does not know.
    """
    _integer(config.tile_size, "tile_size", source, *TILE_SIZE_RANGE)
    if config.mpp is not None:
        _number(config.mpp, "mpp", source, *MPP_RANGE)
    _triple(config.mean, "mean", source, _MEAN_RANGE, low=0.0, high=1.0)
    _triple(config.std, "std", source, _STD_RANGE, low=0.0, high=1.0, open_low=True)
    _number(config.crop_pct, "crop_pct", source, 0.0, 1.0, open_low=True)
    _choice(config.interpolation, "interpolation", source, INTERPOLATIONS)
    _integer(config.num_features, "num_features", source, 0, 1 << 20)
    if config.sha256 is not None and not _SHA256.fullmatch(str(config.sha256)):
        raise InvalidConfigValueError(source, "sha256", config.sha256, "64 lowercase hex digits")
    _check_architecture(config.architecture, source)
    return config


def _check_architecture(architecture: object, source: str) -> None:
    import timm

    name = _text(architecture, "architecture", source)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:8]}*")[:3]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise InvalidConfigValueError(
            source,
            "architecture",
            name,
            f"a model name timm {timm.__version__} knows{hint}; see timm.list_models()",
        )


# --- one value each -------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: object, field: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidConfigValueError(source, field, value, "a non-empty text")
    return value


def _number(
    value: object,
    field: str,
    source: str,
    low: float,
    high: float,
    *,
    open_low: bool = False,
) -> float:
    ok = _is_number(value) and math.isfinite(value)  # type: ignore[arg-type]
    if ok:
        ok = (value > low if open_low else value >= low) and value <= high  # type: ignore[operator]
    if not ok:
        bracket = "(" if open_low else "["
        raise InvalidConfigValueError(
            source, field, value, f"a number in {bracket}{low:g}, {high:g}]"
        )
    return float(value)  # type: ignore[arg-type]


def _integer(value: object, field: str, source: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise InvalidConfigValueError(source, field, value, f"an integer in [{low}, {high}]")
    return value


def _choice(value: object, field: str, source: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidConfigValueError(source, field, value, f"one of {', '.join(choices)}")
    return value  # type: ignore[return-value]


def _triple(
    value: object,
    field: str,
    source: str,
    allowed: str,
    *,
    low: float,
    high: float,
    open_low: bool = False,
) -> tuple[float, float, float]:
    numbers: Any = value
    ok = isinstance(numbers, Sequence) and not isinstance(numbers, str) and len(numbers) == 3
    ok = ok and all(_is_number(v) and math.isfinite(v) for v in numbers)
    ok = ok and all((v > low if open_low else v >= low) and v <= high for v in numbers)
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value
        raise InvalidConfigValueError(source, field, shown, allowed)
    return tuple(float(v) for v in numbers)  # type: ignore[return-value]


def _input_size(value: object, source: str) -> int:
    field = "pretrained_cfg.input_size"
    allowed = (
        f"[3, S, S]: 3 channels and a square side S in [{TILE_SIZE_RANGE[0]}, {TILE_SIZE_RANGE[1]}]"
    )
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)  # type: ignore[union-attr]
    if ok:
        channels, height, width = value  # type: ignore[misc]
        low, high = TILE_SIZE_RANGE
        ok = channels == 3 and height == width and low <= height <= high
    if not ok:
        raise InvalidConfigValueError(source, field, value, allowed)
    return int(value[-1])  # type: ignore[index]
