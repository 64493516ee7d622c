"""Slide-level metrics: AUC (macro one-vs-rest when multi-class), balanced accuracy, bootstrap CIs.

``probs`` is ``(n,)`` for a binary task (probability of the positive class) and ``(n, C)`` for a
multi-class task (rows sum to 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC; macro average of one-vs-rest AUCs when ``probs`` has one column per class.

    Raises:
        ValueError: only one class is present in ``labels`` (AUC is undefined).
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("AUC needs both positive and negative slides; this set has one class.")
    if np.ndim(probs) == 1:
        return _binary_auc(labels == labels.max(), probs)
    present = np.unique(labels)
    if len(present) < np.shape(probs)[1]:
        raise ValueError(
            f"Macro AUC needs every one of the {np.shape(probs)[1]} classes; only {present} occur."
        )
    # Macro one-vs-rest: the unweighted mean of each class's AUC against all the others.
    return float(np.mean([_binary_auc(labels == c, probs[:, c]) for c in present]))


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney form of the AUC (ties count one half): fast enough for the thousand
    resamples of a bootstrap, where sklearn's input checks dominate."""
    positive = np.asarray(positive)
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def predicted_class(probs: np.ndarray) -> np.ndarray:
    """Binary: positive when p >= 0.5; multi-class: the most probable class."""
    probs = np.asarray(probs)
    return (probs >= 0.5).astype(int) if probs.ndim == 1 else probs.argmax(axis=1)


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean per-class recall of the predicted classes (classes present in ``labels``)."""
    labels, predicted = np.asarray(labels), predicted_class(probs)
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)]))


def bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap over slides; resamples holding a single class are skipped.

    Raises:
        ValueError: the metric is undefined on the full set (e.g. AUC with one class).
    """
    labels, probs = np.asarray(labels), np.asarray(probs)
    value = metric(labels, probs)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_resamples):
        pick = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[pick])) < len(np.unique(labels)):
            continue
        stats.append(metric(labels[pick], probs[pick]))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return Interval(value, float(low), float(high))


def summarize(labels: np.ndarray, probs: np.ndarray, *, seed: int = 0) -> dict[str, dict]:
    """AUC and balanced accuracy, each with a 95% bootstrap interval."""
    return {
        "auc": bootstrap(auc, labels, probs, seed=seed).as_dict(),
        "balanced_accuracy": bootstrap(balanced_accuracy, labels, probs, seed=seed).as_dict(),
    }
