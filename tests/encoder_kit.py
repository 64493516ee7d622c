"""Small encoders for tests: a real timm ResNet (timm's `test_resnet`, 0.37M parameters) with
weights drawn from a seeded NumPy generator, so they are the same on every machine and version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.load import build_model
from histo_encoders.encoders.publish import export_encoder

TINY = EncoderConfig(
    name="tiny-test",
    architecture="test_resnet",
    num_features=96,
    tile_size=32,
    mpp=0.5,
    mean=(0.70, 0.55, 0.65),
    std=(0.20, 0.25, 0.20),
    license="apache-2.0",
    ssl_method="none (seeded random weights for tests)",
    training_data="none",
    citation="",
    description="tiny encoder for tests",
)


def seeded_state(config: EncoderConfig = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full state dict for ``config``'s architecture, drawn from numpy's PCG64 with ``seed``."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, tensor in sorted(build_model(config).state_dict().items()):
        shape = tuple(tensor.shape)
        if not tensor.is_floating_point():
            state[key] = tensor.clone()
            continue
        if tensor.ndim > 1:
            fan_in = int(np.prod(shape[1:]))
            values = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
        elif key.endswith(("running_var", "weight")):
            values = rng.uniform(0.5, 1.5, size=shape)
        else:
            values = rng.normal(0.0, 0.05, size=shape)
        state[key] = torch.from_numpy(values.astype(np.float32))
    return state


def seeded_tile(size: int = 32, seed: int = 0) -> np.ndarray:
    """An H&E-coloured (H, W, 3) uint8 tile, the same everywhere."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 120, 170], dtype=np.float64)
    noise = rng.normal(0.0, 30.0, size=(size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def export_tiny(out_dir: Path, seed: int = 0, config: EncoderConfig = TINY) -> Path:
    return export_encoder(out_dir, seeded_state(config, seed), config)


def folder_files(folder: Path, *, drop_sha256: bool = False) -> dict[str, bytes]:
    """The files of an encoder folder as a hub commit; optionally without our weights hash."""
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    if drop_sha256:
        document = json.loads(files["config.json"])
        document["histo_encoders"].pop("weights_sha256")
        files["config.json"] = json.dumps(document).encode()
    return files


def features(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(batch)
