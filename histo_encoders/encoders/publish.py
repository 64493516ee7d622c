"""Write an encoder folder in timm's hub layout, and optionally push it to the hub.

The folder is what ``histo_encoders.load(folder)`` and plain ``timm.create_model("hf-hub:...")``
both read: config.json (every pretrained_cfg field plus our metadata), model.safetensors, and a
README.md model card. It is assembled in a temporary folder and renamed into place, so a crash
never leaves a folder that looks finished, and ``overwrite`` replaces only an encoder folder.

Trained encoders travel in an *encoder checkpoint*: any ``torch.save`` dict that holds
``encoder_state_dict`` (the backbone under timm names) and ``encoder_meta`` (the record's facts:
architecture, model_args, num_features, tile_size, mpp, mean, std; optionally training_data,
ssl_method, license, citation, description and card_notes). That is this library's format;
``training/`` writes it beside its own state, and ``histo-encoders publish`` reads only it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from histo_encoders.atomic import staging_folder, swap_in_folder
from histo_encoders.encoders import hub, trust
from histo_encoders.encoders.config import EncoderConfig
from histo_encoders.encoders.folder import METADATA_KEY, to_config_json
from histo_encoders.encoders.load import build_model, load_weights_strictly
from histo_encoders.encoders.model_card import UNKNOWN, render_card
from histo_encoders.encoders.registry import get_config, is_registered
from histo_encoders.errors import CheckpointLayoutError, FolderExistsError

ENCODER_WEIGHTS_KEY = "encoder_state_dict"
ENCODER_META_KEY = "encoder_meta"
CARD_NAME = "README.md"
# What an encoder folder holds: `overwrite` replaces a folder only when it holds these and no more.
FOLDER_FILES = frozenset({hub.CONFIG_NAME, hub.WEIGHTS_NAME, CARD_NAME})


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
    Raises WeightsMismatchError; FolderExistsError (a FileExistsError) when ``out_dir`` exists
    and not ``overwrite``, or when it is not an encoder folder (``overwrite`` never deletes
    anything else). The new folder is written beside ``out_dir`` and swapped in.
    """
    out = Path(out_dir)
    _check_replaceable(out, overwrite)
    model = build_model(config)
    load_weights_strictly(model, dict(state_dict), config)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(out) as staging:
        _write_folder(staging, state, config, card_notes)
        swap_in_folder(staging, out)
    return out


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse to replace ``out`` unless ``overwrite`` and it is an encoder folder written here."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise FolderExistsError(
            f"{out} exists: choose another --out, or pass --overwrite to replace it"
        )
    reason = _not_an_encoder_folder(out)
    if reason is not None:
        raise FolderExistsError(
            f"{out} is not an encoder folder ({reason}), so --overwrite will not replace it: an "
            f"encoder folder holds {', '.join(sorted(FOLDER_FILES))} and nothing else, and its "
            "config.json was written by histo-encoders. Choose another --out, or move that "
            "folder away yourself."
        )


