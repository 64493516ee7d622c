"""MoCo v2 pretraining entry point.

    python -m training.pretrain --config training/configs/moco_camelyon.yaml data.slides=... \
        run.out=runs/moco-camelyon model.bn_mode=split
    torchrun --nproc-per-node 8 -m training.pretrain --config ... run.out=runs/moco-camelyon

A run folder holds ``config.yaml`` (resolved config + versions), ``tile_index.npz`` (the tile
grid of every slide, planned once), ``metrics.jsonl`` and ``checkpoint.pt``. Starting again with
the same ``run.out`` continues from the checkpoint (``run.resume=auto``).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

import histo_encoders
from histo_encoders.errors import ConfigError, HistoEncodersError
from training import checkpoint as ckpt
from training.augment import TwoViews
from training.config import PretrainConfig, config_to_dict, load_config, save_config
from training.distributed import (
    DistInfo,
    barrier,
    check_bn_mode,
    close_distributed,
    convert_to_split_bn,
    gather_all,
    init_distributed,
    local_shuffled_key_encode,
    shuffled_key_encode,
)
from training.export import card_notes, query_backbone_state_dict
from training.logs import (
    MetricsLogger,
    ThroughputMeter,
    extract_features,
    knn_accuracy,
    load_labelled_folder,
)
from training.moco import MoCo, build_moco, contrastive_accuracy, plain_key_encode
from training.tiles import (
    EpochSampler,
    SlideTileDataset,
    TileFolderDataset,
    TileIndexOptions,
    list_slides,
    load_or_build_index,
)

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


class Normalize(nn.Module):
    """uint8 (N, 3, H, W) -> float normalised by mean/std, on the device, channels_last."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.mean.device, non_blocking=True).float()
        return ((images - self.mean) / self.std).contiguous(memory_format=self.memory_format)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--config FILE`` then any number of ``key.sub=value`` overrides."""
    args = build_parser().parse_args(argv)
    try:
        pretrain(load_config(args.config, args.overrides))
    except HistoEncodersError as err:  # a wrong setting: its message says what to change
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.pretrain", description="MoCo v2 pretraining on histology tiles."
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML config file, or the name of a shipped one: moco_camelyon, moco_tiny",
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. run.out=runs/x")
    return parser


def pretrain(config: PretrainConfig) -> Path:
    """Train (or resume) the run of ``config``; returns the checkpoint path."""
    info = init_distributed(config.run.device, config.run.dist_timeout_s)
    try:
        return _pretrain(config, info)
    finally:
        close_distributed()


def _pretrain(config: PretrainConfig, info: DistInfo) -> Path:
    check_bn_mode(config.model.bn_mode, info)
    if config.run.cpu_threads:
        torch.set_num_threads(config.run.cpu_threads)
    # Same seed on every rank while the model is built, so query and key encoders and the queue
    # start identical everywhere; per-rank streams only after that.
    set_reproducibility(config.run.seed, config.run.deterministic, info.device)
    out = Path(config.run.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml", provenance(info))
    dataset = build_dataset(config, info, out)
    sampler = EpochSampler(
        len(dataset),
        config.data.samples_per_epoch,
        config.data.batch_size,
        info.rank,
        info.world_size,
        config.run.seed,
    )
    state = build_train_state(config, info, sampler.steps_per_epoch)
    set_reproducibility(config.run.seed + info.rank, config.run.deterministic, info.device)
    maybe_resume(state, config, info, out / ckpt.CHECKPOINT_NAME)
    train(state, config, info, dataset, sampler, out)
    return out / ckpt.CHECKPOINT_NAME


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
    """Version of the installed library, or a marker saying it runs from a source tree."""
    version = getattr(histo_encoders, "__version__", None)
    if version:
        return str(version)
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("histo-encoders")
    except PackageNotFoundError:  # running from a checkout: say so rather than guess
        return "unknown (source tree, not installed)"


def set_reproducibility(seed: int, deterministic: bool, device: torch.device) -> None:
    """Seed every RNG; in deterministic mode also force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True


def build_dataset(config: PretrainConfig, info: DistInfo, out: Path) -> Dataset:
    """Folder tiles, or slide tiles from an index that rank 0 plans once and caches."""
    views = TwoViews(config.augment, config.data.tile_size)
    data = config.data
    if data.source == "folder":
        if not data.tiles_dir:
            raise ConfigError("data.source=folder needs data.tiles_dir=FOLDER of tile images.")
        return TileFolderDataset(data.tiles_dir, views, config.run.seed)
    if not data.slides:
        raise ConfigError("data.source=slides needs data.slides=FOLDER|GLOB|LIST.txt.")
    options = TileIndexOptions(
        mpp=data.mpp,
        tile_size=data.tile_size,
        min_tissue=data.min_tissue,
        max_tiles_per_slide=data.max_tiles_per_slide,
        slide_mpp=data.slide_mpp,
        seed=config.run.seed,
    )
    slides = list_slides(data.slides)
    cache = out / "tile_index.npz"
    if info.is_main:
        load_or_build_index(slides, options, cache)
    barrier()  # the other ranks read the index rank 0 just wrote
    index = load_or_build_index(slides, options, cache)
    return SlideTileDataset(index, views, config.run.seed, data.slide_mpp)


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


def key_encoder_for(bn_mode: str, info: DistInfo):
    if bn_mode == "shuffle":
        return shuffled_key_encode
    if bn_mode == "split":
        return local_shuffled_key_encode
    return plain_key_encode


def maybe_resume(state: TrainState, config: PretrainConfig, info: DistInfo, path: Path) -> None:
    """Continue from ``path`` if it exists (``run.resume=auto``) or must (``always``)."""
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
        print(f"[moco] resumed {path} at step {state.step}", file=sys.stderr)


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


