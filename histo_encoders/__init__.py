"""histo-encoders: histology tile encoders as plain timm backbones, and whole-slide embedding.

    model = histo_encoders.load("moco-camelyon")       # verified weights, eval mode, pooled features
    transform = histo_encoders.get_transform(model)    # the preprocessing these weights expect
    result = histo_encoders.embed_slide("slide.svs", encoder=model)

Importing the package reads no file and opens no connection. The package is laid out by concern:
``encoders`` (records, hub, loading), ``slides`` (opening, tissue, tiling), ``readers`` (tiles
from slides), ``pipeline`` (embedding and feature files), ``tools`` (benchmark, demo, synthetic
slides) and ``cli``; ``errors`` and ``env`` serve them all.
"""

from __future__ import annotations

import importlib.metadata

from histo_encoders import errors
from histo_encoders._lazy import lazy_exports


def _installed_version() -> str:
    # One source: the version pyproject.toml declares, as the installed metadata reports it.
    try:
        return importlib.metadata.version("histo-encoders")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


__version__ = _installed_version()

# Every name is loaded on first use: the encoders pull in torch, the slide pipeline OpenSlide,
# h5py and tifffile, and `histo-encoders --help` needs none of them.
_LAZY = {
    "EncoderConfig": "encoders",
    "convert_checkpoint": "encoders",
    "export_encoder": "encoders",
    "get_config": "encoders",
    "get_transform": "encoders",
    "list_encoders": "encoders",
    "load": "encoders",
    "push_to_hub": "encoders",
    "register_encoder": "encoders",
    "unregister_encoder": "encoders",
    "embed_slide": "pipeline",
    "embed_slides": "pipeline",
    "EmbedOptions": "pipeline",
    "SlideEmbedding": "pipeline",
    "RunSummary": "pipeline",
    "collect_slides": "pipeline",
    "read_features": "pipeline",
    "open_slide": "slides",
    "plan_slide": "slides",
    "TissueSettings": "slides",
}

__all__ = [
    "EmbedOptions",
    "EncoderConfig",
    "RunSummary",
    "SlideEmbedding",
    "TissueSettings",
    "__version__",
    "collect_slides",
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
    "plan_slide",
    "push_to_hub",
    "read_features",
    "register_encoder",
    "unregister_encoder",
]


__getattr__ = lazy_exports(__name__, _LAZY)[0]
