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


# Width and depth of the stand-ins for the field's vision transformers: the record's timm
# architecture and kwargs (patch size, image size, registers, SwiGLU layers, init_values) with
# only these replaced, so one forward pass costs milliseconds.
STANDIN_SHRINK = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def standin_config(record: EncoderConfig, **updates: object) -> EncoderConfig:
    """A tiny same-architecture stand-in for ``record`` (same pooling, tiles, normalization)."""
    from histo_encoders.encoders.pooling import get_rule

    width = get_rule(record.pooling).width_factor * STANDIN_SHRINK["embed_dim"]
    return record.with_updates(
        name=f"{record.name}-standin",
        aliases=(),
        model_args={**record.model_args, **STANDIN_SHRINK},
        num_features=width,
        **updates,
    )


def weights_bytes(config: EncoderConfig, state: dict[str, torch.Tensor]) -> bytes:
    """``state`` as the bytes of ``config.weights_file`` (safetensors, or torch.save for .bin)."""
    import io

    if config.weights_file.endswith(".safetensors"):
        from safetensors.torch import save

        return save(state, metadata={"format": "pt"})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


GRANTED_TOKEN = "hf_granted_token"


def serve_standin(
    hub, record: EncoderConfig, *, commit: str | None = None
) -> tuple[str, bytes, EncoderConfig]:
    """Put the stand-in of ``record`` on the test ``hub`` as a new commit of the record's repo,
    gated like the real one (GRANTED_TOKEN has access). Returns (commit, weights, stand-in)."""
    from histo_encoders.encoders.folder import to_config_json

    config = standin_config(record)
    weights = weights_bytes(config, seeded_state(config))
    files = {
        "config.json": json.dumps(to_config_json(config)).encode(),
        record.weights_file: weights,
    }
    commit = hub.add_commit(record.hub_id, files, commit=commit)
    if record.gated:
        hub.gate(record.hub_id, (GRANTED_TOKEN,))
    return commit, weights, config