def _not_an_encoder_folder(out: Path) -> str | None:
    """Why ``out`` is not an encoder folder this package wrote, or None when it is one."""
    if out.is_symlink() or not out.is_dir():
        return "it is a link or a file, not a folder"
    entries = list(out.iterdir())
    extra = sorted(e.name for e in entries if e.name not in FOLDER_FILES or not e.is_file())
    if extra:
        return f"it also holds {extra[:5]}"
    names = {e.name for e in entries}
    missing = sorted({hub.CONFIG_NAME, hub.WEIGHTS_NAME} - names)
    if missing:
        return f"it lacks {missing}"
    try:
        document = json.loads((out / hub.CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its config.json is not readable JSON"
    if not isinstance(document, dict) or not isinstance(document.get(METADATA_KEY), dict):
        return f"its config.json has no {METADATA_KEY!r} section"
    return None


def _write_folder(
    folder: Path, state: dict[str, torch.Tensor], config: EncoderConfig, notes: str
) -> None:
    from safetensors.torch import save_file

    weights = folder / hub.WEIGHTS_NAME
    save_file(state, str(weights), metadata={"format": "pt"})
    sha256 = trust.sha256_file(weights)
    document = to_config_json(config, weights_sha256=sha256)
    (folder / hub.CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    card = render_card(config, weights_sha256=sha256, notes=notes)
    (folder / CARD_NAME).write_text(card, encoding="utf-8")


def publish_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    overwrite: bool = False,
    card: CardText | None = None,
    hub_id: str | None = None,
) -> Path:
    """Export an encoder checkpoint (see the module docstring) as an encoder folder ``name``.

    The facts (architecture, tile size, mpp, normalization) come from the checkpoint; licence,
    description, training data and citation from ``card``, else the checkpoint's own meta, else
    they are stated as unknown, never borrowed from a registered record of the same name.
    ``hub_id`` is where the folder will be pushed (its card's loading line). Raises
    CheckpointLayoutError when the file is not an encoder checkpoint.
    """
    state_dict, meta = read_encoder_checkpoint(checkpoint)
    config = config_from_meta(name, meta, card=card, hub_id=hub_id)
    notes = meta.get("card_notes", "")
    return export_encoder(out_dir, state_dict, config, card_notes=notes, overwrite=overwrite)


def read_encoder_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(encoder_state_dict, encoder_meta)`` from an encoder checkpoint, read with
    ``weights_only=True``. Raises CheckpointLayoutError for any other file."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise CheckpointLayoutError(f"cannot read {path} as a torch checkpoint: {error}") from error
    if not isinstance(payload, Mapping) or ENCODER_WEIGHTS_KEY not in payload:
        raise CheckpointLayoutError(
            f"{path} has no {ENCODER_WEIGHTS_KEY!r}: it is not an encoder checkpoint (written "
            "by training/). For other checkpoints use `histo-encoders convert`."
        )
    return dict(payload[ENCODER_WEIGHTS_KEY]), dict(payload.get(ENCODER_META_KEY) or {})


def encoder_checkpoint_entries(
    state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """The two entries that make any checkpoint dict an encoder checkpoint."""
    return {ENCODER_WEIGHTS_KEY: dict(state_dict), ENCODER_META_KEY: dict(meta)}


@dataclass(frozen=True)
class CardText:
    """What a model card says that the weights cannot: given by whoever writes the folder
    (``--license``, ``--description``, ``--training-data``, ``--citation``); None = not given."""

    license: str | None = None
    description: str | None = None
    training_data: str | None = None
    citation: str | None = None
    datasets: tuple[str, ...] = ()

    def apply(
        self, config: EncoderConfig, *, fallback: Mapping[str, Any] | None = None
    ) -> EncoderConfig:
        """``config`` with these texts; each missing one from ``fallback`` (a checkpoint's meta)
        or stated as unknown. Nothing is kept from ``config``'s own texts."""
        fallback = fallback or {}

        def pick(key: str, unknown: str) -> str:
            given = getattr(self, key)
            return str(given if given is not None else fallback.get(key) or unknown)

        return config.with_updates(
            license=pick("license", UNKNOWN),
            training_data=pick("training_data", UNKNOWN),
            citation=pick("citation", ""),
            description=pick(
                "description",
                f"{config.name}: {config.architecture} encoder weights; nobody has described "
                "them yet (give --description).",
            ),
            datasets=self.datasets or tuple(fallback.get("datasets") or ()),
        )


def config_from_meta(
    name: str,
    meta: Mapping[str, Any],
    *,
    card: CardText | None = None,
    hub_id: str | None = None,
) -> EncoderConfig:
    """EncoderConfig for a trained encoder from its checkpoint's ``meta``.

    The facts come from ``meta``; a registered ``name`` fills only facts ``meta`` lacks (its
    architecture, tiling and normalization). Licence, description, training data and citation
    come from ``card``, else ``meta``, else say they are unknown (see :class:`CardText`).
    Raises CheckpointLayoutError when a fact is missing everywhere.
    """
    facts = ("architecture", "model_args", "num_features", "tile_size", "mpp", "mean", "std")
    fields = {key: meta[key] for key in facts if key in meta}
    if is_registered(name):
        record = get_config(name)
        fields = {key: getattr(record, key) for key in facts} | fields
    required = ("architecture", "tile_size", "mpp", "mean", "std", "num_features")
    missing = [key for key in required if key not in fields]
    if missing:
        raise CheckpointLayoutError(f"encoder_meta lacks {missing}; cannot describe {name!r}")
    config = EncoderConfig(
        name=name,
        license=UNKNOWN,
        citation="",
        description="",
        training_data=UNKNOWN,
        ssl_method=str(meta.get("ssl_method") or "MoCo v2"),
        hub_id=hub_id,
        **fields,
    )
    return (card or CardText()).apply(config, fallback=meta)


def config_like(
    like: str, name: str, *, card: CardText | None = None, hub_id: str | None = None
) -> EncoderConfig:
    """A new encoder ``name`` with the architecture, tiling and normalization of the registered
    ``like``, and none of its texts: licence, description, training data, citation and its
    publication state come from ``card`` or are stated as unknown."""
    config = get_config(like).with_updates(
        name=name,
        aliases=(),
        hub_id=hub_id,
        revision=None,
        sha256=None,
        published=True,
        ssl_method=UNKNOWN,
        datasets=(),
    )
    return (card or CardText()).apply(config)


def push_to_hub(folder: str | os.PathLike[str], repo_id: str, *, private: bool = False) -> str:
    """Upload an encoder folder to the hub (HF_TOKEN or a saved login) and return the commit sha.

    Pin that sha as the record's ``revision`` so users load exactly these weights.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    return info.oid
