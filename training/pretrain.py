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
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from histo_encoders.errors import ConfigError, HistoEncodersError
from training import checkpoint as ckpt
from training.augment import TwoViews
from training.config import PretrainConfig, load_config, save_config
from training.distributed import (
    DistInfo,
    barrier,
    check_bn_mode,
    close_distributed,
    init_distributed,
)
from training.pretrain_loop import Normalize, train
from training.pretrain_state import build_train_state, maybe_resume, provenance
from training.tiles import (
    EpochSampler,
    SlideTileDataset,
    TileFolderDataset,
    TileIndexOptions,
    list_slides,
    load_or_build_index,
)

__all__ = ["Normalize", "build_parser", "main", "pretrain"]


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


if __name__ == "__main__":
    sys.exit(main())
