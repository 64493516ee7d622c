"""Preprocessing: exactly what the weights expect, from the config attached to the model.

Two forms of the same preprocessing: ``get_transform`` for single PIL tiles (timm's eval
transform, crop_pct 1.0 so tiles are never centre-cropped), and ``normalize_batch`` for uint8 tile
batches already on the device, which is what the slide pipeline uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.registry import get_config


def data_config(model_or_name: torch.nn.Module | str | EncoderConfig) -> dict[str, Any]:
    """timm data config (input_size, interpolation, mean, std, crop_pct, crop_mode)."""
    import timm.data

    if isinstance(model_or_name, torch.nn.Module):
        return timm.data.resolve_model_data_config(model_or_name)
    config = (
        model_or_name if isinstance(model_or_name, EncoderConfig) else get_config(model_or_name)
    )
    from histo_encoders.encoders.folder import pretrained_cfg

    return timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg(config))


def get_transform(model_or_name: torch.nn.Module | str | EncoderConfig) -> Callable[[Any], Any]:
    """The eval transform for a PIL tile: resize to the input size, to tensor, normalize."""
    import timm.data

    return timm.data.create_transform(**data_config(model_or_name), is_training=False)


def normalize_batch(
    tiles: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """(B, H, W, 3) uint8 tiles -> (B, 3, H, W) normalized floats on the tiles' device.

    Arithmetic runs in float32 whatever ``dtype`` is, so bf16 inputs are rounded once.
    """
    x = tiles.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = x.sub_(mean_t).div_(std_t).to(dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)
