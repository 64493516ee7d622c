"""Evaluation protocols: official train/test split, k-fold CV and nested CV, repeated over seeds.

Every protocol has the same two steps per repeat:
1. ``fit``: from a pool of training slides, either hold out a validation split (one model) or run
   an inner patient-level k-fold (one model per fold, kept as an ensemble). When several candidate
   settings are given, the one with the best validation AUC is kept. Only validation slides decide.
2. ``predict``: the ensemble's mean probability on slides it never saw.

``official-split`` tests on the CSV's ``split == test`` slides; ``kfold`` and ``nested-cv`` pool
out-of-fold predictions over patient-level outer folds (``nested-cv`` = inner k-fold in step 1).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from torch import nn

from .data import Bag
from .errors import ProtocolError
from .metrics import auc, balanced_accuracy, summarize
from .models import canonical_name
from .splits import patient_folds, validation_split
from .train import TrainedModel, TrainOptions, predict, train_model

ProtocolName = Literal["official-split", "kfold", "nested-cv"]
PROTOCOLS: tuple[str, ...] = ("official-split", "kfold", "nested-cv")


@dataclass(frozen=True)
class ProtocolOptions:
    """``inner_folds``: 1 = one validation split of ``val_fraction``; >= 2 = k-fold ensemble."""

    protocol: ProtocolName = "official-split"
    folds: int = 5
    inner_folds: int = 1
    val_fraction: float = 0.2
    repeats: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ProtocolError(f"Unknown protocol {self.protocol!r}; choose one of {PROTOCOLS}.")
        if self.protocol == "nested-cv" and self.inner_folds < 2:
            raise ProtocolError("nested-cv needs inner_folds >= 2 (e.g. 5).")
        if self.protocol == "kfold" and self.inner_folds > 1:
            raise ProtocolError("k-fold with inner folds is nested-cv: use --protocol nested-cv.")
        if self.repeats < 1:
            raise ProtocolError(f"repeats must be at least 1, got {self.repeats}.")


@dataclass
class Evaluation:
    """Test predictions and metrics of one model under one protocol, over every repeat.

    ``probs`` is the mean over repeats per slide (a seed ensemble) and feeds the ROC curve and the
    bootstrap intervals; ``per_repeat`` holds each repeat's own metrics (mean +- std in tables).
    ``members`` maps each test slide to the models that scored it in the first repeat (heatmaps).
    """

    model: str
    protocol: str
    slide_ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
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


def fit(
    pool: Sequence[Bag],
    candidates: Sequence[TrainOptions],
    n_classes: int,
    options: ProtocolOptions,
    seed: int,
) -> tuple[list[TrainedModel], TrainOptions]:
    """Train every candidate on the inner splits of ``pool``; keep the best by mean val AUC."""
    splits = _inner_splits(pool, options, seed)
    best, best_score, best_candidate = [], -np.inf, candidates[0]
    for candidate in candidates:
        members = [
            train_model(_pick(pool, tr), _pick(pool, va), n_classes, candidate, seed=seed + i)
            for i, (tr, va) in enumerate(splits)
        ]
        aucs = [m.val_auc for m in members]
        score = -np.inf if np.all(np.isnan(aucs)) else float(np.nanmean(aucs))
        if not best or score > best_score:
            best, best_score, best_candidate = members, score, candidate
    return best, best_candidate


def ensemble_predict(
    members: Sequence[TrainedModel], bags: Sequence[Bag], options: TrainOptions
) -> np.ndarray:
    """Mean probability of the fold models."""
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


def _one_repeat(
    bags: Sequence[Bag],
    candidates: Sequence[TrainOptions],
    n_classes: int,
    options: ProtocolOptions,
    seed: int,
) -> tuple[dict[int, np.ndarray], dict[int, list[nn.Module]], list[dict]]:
    """Probabilities of every test slide (by position), the models that scored it, fold info."""
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
    return probs, members, fold_info


def _fold_record(fold_models: Sequence[TrainedModel], chosen: TrainOptions, n_test: int) -> dict:
    lr, weight_decay = chosen.optimizer_settings()
    return {
        "n_test": n_test,
        "lr": lr,
        "weight_decay": weight_decay,
        "model_options": dict(chosen.model_options),
        "best_epochs": [m.best_epoch for m in fold_models],
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

    Raises:
        ProtocolError: the labels cannot support the protocol (no split column, too few patients).
    """
    if isinstance(candidates, TrainOptions):
        candidates = [candidates]
    start = time.perf_counter()
    repeats, first_members, runs = [], {}, []
    for r in range(options.repeats):
        seed = options.seed + r
        probs, members, fold_info = _one_repeat(bags, candidates, n_classes, options, seed)
        first_members = first_members or members
        runs.append(probs)
        repeats.append(_repeat_metrics(bags, probs, seed, fold_info))
    return _assemble(bags, candidates[0].model, options, runs, repeats, first_members, start)


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
    runs: list[dict],
    repeats: list[dict],
    members: dict,
    start: float,
) -> Evaluation:
    order = sorted(runs[0])
    labels = _labels(bags)[order]
    probs = np.mean([np.stack([run[i] for i in order]) for run in runs], axis=0)
    aucs = [r["auc"] for r in repeats]
    baccs = [r["balanced_accuracy"] for r in repeats]
    summary = {
        "n_test_slides": len(order),
        "repeats": len(repeats),
        "auc_mean": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs)),
        "balanced_accuracy_mean": float(np.mean(baccs)),
        "balanced_accuracy_std": float(np.std(baccs)),
        "seed_ensemble": summarize(labels, probs, seed=options.seed),
    }
    slide_ids = [bags[i].slide_id for i in order]
    return Evaluation(
        model=canonical_name(model_name),
        protocol=options.protocol,
        slide_ids=slide_ids,
        labels=labels,
        probs=probs,
        per_repeat=repeats,
        summary=summary,
        members={bags[i].slide_id: members[i] for i in order},
        seconds=time.perf_counter() - start,
    )
