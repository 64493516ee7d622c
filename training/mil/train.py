"""Train one MIL model with early stopping on a validation set, and predict slide probabilities.

Model selection looks at the validation bags only (AUC, ties broken by loss); test bags never
enter this module's training loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Bag, BagMode, Batch, iterate_batches
from .metrics import auc
from .models import build_model, canonical_name

# Learning rate and weight decay from each method's paper/reference code (REFERENCE.md §7).
DEFAULT_OPTIMIZER = {
    "chowder": (1e-3, 0.0),
    "abmil": (5e-4, 1e-4),
    "mean-pool": (1e-3, 1e-4),
    "max-pool": (1e-3, 1e-4),
    "transformer": (2e-4, 1e-4),
}


@dataclass(frozen=True)
class TrainOptions:
    """How to train one model. ``lr``/``weight_decay`` of None take the model's default."""

    model: str = "chowder"
    epochs: int = 50
    patience: int = 10
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int = 8
    bag_mode: BagMode = "padded"
    sample_tiles: int = 512
    model_options: tuple[tuple[str, Any], ...] = ()
    device: str | None = None
    mixed_precision: bool = True  # bf16 autocast on CUDA; CPU runs fp32 (bf16 is slower there)

    def optimizer_settings(self) -> tuple[float, float]:
        lr, weight_decay = DEFAULT_OPTIMIZER[canonical_name(self.model)]
        return (
            self.lr if self.lr is not None else lr,
            self.weight_decay if self.weight_decay is not None else weight_decay,
        )


@dataclass
class TrainedModel:
    """A model restored to its best validation epoch, with what selected it."""

    model: nn.Module
    n_classes: int
    best_epoch: int
    val_auc: float
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str | None) -> torch.device:
    """``None`` picks CUDA when present, else the CPU."""
    if name is not None:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.float()  # losses in fp32 even under autocast
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return F.cross_entropy(logits, labels)


def _to_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, ...]:
    return (
        batch.features.to(device, non_blocking=True),
        batch.mask.to(device, non_blocking=True),
        batch.labels.to(device, non_blocking=True),
    )


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """Logits ``(B, n_out)`` -> ``(B,)`` positive-class probabilities or ``(B, C)`` softmax."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0]).cpu().numpy()
    return logits.softmax(dim=1).cpu().numpy()


@torch.no_grad()
def predict(
    model: nn.Module,
    bags: Sequence[Bag],
    *,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    mixed_precision: bool = True,
) -> np.ndarray:
    """Slide probabilities for ``bags`` (every tile, no sampling), in the order given."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model.eval().to(device)
    # Batch bags of similar length together so little time goes into padding, then restore order.
    by_length = np.argsort([bag.n_tiles for bag in bags], kind="stable")
    out = []
    for batch in iterate_batches(
        [bags[i] for i in by_length], mode="padded", batch_size=batch_size
    ):
        features, mask, _ = _to_device(batch, device)
        with _autocast(device, mixed_precision):
            out.append(probabilities(model(features, mask)))
    probs = np.concatenate(out)
    restored = np.empty_like(probs)
    restored[by_length] = probs
    return restored


def _validation_score(model: nn.Module, bags: Sequence[Bag], options: TrainOptions) -> tuple:
    """(AUC, loss) on the validation bags; AUC is NaN when a class is missing from them."""
    device = resolve_device(options.device)
    probs = predict(model, bags, batch_size=options.batch_size, device=device)
    labels = np.array([bag.label for bag in bags])
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if p.ndim == 1:
        loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    else:
        loss = -np.mean(np.log(p[np.arange(len(labels)), labels]))
    n_classes = 2 if probs.ndim == 1 else probs.shape[1]
    value = auc(labels, probs) if len(np.unique(labels)) == n_classes else math.nan
    return value, float(loss)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    bags: Sequence[Bag],
    options: TrainOptions,
    seed: int,
) -> float:
    device = resolve_device(options.device)
    model.train()
    total, count = 0.0, 0
    batches = iterate_batches(
        bags,
        mode=options.bag_mode,
        batch_size=options.batch_size,
        sample_tiles=options.sample_tiles,
        shuffle=True,
        seed=seed,
    )
    for batch in batches:
        features, mask, labels = _to_device(batch, device)
        with _autocast(device, options.mixed_precision):
            loss = _loss(model(features, mask), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(labels)
        count += len(labels)
    return total / count


def train_model(
    train_bags: Sequence[Bag],
    val_bags: Sequence[Bag],
    n_classes: int,
    options: TrainOptions,
    *,
    seed: int = 0,
) -> TrainedModel:
    """Train on ``train_bags``; keep the epoch with the best validation AUC (then lowest loss).

    Stops after ``options.patience`` epochs without improvement.
    """
    torch.manual_seed(seed)
    device = resolve_device(options.device)
    in_dim = int(train_bags[0].features.shape[1])
    model = build_model(options.model, in_dim, n_classes, **dict(options.model_options)).to(device)
    lr, weight_decay = options.optimizer_settings()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_key, best_state, best_epoch, best_auc, history = None, None, -1, math.nan, []
    for epoch in range(options.epochs):
        train_loss = _train_epoch(model, optimizer, train_bags, options, seed * 100_003 + epoch)
        val_auc, val_loss = _validation_score(model, val_bags, options)
        history.append(
            {"epoch": epoch, "train_loss": train_loss, "val_auc": val_auc, "val_loss": val_loss}
        )
        key = (-math.inf if math.isnan(val_auc) else val_auc, -val_loss)
        if best_key is None or key > best_key:
            best_key, best_epoch, best_auc = key, epoch, val_auc
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= options.patience:
            break
    model.load_state_dict(best_state)
    return TrainedModel(model.eval(), n_classes, best_epoch, best_auc, history)
