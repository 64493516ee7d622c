"""Evaluation protocols: official train/test split, k-fold CV and nested CV, repeated over seeds.

Every protocol has the same two steps per repeat:
1. ``fit``: from a pool of training slides, either hold out a validation split (one model) or run
   an inner patient-level k-fold (one model per fold, kept as an ensemble). When several candidate
   settings are given, the one with the best validation AUC is kept. Only validation slides decide.
2. ``predict``: the ensemble's mean probability on slides it never saw.

``official-split`` tests on the CSV's ``split == test`` slides; ``kfold`` and ``nested-cv`` pool
out-of-fold predictions over patient-level outer folds (``nested-cv`` = inner k-fold in step 1).
Each finished repeat can be saved (``ProtocolOptions.results_dir``) and is then skipped on a rerun.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from torch import nn

from .data import Bag
from .errors import ProtocolError
from .metrics import auc, balanced_accuracy, summarize_repeats
from .models import canonical_name
from .repeats import RepeatResult, RepeatStore
from .splits import patient_folds, validation_split
from .train import TrainedModel, TrainOptions, predict, train_model

log = logging.getLogger(__name__)

ProtocolName = Literal["official-split", "kfold", "nested-cv"]
PROTOCOLS: tuple[str, ...] = ("official-split", "kfold", "nested-cv")


@dataclass(frozen=True)
class ProtocolOptions:
    """How models are fitted and tested.

    ``inner_folds``: 1 = one validation split of ``val_fraction``; >= 2 = k-fold ensemble.
    ``ensemble``: models per validation split, from different seeds, averaged on test (Chowder's
    E; the paper uses 50). ``results_dir``: where each finished repeat is saved; a rerun with the
    same settings and features loads it instead of training again (None: nothing is saved).
    """

    protocol: ProtocolName = "official-split"
    folds: int = 5
    inner_folds: int = 1
    val_fraction: float = 0.2
    repeats: int = 1
    seed: int = 0
    ensemble: int = 1
    results_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ProtocolError(f"Unknown protocol {self.protocol!r}; choose one of {PROTOCOLS}.")
        if self.protocol == "nested-cv" and self.inner_folds < 2:
            raise ProtocolError("nested-cv needs inner_folds >= 2 (e.g. 5).")
        if self.protocol == "kfold" and self.inner_folds > 1:
            raise ProtocolError("k-fold with inner folds is nested-cv: use --protocol nested-cv.")
        if self.repeats < 1:
            raise ProtocolError(f"repeats must be at least 1, got {self.repeats}.")
        if self.ensemble < 1:
            raise ProtocolError(f"ensemble must be at least 1 model, got {self.ensemble}.")


@dataclass
class Evaluation:
    """Test predictions and metrics of one model under one protocol, over every repeat.

    ``repeat_probs`` holds each repeat's test probabilities (``(R, n)`` or ``(R, n, C)``);
    ``probs`` is their mean per slide (a seed ensemble) and feeds the ROC curve. ``per_repeat``
    holds each repeat's own metrics (mean +- std in tables). ``members`` maps each test slide to
    the models that scored it in the first repeat (heatmaps).
    """

    model: str
    protocol: str
    slide_ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    repeat_probs: np.ndarray
    per_repeat: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    members: dict[str, list[nn.Module]] = field(default_factory=dict)
    seconds: float = 0.0


def _labels(bags: Sequence[Bag]) -> np.ndarray:
    return np.array([bag.label for bag in bags])


def _patients(bags: Sequence[Bag]) -> list[str]:
    return [bag.patient_id for bag in bags]


def _pick(bags: Sequence[Bag], positions: np.ndarray) -> list[Bag]:
    return [bags[int(i)] for i in positions]


def _inner_splits(pool: Sequence[Bag], options: ProtocolOptions, seed: int) -> list[tuple]:
    """(train positions, validation positions) pairs inside ``pool``."""
    labels, patients = _labels(pool), _patients(pool)
    if options.inner_folds < 2:
        return [validation_split(labels, patients, options.val_fraction, seed)]
    folds = patient_folds(labels, patients, options.inner_folds, seed)
    everything = np.arange(len(pool))
    return [(np.setdiff1d(everything, held), held) for held in folds]


def member_seed(seed: int, split: int, candidate: int, member: int) -> int:
    """The initialisation seed of one model: each candidate setting and each ensemble member
    starts elsewhere, so the choice between settings also acts as random restarts."""
    return int(np.random.SeedSequence([seed, split, candidate, member]).generate_state(1)[0])


def _selection_key(members: Sequence[TrainedModel]) -> tuple[float, float]:
    """Mean validation AUC at the members' best epochs (NaN-safe), then lower mean loss."""
    aucs = [m.val_auc for m in members]
    score = -np.inf if np.all(np.isnan(aucs)) else float(np.nanmean(aucs))
    return score, -float(np.mean([m.val_loss for m in members]))


