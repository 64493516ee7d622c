"""histo-encoders: histology tile encoders as plain timm backbones, and whole-slide embedding.

    model = histo_encoders.load("moco-camelyon")       # verified weights, eval mode, pooled features
    transform = histo_encoders.get_transform(model)    # the preprocessing these weights expect
    result = histo_encoders.embed_slide("slide.svs", encoder=model)

Importing the package reads no file and opens no connection.
"""

from __future__ import annotations

from typing import Any

from histo_encoders import errors
from histo_encoders.build import load
from histo_encoders.convert import convert_checkpoint
from histo_encoders.publish import export_encoder, push_to_hub
from histo_encoders.registry import (
    EncoderConfig,
    get_config,
    list_encoders,
    register_encoder,
    unregister_encoder,
)
from histo_encoders.transforms import get_transform

__version__ = "0.1.0"

# The slide pipeline pulls in OpenSlide, h5py and tifffile: loaded on first use only.
_LAZY = {
    "embed_slide": "histo_encoders.embed",
    "embed_slides": "histo_encoders.batch",
    "EmbedOptions": "histo_encoders.embed",
    "SlideEmbedding": "histo_encoders.embed",
    "RunSummary": "histo_encoders.batch",
    "open_slide": "histo_encoders.slide",
    "read_features": "histo_encoders.features_io",
}

__all__ = [
    "EmbedOptions",
    "EncoderConfig",
    "RunSummary",
    "SlideEmbedding",
    "__version__",
    "convert_checkpoint",
    "embed_slide",
    "embed_slides",
    "errors",
    "export_encoder",
    "get_config",
    "get_transform",
    "list_encoders",
    "load",
    "open_slide",
    "push_to_hub",
    "read_features",
    "register_encoder",
    "unregister_encoder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'histo_encoders' has no attribute {name!r}")
