"""Training logs: one console line and one JSON line per logging step, plus a kNN monitor.

Logged: loss, contrastive top-1 accuracy (is the positive key the highest logit), images/s over
all ranks, data-wait fraction (time the step waited on the DataLoader / wall time: near 1 means
the GPU starves on tile reading), learning rate, and, when configured, the kNN accuracy of the
backbone on labelled tiles.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histo_encoders.atomic import atomic_write_text

METRICS_NAME = "metrics.jsonl"


class MetricsLogger:
    """Appends JSON lines to ``path`` and prints a short line; silent on ranks other than 0."""

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(dict(record)) + "\n")
        print(_console_line(record), file=sys.stderr, flush=True)


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep only the records of ``path`` up to ``step``; returns how many were dropped.

    A run killed after its last checkpoint has logged steps it will train again on resume; cut
    them so every step appears once and the curve can be plotted as it is. Atomic: the file is
    rewritten beside and renamed. A missing file is left missing.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) == len(lines):
        return 0
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def _console_line(record: Mapping[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return "[moco] " + " ".join(parts)


class ThroughputMeter:
    """Images/s and data-wait fraction between two ``read`` calls."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start = time.perf_counter()
        self.wait = 0.0
        self.images = 0

    def add(self, images: int, wait_s: float) -> None:
        self.images += images
        self.wait += wait_s

    def read(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        figures = {"images_per_s": self.images / elapsed, "data_wait": self.wait / elapsed}
        self.reset()
        return figures


@torch.no_grad()
def extract_features(
    backbone: nn.Module, images: torch.Tensor, normalize: nn.Module, batch_size: int = 256
) -> torch.Tensor:
    """Pooled backbone features (N, C) of uint8 images (N, 3, H, W), in eval mode."""
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    parts = []
    for start in range(0, len(images), batch_size):
        batch = normalize(images[start : start + batch_size].to(device))
        parts.append(backbone(batch).float().cpu())
    backbone.train(was_training)
    return torch.cat(parts)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
) -> float:
    """Top-1 accuracy of a cosine-similarity k-nearest-neighbour vote (ties: lowest label)."""
    train = torch.nn.functional.normalize(train_features.float(), dim=1)
    test = torch.nn.functional.normalize(test_features.float(), dim=1)
    k = min(k, len(train))
    neighbours = (test @ train.T).topk(k, dim=1).indices  # (N_test, k)
    votes = train_labels[neighbours]  # (N_test, k)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    counts = torch.zeros(len(test), classes).scatter_add_(1, votes, torch.ones_like(votes).float())
    return float((counts.argmax(dim=1) == test_labels).float().mean())


def load_labelled_folder(root: str | Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images under ``root/<class>/*`` resized to ``size`` -> uint8 (N, 3, S, S), labels (N,)."""
    from PIL import Image

    from training.tiles import list_images

    paths = list_images(root)
    classes = sorted({p.parent.name for p in paths})
    images, labels = [], []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        images.append(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1))
        labels.append(classes.index(path.parent.name))
    return torch.stack(images), torch.tensor(labels)
