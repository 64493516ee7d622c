"""Encoders: the registry of records, verified hub access, strict loading, preprocessing,
publishing and converting weights. Nothing here knows about slides, readers or the pipeline."""

from histo_encoders.encoders.config import IMAGENET_MEAN, IMAGENET_STD, EncoderConfig
from histo_encoders.encoders.convert import convert_checkpoint
from histo_encoders.encoders.load import EncoderProvenance, FetchedEncoder, fetch, load
from histo_encoders.encoders.publish import (
    config_from_meta,
    encoder_checkpoint_entries,
    export_encoder,
    publish_checkpoint,
    push_to_hub,
    read_encoder_checkpoint,
)
from histo_encoders.encoders.registry import (
    get_config,
    is_registered,
    list_encoders,
    register_encoder,
    unregister_encoder,
)
from histo_encoders.encoders.transforms import data_config, get_transform, normalize_batch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EncoderConfig",
    "EncoderProvenance",
    "FetchedEncoder",
    "config_from_meta",
    "convert_checkpoint",
    "data_config",
    "encoder_checkpoint_entries",
    "export_encoder",
    "fetch",
    "get_config",
    "get_transform",
    "is_registered",
    "list_encoders",
    "load",
    "normalize_batch",
    "publish_checkpoint",
    "push_to_hub",
    "read_encoder_checkpoint",
    "register_encoder",
    "unregister_encoder",
]
