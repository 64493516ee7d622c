"""Train one MIL model with early stopping on a validation set, and predict slide probabilities.

Model selection looks at the validation bags only: the highest AUC, and among equal AUCs the
lowest cross-entropy loss. Both matter: Chowder often ranks every validation slide right tens of
epochs before its output becomes confident (its loss sits at chance meanwhile), and with few
validation slides a model whose output is still nearly constant can reach a high AUC by luck,
which the loss then tells apart. Test bags never enter this module's training loop.
"""

from __future__ import annotations

import copy
import logging
import math
import time
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

log = logging.getLogger(__name__)

# Adam learning rates a protocol chooses between on validation when none is given. Each grid
# starts at the method's reference rate (Chowder: Courtiol et al. 2018, 1e-3; DeepMIL: FLamby's
# fed_camelyon16, 1e-3; the transformer: 2e-4) and adds larger ones: Chowder and max pooling sit
# on an initial plateau whose length, in epochs, grows as the rate and the number of steps per
# epoch shrink, and on planted-witness bags with 5 steps per epoch a rate of 1e-3 never left it
# in 4 of 5 seeds (training/README.md, "Defaults that learn"). DeepMIL learns at every rate
# tried, so its grid is the cheapest that still brackets its reference. Each candidate starts
# from its own initialisation (protocols.member_seed), so the grid doubles as restarts.
LR_GRID = {
    "chowder": (1e-3, 3e-3, 1e-2, 3e-2),
    "max-pool": (1e-3, 3e-3, 1e-2, 3e-2),
    "mean-pool": (1e-3, 3e-3, 1e-2, 3e-2),
    "abmil": (1e-3, 3e-3),
    "transformer": (1e-4, 2e-4, 5e-4),
}
# Each method's own rate: what ``TrainOptions(lr=None)`` trains with outside a protocol.
METHOD_LR = {
    "chowder": 1e-3,
    "max-pool": 1e-3,
    "mean-pool": 1e-3,
    "abmil": 1e-3,
    "transformer": 2e-4,
}
# Adam weight decay. Chowder has none: its only regulariser is the paper's L2 penalty on the
# tile-score layer (Chowder.penalty). FLamby trains DeepMIL without weight decay.
WEIGHT_DECAY = {
    "chowder": 0.0,
    "max-pool": 1e-4,
    "mean-pool": 1e-4,
    "abmil": 0.0,
    "transformer": 1e-4,
}
# Epochs before early stopping may end a run. Chowder and max pooling pass gradient only to the
# tiles at their extremes, so they can spend tens of epochs on a plateau before the tile score
# turns towards the witnesses (planted bags, 5 steps per epoch: left it at epochs 0-66), and
# Chowder's sigmoid MLP then takes up to ~30 more epochs to become confident (its validation
# AUC reaches 1 while its loss is still at chance). Attention and mean pooling see every tile
# from the first step. On Camelyon16's ~216 training slides an epoch is 27 steps, so these
# minima are generous there; they cost little for these cheap models.
MIN_EPOCHS = {
    "chowder": 50,
    "max-pool": 50,
    "mean-pool": 5,
    "abmil": 5,
    "transformer": 5,
}


def default_lrs(model: str) -> tuple[float, ...]:
    """The learning rates chosen between on validation for ``model`` by default."""
    return LR_GRID[canonical_name(model)]


