"""State of a MoCo v2 pretraining run: building it, resuming it, and writing its checkpoint.

The model (both encoders, queue), optimizer, per-epoch cosine schedule and scaler live in one
:class:`TrainState`. A resume refuses a checkpoint made with other hyperparameters, restores
every RNG, and cuts ``metrics.jsonl`` back to the checkpoint's step so the log has one record
per step (the records written between the checkpoint and a kill are trained again).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import histo_encoders
from histo_encoders.errors import ConfigError
from training import checkpoint as ckpt
from training.config import PretrainConfig, config_to_dict
from training.distributed import DistInfo, barrier, convert_to_split_bn
from training.export import card_notes, query_backbone_state_dict
from training.logs import METRICS_NAME, truncate_metrics
from training.moco import MoCo, build_moco
from training.tiles import EpochSampler

# Sections whose change makes a checkpoint a different experiment (workers, logging may change).
_RESUME_MUST_MATCH = ("model", "augment", "optim")
_DATA_MAY_CHANGE = ("workers", "description", "slides", "tiles_dir")


@dataclass
class TrainState:
    """Everything the loop mutates, in one place."""

    model: MoCo
    query_encoder: nn.Module  # model.encoder_q, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    step: int = 0


def build_train_state(config: PretrainConfig, info: DistInfo, steps_per_epoch: int) -> TrainState:
    """Model on the device (BN mode applied), SGD with linear lr scaling, per-epoch cosine."""
    model = build_moco(
        config.model.arch,
        dict(config.model.model_args),
        dim=config.model.dim,
        hidden_dim=config.model.hidden_dim,
        queue_size=config.model.queue_size,
        momentum=config.model.momentum,
        temperature=config.model.temperature,
    )
    global_batch = config.data.batch_size * info.world_size
    check_queue(config.model.queue_size, global_batch)
    model = apply_bn_mode(model, config.model.bn_mode, config.model.bn_splits)
    memory_format = torch.channels_last if config.run.channels_last else torch.contiguous_format
    model = model.to(info.device, memory_format=memory_format)
    query_encoder: nn.Module = model.encoder_q
    if info.distributed:
        # Only the query encoder has gradients; buffers stay per rank as in the reference's
        # shuffle BN, and rank 0's are the ones saved.
        query_encoder = DistributedDataParallel(
            model.encoder_q,
            device_ids=[info.local_rank] if info.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    lr = config.optim.lr_per_256 * global_batch / 256
    optimizer = torch.optim.SGD(
        model.encoder_q.parameters(),
        lr=lr,
        momentum=config.optim.momentum,
        weight_decay=config.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_per_epoch(steps_per_epoch, config.optim.epochs)
    )
    # bf16 needs no loss scaling; the scaler is kept (disabled) so checkpoints have one layout.
    scaler = torch.amp.GradScaler(info.device.type, enabled=False)
    return TrainState(model, query_encoder, optimizer, scheduler, scaler)


def check_queue(queue_size: int, global_batch: int) -> None:
    """The queue must hold a whole number of global batches (the pointer wraps exactly)."""
    if queue_size % global_batch != 0:
        raise ConfigError(
            f"model.queue_size={queue_size} is not a multiple of the global batch {global_batch} "
            "(data.batch_size x ranks). Change data.batch_size or model.queue_size, e.g. 65536 "
            "with a global batch of 256."
        )


def apply_bn_mode(model: MoCo, bn_mode: str, bn_splits: int) -> MoCo:
    """Split BN (single process) or SyncBN (multi-GPU) in both encoders; else unchanged."""
    if bn_mode == "split":
        convert_to_split_bn(model.encoder_q, bn_splits)
        convert_to_split_bn(model.encoder_k, bn_splits)
    elif bn_mode == "sync":
        model.encoder_q = nn.SyncBatchNorm.convert_sync_batchnorm(model.encoder_q)
        model.encoder_k = nn.SyncBatchNorm.convert_sync_batchnorm(model.encoder_k)
    return model


def cosine_per_epoch(steps_per_epoch: int, epochs: int):
    """lr factor 0.5 * (1 + cos(pi * epoch / epochs)), constant within an epoch (reference)."""

    def factor(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * (step // steps_per_epoch) / epochs))

    return factor


def maybe_resume(state: TrainState, config: PretrainConfig, info: DistInfo, path: Path) -> None:
    """Continue from ``path`` if it exists (``run.resume=auto``) or must (``always``).

    Rank 0 also cuts the run's ``metrics.jsonl`` back to the checkpoint's step.
    """
    if config.run.resume == "never" or (config.run.resume == "auto" and not path.exists()):
        return
    saved = ckpt.load_checkpoint(path)  # FileNotFoundError when resume=always and none
    check_same_experiment(saved, config, info)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    state.step = int(saved["step"])
    ckpt.restore_rng_state(saved["rng"][info.rank])
    if info.is_main:
        dropped = truncate_metrics(path.parent / METRICS_NAME, state.step)
        print(
            f"[moco] resumed {path} at step {state.step}"
            + (f"; dropped {dropped} log record(s) past it" if dropped else ""),
            file=sys.stderr,
        )


def check_same_experiment(saved: dict, config: PretrainConfig, info: DistInfo) -> None:
    """Refuse to resume a checkpoint made with other hyperparameters or another world size."""
    now = config_to_dict(config)
    before = saved["config"]
    changed = [s for s in _RESUME_MUST_MATCH if now[s] != before[s]]
    changed += [
        f"data.{k}"
        for k in now["data"]
        if k not in _DATA_MAY_CHANGE and now["data"][k] != before["data"][k]
    ]
    if now["run"]["seed"] != before["run"]["seed"]:
        changed.append("run.seed")
    if saved["world_size"] != info.world_size:
        changed.append(f"world size ({saved['world_size']} -> {info.world_size})")
    if changed:
        raise ConfigError(
            f"The checkpoint in {config.run.out} was made with other settings ({changed}). "
            "Resume with the same config, or start a new run.out (or run.resume=never)."
        )


def write_checkpoint(
    state: TrainState, config: PretrainConfig, info: DistInfo, out: Path, sampler: EpochSampler
) -> None:
    """Gather every rank's RNG state, then rank 0 writes the checkpoint atomically."""
    rng_states = [ckpt.capture_rng_state()]
    if info.distributed:
        rng_states = [None] * info.world_size
        dist.all_gather_object(rng_states, ckpt.capture_rng_state())
    if info.is_main:
        epoch, step_in_epoch = divmod(state.step, sampler.steps_per_epoch)
        model_state = _cpu(state.model.state_dict())
        ckpt.save_checkpoint(
            out / ckpt.CHECKPOINT_NAME,
            {
                "model": model_state,
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict(),
                "step": state.step,
                "sampler": {"epoch": epoch, "step_in_epoch": step_in_epoch},
                "rng": rng_states,
                "world_size": info.world_size,
                "config": config_to_dict(config),
                "version": package_version(),
                "encoder_state_dict": query_backbone_state_dict(model_state),
                "encoder_meta": encoder_meta(state, config, info),
            },
        )
    barrier()


