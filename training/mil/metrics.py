"""Slide-level metrics: AUC (macro one-vs-rest when multi-class), balanced accuracy, bootstrap CIs.

``probs`` is ``(n,)`` for a binary task (probability of the positive class) and ``(n, C)`` for a
multi-class task (rows sum to 1). Over repeats (seeds), ``repeat_probs`` is ``(R, n[, C])``.
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


def _resample_counts(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``(R, n)`` bootstrap counts over slides (how often each slide is drawn), keeping only
    resamples that hold every class of ``labels``."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_resamples)])
    classes = np.unique(labels)
    has_all = np.stack([counts[:, labels == c].sum(1) > 0 for c in classes]).all(axis=0)
    return counts[has_all]


def _weighted_binary_auc(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of every resample at once: each (positive, negative) pair weighs the product of
    their counts; ties count one half, as in :func:`auc`."""
    positive = labels == labels.max()
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (P, N)
    w_pos, w_neg = counts[:, positive], counts[:, ~positive]
    pairs = w_pos.sum(1) * w_neg.sum(1)
    return np.einsum("rp,pn,rn->r", w_pos, wins, w_neg) / pairs


def _weighted_balanced_accuracy(
    labels: np.ndarray, probs: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    correct = (predicted_class(probs) == labels).astype(float)
    recalls = [
        counts[:, labels == c] @ correct[labels == c] / counts[:, labels == c].sum(1)
        for c in np.unique(labels)
    ]
    return np.mean(recalls, axis=0)


def _resampled(
    metric: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    probs: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """``metric`` on every resample given by ``counts``; closed forms for the binary AUC and
    the balanced accuracy (a thousand resamples in milliseconds), a loop otherwise."""
    if metric is auc and np.ndim(probs) == 1:
        return _weighted_binary_auc(labels, probs, counts)
    if metric is balanced_accuracy:
        return _weighted_balanced_accuracy(labels, probs, counts)
    picks = [np.repeat(np.arange(len(labels)), row) for row in counts]
    return np.array([metric(labels[pick], probs[pick]) for pick in picks])


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


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
    counts = _resample_counts(labels, n_resamples, seed)
    return Interval(value, *_percentiles(_resampled(metric, labels, probs, counts), confidence))


def bootstrap_mean(
    metric: Callable[[np.ndarray, np.ndarray], float],
    labels: np.ndarray,
    repeat_probs: np.ndarray,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The mean over repeats of ``metric``, with a percentile bootstrap interval over slides.

    Each resample draws slides once and scores every repeat on the same draw, so the interval
    is that of the mean over seeds (the figure a table reports), not of one seed.

    Raises:
        ValueError: the metric is undefined on the full set (e.g. AUC with one class).
    """
    labels, repeat_probs = np.asarray(labels), np.asarray(repeat_probs)
    value = float(np.mean([metric(labels, probs) for probs in repeat_probs]))
    counts = _resample_counts(labels, n_resamples, seed)
    stats = np.mean([_resampled(metric, labels, probs, counts) for probs in repeat_probs], axis=0)
    return Interval(value, *_percentiles(stats, confidence))


def summarize(labels: np.ndarray, probs: np.ndarray, *, seed: int = 0) -> dict[str, dict]:
    """AUC and balanced accuracy, each with a 95% bootstrap interval."""
    return {
        "auc": bootstrap(auc, labels, probs, seed=seed).as_dict(),
        "balanced_accuracy": bootstrap(balanced_accuracy, labels, probs, seed=seed).as_dict(),
    }


def summarize_repeats(
    labels: np.ndarray, repeat_probs: np.ndarray, per_repeat: list[dict], seed: int = 0
) -> dict:
    """Per metric: mean and std over repeats, the 95% bootstrap interval of that mean, and the
    seed ensemble (mean probability over repeats) with its own interval.

    The std is the sample std over repeats (0 for a single repeat).
    """
    summary: dict = {"n_test_slides": len(labels), "repeats": len(per_repeat)}
    for name, metric in (("auc", auc), ("balanced_accuracy", balanced_accuracy)):
        values = [r[name] for r in per_repeat]
        summary[f"{name}_mean"] = float(np.mean(values))
        summary[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        interval = bootstrap_mean(metric, labels, repeat_probs, seed=seed)
        summary[f"{name}_mean_ci"] = {"low": interval.low, "high": interval.high}
    summary["seed_ensemble"] = summarize(labels, np.mean(repeat_probs, axis=0), seed=seed)
    return summary