@dataclass(frozen=True)
class TrainOptions:
    """How to train one model.

    Early stopping cannot end a run during an initial plateau: training runs at least
    ``min_epochs`` epochs (None: the model's ``MIN_EPOCHS``), and stops once ``patience`` epochs
    pass without a better validation score, counted from the best epoch or from the minimum,
    whichever is later. ``lr`` of None is the model's ``METHOD_LR`` here; protocols choose
    between its whole ``LR_GRID`` on validation. ``weight_decay`` of None is ``WEIGHT_DECAY``'s.
    """

    model: str = "chowder"
    epochs: int = 100
    min_epochs: int | None = None
    patience: int = 10
    min_delta: float = 0.01  # at equal AUC, the loss decrease that resets the patience
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int = 8
    bag_mode: BagMode = "padded"
    sample_tiles: int = 512
    model_options: tuple[tuple[str, Any], ...] = ()
    device: str | None = None
    mixed_precision: bool = True  # bf16 autocast on CUDA; CPU runs fp32 (bf16 is slower there)

    def optimizer_settings(self) -> tuple[float, float]:
        """``(lr, weight_decay)`` with the model's defaults filled in."""
        name = canonical_name(self.model)
        return (
            self.lr if self.lr is not None else METHOD_LR[name],
            self.weight_decay if self.weight_decay is not None else WEIGHT_DECAY[name],
        )

    def minimum_epochs(self) -> int:
        """Epochs always run: ``min_epochs`` or the model's default, at most ``epochs``."""
        chosen = self.min_epochs if self.min_epochs is not None else MIN_EPOCHS[self.name]
        return min(chosen, self.epochs)

    @property
    def name(self) -> str:
        """The model's table name (aliases resolved)."""
        return canonical_name(self.model)

    def should_stop(self, epoch: int, best_epoch: int) -> bool:
        """True when training stops after ``epoch`` (0-based), the best so far at ``best_epoch``."""
        min_epochs = self.minimum_epochs()
        if epoch + 1 < min_epochs:
            return False
        return epoch - max(best_epoch, min_epochs - 1) >= self.patience


@dataclass
class TrainedModel:
    """A model restored to its best validation epoch, with its scores there."""

    model: nn.Module
    n_classes: int
    best_epoch: int
    val_auc: float
    val_loss: float = math.nan
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


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    bags: Sequence[Bag],
    options: TrainOptions,
    seed: int,
) -> float:
    """One pass over ``bags`` in shuffled batches (``seed``); returns the mean training loss."""
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
            if hasattr(model, "penalty"):  # Chowder's L2 on its tile-score layer
                loss = loss + model.penalty()
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

    Logs one line per epoch (train loss, validation AUC and loss, seconds); stops as
    ``options.should_stop`` says.
    """
    torch.manual_seed(seed)
    device = resolve_device(options.device)
    in_dim = int(train_bags[0].features.shape[1])
    model = build_model(options.model, in_dim, n_classes, **dict(options.model_options)).to(device)
    lr, weight_decay = options.optimizer_settings()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_key, best_state, best_epoch, last_gain, history = None, None, -1, -1, []
    for epoch in range(options.epochs):
        start = time.perf_counter()
        train_loss = train_epoch(model, optimizer, train_bags, options, seed * 100_003 + epoch)
        val_auc, val_loss = _validation_score(model, val_bags, options)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_auc": val_auc,
            "val_loss": val_loss,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        _log_epoch(options, lr, seed, record)
        key = (-math.inf if math.isnan(val_auc) else val_auc, -val_loss)
        if best_key is None or key > best_key:
            if best_key is None or _improves(key, best_key, options.min_delta):
                last_gain = epoch
            best_key, best_epoch = key, epoch
            best_state = copy.deepcopy(model.state_dict())
        if options.should_stop(epoch, last_gain):
            break
    model.load_state_dict(best_state)
    best = history[best_epoch]
    return TrainedModel(
        model.eval(), n_classes, best_epoch, best["val_auc"], best["val_loss"], history
    )


def _improves(key: tuple[float, float], best: tuple[float, float], min_delta: float) -> bool:
    """Whether ``key`` (AUC, -loss) resets the patience: a higher AUC, or the same AUC with a
    loss lower by more than ``min_delta``. The best state is kept on any gain; only gains this
    large keep training going, otherwise a model that already ranks every validation slide right
    would train on while its logits grow and its loss creeps towards 0."""
    return key[0] > best[0] or (key[0] == best[0] and key[1] > best[1] + min_delta)


def _log_epoch(options: TrainOptions, lr: float, seed: int, record: dict) -> None:
    log.info(
        "%s lr=%g seed=%d epoch %d/%d: train loss %.4f, val AUC %.3f, val loss %.4f (%.1f s)",
        canonical_name(options.model),
        lr,
        seed,
        record["epoch"] + 1,
        options.epochs,
        record["train_loss"],
        record["val_auc"],
        record["val_loss"],
        record["seconds"],
    )