def fit(
    pool: Sequence[Bag],
    candidates: Sequence[TrainOptions],
    n_classes: int,
    options: ProtocolOptions,
    seed: int,
) -> tuple[list[TrainedModel], TrainOptions]:
    """Choose a setting on the validation splits of ``pool``, then complete its ensemble.

    Each candidate trains one model per split; the best by mean validation AUC (then loss) is
    kept and gets ``options.ensemble - 1`` more models per split from other seeds.
    """
    splits = _inner_splits(pool, options, seed)

    def train(candidate: int, member: int) -> list[TrainedModel]:
        return [
            train_model(
                _pick(pool, tr),
                _pick(pool, va),
                n_classes,
                candidates[candidate],
                seed=member_seed(seed, i, candidate, member),
            )
            for i, (tr, va) in enumerate(splits)
        ]

    tried = [train(c, 0) for c in range(len(candidates))]
    best = max(range(len(candidates)), key=lambda c: _selection_key(tried[c]))
    if len(candidates) > 1:
        log.info("%s: chose %s", candidates[best].name, _describe(candidates[best], tried[best]))
    members = list(tried[best])
    for member in range(1, options.ensemble):
        members += train(best, member)
    return members, candidates[best]


def _describe(candidate: TrainOptions, members: Sequence[TrainedModel]) -> str:
    lr, weight_decay = candidate.optimizer_settings()
    val_auc, val_loss = _selection_key(members)
    return f"lr={lr:g} weight_decay={weight_decay:g} (val AUC {val_auc:.3f}, loss {-val_loss:.4f})"


def ensemble_predict(
    members: Sequence[TrainedModel], bags: Sequence[Bag], options: TrainOptions
) -> np.ndarray:
    """Mean probability of the members (fold models x ensemble)."""
    probs = [
        predict(m.model, bags, batch_size=options.batch_size, device=options.device)
        for m in members
    ]
    return np.mean(probs, axis=0)


def _test_sets(bags: Sequence[Bag], options: ProtocolOptions, seed: int) -> list[np.ndarray]:
    if options.protocol == "official-split":
        test = np.array([i for i, bag in enumerate(bags) if bag.split == "test"])
        if any(bag.split is None for bag in bags) or len(test) in (0, len(bags)):
            raise ProtocolError(
                "official-split needs a 'split' column with 'train' and 'test' on every row of the "
                "labels CSV; without one use --protocol kfold or nested-cv."
            )
        return [test]
    return patient_folds(_labels(bags), _patients(bags), options.folds, seed)