def train(
    state: TrainState,
    config: PretrainConfig,
    info: DistInfo,
    dataset: Dataset,
    sampler: EpochSampler,
    out: Path,
) -> None:
    """The epoch loop: stops after ``optim.epochs`` or at ``run.max_steps``, with a checkpoint."""
    normalize = Normalize(config.data.mean, config.data.std, config.run.channels_last)
    normalize = normalize.to(info.device)
    logger = MetricsLogger(out / "metrics.jsonl", enabled=info.is_main)
    monitor = KnnMonitor(config, info, normalize)
    meter = ThroughputMeter()
    steps_per_epoch = sampler.steps_per_epoch
    total_steps = steps_per_epoch * config.optim.epochs
    if config.run.max_steps:
        total_steps = min(total_steps, config.run.max_steps)
    while state.step < total_steps:
        epoch, step_in_epoch = divmod(state.step, steps_per_epoch)
        sampler.set_state(epoch, step_in_epoch)
        waited_since = time.perf_counter()
        for im_q, im_k in make_loader(dataset, sampler, config, info):
            meter.add(im_q.shape[0] * info.world_size, time.perf_counter() - waited_since)
            metrics = train_step(state, config, info, normalize(im_q), normalize(im_k))
            state.step += 1
            maybe_log(state, config, info, logger, meter, monitor, metrics, epoch)
            epoch_end = state.step % steps_per_epoch == 0
            if (
                epoch_end
                or state.step == total_steps
                or state.step % config.run.checkpoint_every == 0
            ):
                write_checkpoint(state, config, info, out, sampler)
            if state.step >= total_steps:
                break
            waited_since = time.perf_counter()


def make_loader(
    dataset: Dataset, sampler: EpochSampler, config: PretrainConfig, info: DistInfo
) -> DataLoader:
    """Worker processes read and augment; batches arrive in sampler order (reproducible)."""
    workers = config.data.workers
    return DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        drop_last=True,
        worker_init_fn=_one_thread_per_worker,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: otherwise each new iterator draws from the global torch RNG, and a
        # run resumed mid-epoch would draw at another step than the uninterrupted run.
        generator=torch.Generator().manual_seed(config.run.seed + info.rank),
    )


def _one_thread_per_worker(_: int) -> None:
    # Workers run numpy/PIL per tile; intra-op threads in each would oversubscribe the CPUs.
    torch.set_num_threads(1)


def train_step(
    state: TrainState,
    config: PretrainConfig,
    info: DistInfo,
    im_q: torch.Tensor,
    im_k: torch.Tensor,
) -> dict[str, float]:
    """One SGD step on a batch of view pairs; returns this rank's loss and accuracy."""
    use_bf16 = resolve_precision(config.run.precision, info.device) == "bf16"
    with torch.autocast(device_type=info.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        output = state.model(
            im_q,
            im_k,
            query_encoder=state.query_encoder,
            key_encode=key_encoder_for(config.model.bn_mode, info),
            gather=gather_all,
        )
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(output.loss).backward()
    lr = state.optimizer.param_groups[0]["lr"]
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if not torch.isfinite(output.loss):
        raise FloatingPointError(
            f"MoCo loss is {float(output.loss)} at step {state.step}: lower optim.lr_per_256 "
            "or use run.precision=fp32, and resume from the last checkpoint."
        )
    return {
        "loss": float(output.loss.detach()),
        "acc": contrastive_accuracy(output.logits),
        "lr": lr,
    }


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` means bf16 autocast on CUDA and fp32 elsewhere (bf16 is slower on CPU)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def maybe_log(
    state: TrainState,
    config: PretrainConfig,
    info: DistInfo,
    logger: MetricsLogger,
    meter: ThroughputMeter,
    monitor: KnnMonitor,
    metrics: dict[str, float],
    epoch: int,
) -> None:
    if state.step % config.run.log_every != 0:
        return
    loss, acc = _mean_over_ranks([metrics["loss"], metrics["acc"]], info)
    record = {"step": state.step, "epoch": epoch, "loss": loss, "acc": acc, "lr": metrics["lr"]}
    record.update(meter.read())
    knn = monitor.maybe_run(state)
    if knn is not None:
        record["knn_acc"] = knn
    logger.log(record)


def _mean_over_ranks(values: list[float], info: DistInfo) -> list[float]:
    if not info.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return (tensor / info.world_size).tolist()


class KnnMonitor:
    """kNN accuracy of the query backbone on labelled tiles (rank 0; ``knn.*`` options)."""

    def __init__(self, config: PretrainConfig, info: DistInfo, normalize: Normalize) -> None:
        self.every = config.knn.every_steps
        self.k = config.knn.k
        self.normalize = normalize
        self.enabled = bool(self.every and info.is_main)
        if self.enabled:
            if not (config.knn.train_dir and config.knn.val_dir):
                raise ConfigError("knn.every_steps needs knn.train_dir and knn.val_dir.")
            size = config.data.tile_size
            self.train = load_labelled_folder(config.knn.train_dir, size)
            self.val = load_labelled_folder(config.knn.val_dir, size)

    def maybe_run(self, state: TrainState) -> float | None:
        if not self.enabled or state.step % self.every != 0:
            return None
        backbone = state.model.encoder_q.backbone
        train_features = extract_features(backbone, self.train[0], self.normalize)
        val_features = extract_features(backbone, self.val[0], self.normalize)
        return knn_accuracy(train_features, self.train[1], val_features, self.val[1], self.k)


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


if __name__ == "__main__":
    sys.exit(main())
