"""Foreign checkpoints -> encoder folders.

Each known layout is a prefix to keep and the exact set of other entries it is allowed to drop;
the result must then load strictly into the architecture. Prefixes are matched at the start of
a key only: a rename that matched anywhere would let a wrong checkpoint "load" nothing.
Pickles are read with ``weights_only=True``: a checkpoint never gets to run code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.publish import export_encoder
from histo_encoders.errors import CheckpointLayoutError


@dataclass(frozen=True)
class Layout:
    """A checkpoint layout: where the backbone's keys are and what else may be dropped."""

    name: str
    prefix: str
    # True for a key outside the backbone that this layout is known to carry (heads, queues...).
    droppable: Callable[[str], bool]
    description: str


def _moco_v2_extra(key: str) -> bool:
    # The key encoder and queue are training state; encoder_q.fc.* is the MLP projection head.
    return key.startswith(("encoder_k.", "module.encoder_k.", "module.encoder_q.fc.")) or key in {
        "module.queue",
        "module.queue_ptr",
        "queue",
        "queue_ptr",
    }


def _moco_v3_extra(key: str) -> bool:
    return key.startswith(
        ("module.momentum_encoder.", "module.predictor.", "module.base_encoder.head.")
    ) or key.startswith("module.base_encoder.fc.")


def _lightning_extra(key: str) -> bool:
    # solo-learn / lightly modules keep heads and momentum copies beside `backbone.`
    return not key.startswith("backbone.")


def _torchvision_extra(key: str) -> bool:
    return key in {"fc.weight", "fc.bias"}


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("moco", "module.encoder_q.", _moco_v2_extra, "facebookresearch/moco v1/v2"),
        Layout("moco-v3", "module.base_encoder.", _moco_v3_extra, "facebookresearch/moco-v3"),
        Layout("lightning", "backbone.", _lightning_extra, "Lightning (solo-learn, lightly)"),
        Layout("torchvision", "", _torchvision_extra, "torchvision/timm ResNet keys (Lunit)"),
    )
}


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint file (``state_dict`` or ``model`` entry if nested)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointLayoutError(
            f"cannot read {path} with torch.load(weights_only=True): {error}. Only tensors and "
            "plain containers are accepted; re-save the checkpoint's state_dict."
        ) from error
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(payload, Mapping) and isinstance(payload.get(key), Mapping):
            payload = payload[key]
            break
    if not isinstance(payload, Mapping):
        raise CheckpointLayoutError(f"{path} holds a {type(payload).__name__}, not a state dict")
    return {k: v for k, v in payload.items() if isinstance(v, torch.Tensor)}


def detect_layout(state: Mapping[str, torch.Tensor]) -> Layout:
    """The layout whose backbone prefix the checkpoint uses. Raises CheckpointLayoutError."""
    for name in ("moco", "moco-v3", "lightning"):
        if any(key.startswith(LAYOUTS[name].prefix) for key in state):
            return LAYOUTS[name]
    if "conv1.weight" in state:
        return LAYOUTS["torchvision"]
    sample = sorted(state)[:5]
    raise CheckpointLayoutError(
        f"unknown checkpoint layout (first keys: {sample}). Known: "
        + ", ".join(f"{n} ({layout.description})" for n, layout in LAYOUTS.items())
    )


def extract_backbone(
    state: Mapping[str, torch.Tensor], layout: Layout
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Keep the backbone keys (prefix stripped) and return them with the dropped keys.

    Raises CheckpointLayoutError if a key is neither backbone nor a known extra of the layout.
    """
    backbone: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, tensor in state.items():
        if layout.droppable(key):
            dropped.append(key)
        elif key.startswith(layout.prefix):
            backbone[key[len(layout.prefix) :]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointLayoutError(
            f"{len(unknown)} keys fit neither the {layout.name} backbone nor its known extras "
            f"(e.g. {unknown[:3]}); pass the right --layout"
        )
    return backbone, sorted(dropped)


def convert_checkpoint(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: EncoderConfig,
    *,
    layout: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert the checkpoint at ``src`` into an encoder folder described by ``config``.

    The backbone must then fit ``config.architecture`` with no missing and no unexpected key
    (export_encoder loads it strictly). Returns the folder.
    """
    state = read_checkpoint(src)
    chosen = detect_layout(state) if layout == "auto" else _layout(layout)
    backbone, dropped = extract_backbone(state, chosen)
    notes = (
        f"Converted from `{Path(src).name}` ({chosen.description} layout); "
        f"{len(backbone)} backbone tensors kept, {len(dropped)} training-only entries dropped."
    )
    return export_encoder(out_dir, backbone, config, card_notes=notes, overwrite=overwrite)


def _layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError as error:
        raise CheckpointLayoutError(
            f"unknown layout {name!r}; choose from {list(LAYOUTS)}"
        ) from error