def run_repeat(
    bags: Sequence[Bag],
    candidates: Sequence[TrainOptions],
    n_classes: int,
    options: ProtocolOptions,
    seed: int,
) -> RepeatResult:
    """One repeat: fit on each test set's complement, predict its slides, and score them."""
    probs, members, fold_info = {}, {}, []
    everything = np.arange(len(bags))
    for test in _test_sets(bags, options, seed):
        pool = _pick(bags, np.setdiff1d(everything, test))
        fold_models, chosen = fit(pool, candidates, n_classes, options, seed)
        fold_probs = ensemble_predict(fold_models, _pick(bags, test), chosen)
        for position, p in zip(test, fold_probs, strict=True):
            probs[int(position)] = p
            members[int(position)] = [m.model for m in fold_models]
        fold_info.append(_fold_record(fold_models, chosen, len(test)))
    return RepeatResult(seed, probs, members, _repeat_metrics(bags, probs, seed, fold_info))


def _fold_record(fold_models: Sequence[TrainedModel], chosen: TrainOptions, n_test: int) -> dict:
    lr, weight_decay = chosen.optimizer_settings()
    return {
        "n_test": n_test,
        "lr": lr,
        "weight_decay": weight_decay,
        "model_options": dict(chosen.model_options),
        "best_epochs": [m.best_epoch for m in fold_models],
        "epochs_run": [len(m.history) for m in fold_models],
        "seconds_per_epoch": float(np.mean([h["seconds"] for m in fold_models for h in m.history])),
        # NaN (a validation set with one class) is not valid JSON: write null instead.
        "val_aucs": [None if np.isnan(m.val_auc) else m.val_auc for m in fold_models],
    }


def evaluate(
    bags: Sequence[Bag],
    candidates: Sequence[TrainOptions] | TrainOptions,
    n_classes: int,
    options: ProtocolOptions,
) -> Evaluation:
    """Run the protocol ``options.repeats`` times (seeds ``seed, seed+1, ...``) for one model.

    With ``options.results_dir`` each repeat is saved as soon as it finishes, and repeats saved
    by an earlier run with the same settings and features are loaded instead of trained.

    Raises:
        ProtocolError: the labels cannot support the protocol (no split column, too few patients).
    """
    if isinstance(candidates, TrainOptions):
        candidates = [candidates]
    start = time.perf_counter()
    store = RepeatStore.open(options.results_dir, bags, candidates, options, n_classes)
    repeats = []
    for r in range(options.repeats):
        seed = options.seed + r
        result = store.load(seed) if store else None
        if result is None:
            result = run_repeat(bags, candidates, n_classes, options, seed)
            if store:
                store.save(result, keep_models=r == 0)
        else:
            log.info("%s: repeat seed=%d already finished in %s", candidates[0].name, seed, store)
        repeats.append(result)
    return _assemble(bags, candidates[0].model, options, repeats, start)


def _repeat_metrics(bags: Sequence[Bag], probs: dict, seed: int, fold_info: list[dict]) -> dict:
    order = sorted(probs)
    labels = _labels(bags)[order]
    p = np.stack([probs[i] for i in order])
    return {
        "seed": seed,
        "auc": auc(labels, p),
        "balanced_accuracy": balanced_accuracy(labels, p),
        "folds": fold_info,
    }


def _assemble(
    bags: Sequence[Bag],
    model_name: str,
    options: ProtocolOptions,
    repeats: list[RepeatResult],
    start: float,
) -> Evaluation:
    order = sorted(repeats[0].probs)
    labels = _labels(bags)[order]
    repeat_probs = np.stack([np.stack([r.probs[i] for i in order]) for r in repeats])
    members = repeats[0].members
    return Evaluation(
        model=canonical_name(model_name),
        protocol=options.protocol,
        slide_ids=[bags[i].slide_id for i in order],
        labels=labels,
        probs=repeat_probs.mean(axis=0),
        repeat_probs=repeat_probs,
        per_repeat=[r.metrics for r in repeats],
        summary=summarize_repeats(labels, repeat_probs, [r.metrics for r in repeats], options.seed),
        members={bags[i].slide_id: members[i] for i in order if i in members},
        seconds=time.perf_counter() - start,
    )