def encoder_meta(state: TrainState, config: PretrainConfig, info: DistInfo) -> dict[str, Any]:
    """What the library's ``publish`` needs to describe the exported backbone."""
    global_batch = config.data.batch_size * info.world_size
    meta = {
        "architecture": config.model.arch,
        "model_args": dict(config.model.model_args),
        "num_features": int(state.model.encoder_q.backbone.num_features),
        "tile_size": config.data.tile_size,
        "mpp": config.data.mpp,
        "mean": list(config.data.mean),
        "std": list(config.data.std),
        "training_data": config.data.description or _describe_data(config),
        "ssl_method": "MoCo v2",
        "steps": state.step,
        "global_batch": global_batch,
        "images_seen": state.step * global_batch,
        "hyperparameters": {
            "queue_size": config.model.queue_size,
            "momentum": config.model.momentum,
            "temperature": config.model.temperature,
            "dim": config.model.dim,
            "bn_mode": config.model.bn_mode,
            "lr": config.optim.lr_per_256 * global_batch / 256,
            "lr_per_256": config.optim.lr_per_256,
            "sgd_momentum": config.optim.momentum,
            "weight_decay": config.optim.weight_decay,
            "epochs": config.optim.epochs,
            "schedule": "cosine per epoch, no warmup",
            "augment": config_to_dict(config.augment),
        },
        "histo_encoders_version": package_version(),
        "license": config.card.license,
        "citation": config.card.citation,
        "description": config.card.description
        or f"{config.model.arch} pretrained with MoCo v2 on histology tiles (histo-encoders).",
    }
    meta["card_notes"] = card_notes(meta)
    return meta


def _describe_data(config: PretrainConfig) -> str:
    data = config.data
    if data.source == "folder":
        return f"tile images from {data.tiles_dir}"
    return f"{data.tile_size} px tiles at {data.mpp} um/px from slides {data.slides}"


def _cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def provenance(info: DistInfo) -> dict[str, Any]:
    """Versions and layout saved next to the resolved config."""
    return {
        "histo_encoders_version": package_version(),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "world_size": info.world_size,
        "device": str(info.device),
        "command": " ".join(sys.argv),
    }


def package_version() -> str:
    """Version of the installed library (the package's own, from its metadata)."""
    return histo_encoders.__version__
