"""Write an encoder folder in timm's hub layout, and optionally push it to the hub.

The folder is what ``histo_encoders.load(folder)`` and plain ``timm.create_model("hf-hub:...")``
both read: config.json (every pretrained_cfg field plus our metadata), model.safetensors, and a
README.md model card. It is assembled in a temporary folder and renamed into place, so a crash
never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from histo_encoders import hub
from histo_encoders.build import build_model, load_weights_strictly
from histo_encoders.errors import CheckpointLayoutError
from histo_encoders.hub_format import to_config_json
from histo_encoders.model_card import render_card
from histo_encoders.registry import EncoderConfig, get_config, is_registered


def export_encoder(
    out_dir: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    config: EncoderConfig,
    *,
    card_notes: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``state_dict`` as an encoder folder described by ``config``; return the folder.

    The weights must fit ``config.architecture`` exactly (only a classification head may be
    dropped): they are loaded strictly into the architecture before anything is written.
    Raises WeightsMismatchError, or FileExistsError when ``out_dir`` exists and not ``overwrite``.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: choose another --out or pass overwrite=True")
    model = build_model(config)
    load_weights_strictly(model, dict(state_dict), config)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        _write_folder(staging, state, config, card_notes)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_folder(
    folder: Path, state: dict[str, torch.Tensor], config: EncoderConfig, notes: str
) -> None:
    from safetensors.torch import save_file

    weights = folder / hub.WEIGHTS_NAME
    save_file(state, str(weights), metadata={"format": "pt"})
    sha256 = hub.sha256_file(weights)
    document = to_config_json(config, weights_sha256=sha256)
    (folder / hub.CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    card = render_card(config, weights_sha256=sha256, notes=notes)
    (folder / "README.md").write_text(card, encoding="utf-8")


def publish_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    overwrite: bool = False,
) -> Path:
    """Export a training checkpoint (``training/`` writes ``encoder_state_dict`` and
    ``encoder_meta`` into it) as an encoder folder named ``name``.

    A registered ``name`` keeps its record (hub id, citation, licence) with the checkpoint's
    training conditions applied, and is marked published. Raises CheckpointLayoutError when
    the checkpoint lacks those keys.
    """
    payload = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or "encoder_state_dict" not in payload:
        raise CheckpointLayoutError(
            f"{checkpoint} has no 'encoder_state_dict': it is not a checkpoint written by "
            "training/. For other checkpoints use `histo-encoders convert`."
        )
    meta: dict[str, Any] = dict(payload.get("encoder_meta") or {})
    config = config_from_training_meta(name, meta)
    notes = meta.get("card_notes", "")
    return export_encoder(
        out_dir, payload["encoder_state_dict"], config, card_notes=notes, overwrite=overwrite
    )


def config_from_training_meta(name: str, meta: Mapping[str, Any]) -> EncoderConfig:
    """EncoderConfig for a trained encoder: the registered record if any, updated from ``meta``."""
    facts = ("architecture", "model_args", "num_features", "tile_size", "mpp", "mean", "std")
    fields = {key: meta[key] for key in (*facts, "training_data", "ssl_method") if key in meta}
    if is_registered(name):
        return get_config(name).with_updates(published=True, **fields)
    required = ("architecture", "tile_size", "mpp", "mean", "std", "num_features")
    missing = [key for key in required if key not in fields]
    if missing:
        raise CheckpointLayoutError(f"encoder_meta lacks {missing}; cannot describe {name!r}")
    return EncoderConfig(
        name=name,
        license=meta.get("license", "unknown"),
        citation=meta.get("citation", ""),
        description=meta.get("description", f"{name}: encoder trained with histo-encoders"),
        **{"training_data": "unknown", "ssl_method": "MoCo v2", **fields},
    )


def push_to_hub(folder: str | os.PathLike[str], repo_id: str, *, private: bool = False) -> str:
    """Upload an encoder folder to the hub (HF_TOKEN or a saved login) and return the commit sha.

    Pin that sha as the record's ``revision`` so users load exactly these weights.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    return info.oid
