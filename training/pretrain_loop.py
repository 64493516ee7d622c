"""The MoCo v2 training loop: data loading, one SGD step, logging and the kNN monitor."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from histo_encoders.errors import ConfigError
from histo_encoders.pipeline import resolve_precision
from training.config import PretrainConfig
from training.distributed import (
    DistInfo,
    gather_all,
    local_shuffled_key_encode,
    shuffled_key_encode,
)
from training.logs import (
    METRICS_NAME,
    MetricsLogger,
    ThroughputMeter,
    extract_features,
    knn_accuracy,
    load_labelled_folder,
)
from training.moco import KeyEncodeFn, contrastive_accuracy, plain_key_encode
from training.pretrain_state import TrainState, write_checkpoint
from training.tiles import EpochSampler


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
    logger = MetricsLogger(out / METRICS_NAME, enabled=info.is_main)
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


def key_encoder_for(bn_mode: str, info: DistInfo) -> KeyEncodeFn:
    """The key forward of ``bn_mode``: shuffled across ranks, across split-BN groups, or not."""
    if bn_mode == "shuffle":
        return shuffled_key_encode
    if bn_mode == "split":
        return local_shuffled_key_encode
    return plain_key_encode


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
