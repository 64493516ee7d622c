"""Export the query backbone of a MoCo run as an encoder folder (timm hub layout).

    python -m training.export runs/moco-camelyon --out hub/moco-camelyon --name moco-camelyon

The backbone is cut out of the MoCo state dict by stripping ``encoder_q.backbone.``; every other
key must be the projection head, the key encoder or the queue, and exactly those, so a renamed
module can never export a partial (partly random) encoder. The folder is written by the
library's ``export_encoder``, which loads the weights strictly into the timm architecture first;
``histo_encoders.load(folder)`` and ``timm.create_model("local-dir:" + folder)`` both read it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from histo_encoders.errors import CheckpointLayoutError
from training.checkpoint import find_checkpoint, load_checkpoint

BACKBONE_PREFIX = "encoder_q.backbone."
HEAD_KEYS = frozenset(f"encoder_q.head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias"))
QUEUE_KEYS = frozenset({"queue", "queue_ptr"})


def query_backbone_state_dict(moco_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The query backbone under timm names, from a MoCo state dict.

    Raises CheckpointLayoutError unless the dropped keys are exactly the v2 head
    (``encoder_q.head.{0,2}.{weight,bias}``), a key-encoder copy of every query key, and the
    queue with its pointer.
    """
    backbone = {
        k[len(BACKBONE_PREFIX) :]: v for k, v in moco_state.items() if k.startswith(BACKBONE_PREFIX)
    }
    dropped = {k for k in moco_state if not k.startswith(BACKBONE_PREFIX)}
    query_keys = {k for k in moco_state if k.startswith("encoder_q.")}
    expected = (
        set(HEAD_KEYS) | QUEUE_KEYS | {"encoder_k." + k[len("encoder_q.") :] for k in query_keys}
    )
    if not backbone or dropped != expected:
        raise CheckpointLayoutError(
            "The MoCo state dict does not have the expected layout: dropping "
            f"{sorted(dropped - expected)[:5]} was not expected and {sorted(expected - dropped)[:5]} "
            "is missing. Export only checkpoints written by training.pretrain."
        )
    return backbone


def card_notes(meta: Mapping[str, Any]) -> str:
    """Model-card paragraph: how the encoder was trained (steps, batch, hyperparameters)."""
    hyper = dict(meta.get("hyperparameters", {}))
    augment = hyper.pop("augment", {})
    lines = [
        "## Training",
        f"MoCo v2 pretraining with histo-encoders `training/` ({meta.get('histo_encoders_version')}).",
        f"- data: {meta.get('training_data')}",
        f"- tiles: {meta.get('tile_size')} px at {meta.get('mpp')} um/px",
        f"- steps: {meta.get('steps')} at global batch {meta.get('global_batch')} "
        f"({meta.get('images_seen')} query images)",
    ]
    lines += [f"- {key}: {value}" for key, value in hyper.items()]
    lines.append(f"- augmentation: `{json.dumps(augment)}`")
    return "\n".join(lines) + "\n"


def export_checkpoint(
    run_or_checkpoint: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the encoder folder of a run (or checkpoint file) to ``out_dir``; return it.

    ``name`` defaults to the run folder's name. Raises FileNotFoundError, CorruptWeightsError,
    CheckpointLayoutError, WeightsMismatchError (from the strict load), or FileExistsError.
    """
    from histo_encoders.encoders import config_from_meta, export_encoder

    path = find_checkpoint(run_or_checkpoint)
    saved = load_checkpoint(path)
    state_dict = query_backbone_state_dict(saved["model"])
    _check_same_as_stored(state_dict, saved["encoder_state_dict"], path)
    meta = saved["encoder_meta"]
    config = config_from_meta(name or path.parent.name, meta)
    return export_encoder(
        out_dir, state_dict, config, card_notes=meta.get("card_notes", ""), overwrite=overwrite
    )


def _check_same_as_stored(
    derived: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor], path: Path
) -> None:
    # The stored copy is what `histo-encoders publish` exports: both routes must agree.
    same = derived.keys() == stored.keys() and all(
        torch.equal(derived[k], stored[k]) for k in derived
    )
    if not same:
        raise CheckpointLayoutError(
            f"{path}: encoder_state_dict differs from the query backbone in 'model'. "
            "The checkpoint was altered after training; export from an intact checkpoint."
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.export RUN_OR_CKPT --out DIR [--name NAME] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description="Export a MoCo run's query backbone."
    )
    parser.add_argument("run", type=Path, help="run folder or checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True, help="encoder folder to write")
    parser.add_argument("--name", help="encoder name (default: the run folder's name)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    folder = export_checkpoint(args.run, args.out, name=args.name, overwrite=args.overwrite)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
