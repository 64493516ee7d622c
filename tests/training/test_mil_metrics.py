"""Metrics and patient-level splits."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from training.mil.errors import ProtocolError
from training.mil.metrics import (
    auc,
    balanced_accuracy,
    bootstrap,
    bootstrap_mean,
    summarize,
    summarize_repeats,
)
from training.mil.splits import patient_folds, validation_split


def test_binary_auc_counts_ties_as_half():
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_macro_one_vs_rest_auc_on_a_known_case():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.5, 0.4, 0.1],
            [0.1, 0.1, 0.8],
            [0.1, 0.5, 0.4],
        ]
    )
    # One vs rest by hand: class 0 ranks 8/8 pairs right; class 1 7/8 (0.4 loses to 0.5);
    # class 2 8/8.
    assert auc(labels, probs) == pytest.approx((1.0 + 0.875 + 1.0) / 3)
    assert auc(labels, probs) == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )


def test_auc_with_a_single_class_is_refused():
    with pytest.raises(ValueError, match="one class"):
        auc(np.zeros(4), np.random.default_rng(0).random(4))


def test_balanced_accuracy_weights_classes_equally():
    labels = np.array([0] * 8 + [1] * 2)
    probs = np.array([0.1] * 8 + [0.9, 0.1])
    assert balanced_accuracy(labels, probs) == pytest.approx((1.0 + 0.5) / 2)
    assert balanced_accuracy(labels, probs) == balanced_accuracy_score(labels, probs > 0.5)


def test_bootstrap_interval_contains_the_point_estimate_and_shrinks_with_more_slides():
    rng = np.random.default_rng(0)

    def noisy_scores(n):
        labels = np.arange(n) % 2
        return labels, labels + rng.normal(0, 1.0, n)

    small = bootstrap(auc, *noisy_scores(40), n_resamples=300)
    large = bootstrap(auc, *noisy_scores(400), n_resamples=300)
    for interval in (small, large):
        assert interval.low <= interval.value <= interval.high
    assert large.high - large.low < small.high - small.low


def test_fast_bootstrap_matches_scoring_each_resample_one_by_one():
    from training.mil.metrics import _resample_counts, _resampled

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 60)
    probs = np.round(rng.random(60) + 0.3 * labels, 1)  # rounded: plenty of ties
    counts = _resample_counts(labels, 200, seed=1)
    for metric in (auc, balanced_accuracy):
        one_by_one = [
            metric(labels[np.repeat(np.arange(60), c)], probs[np.repeat(np.arange(60), c)])
            for c in counts
        ]
        np.testing.assert_allclose(_resampled(metric, labels, probs, counts), one_by_one)


def test_interval_of_the_mean_over_seeds_is_narrower_than_one_seeds():
    rng = np.random.default_rng(2)
    labels = np.arange(80) % 2
    repeat_probs = labels + rng.normal(0, 1.0, (5, 80))  # five noisy, independent seeds
    single = bootstrap(auc, labels, repeat_probs[0], n_resamples=400)
    mean = bootstrap_mean(auc, labels, repeat_probs, n_resamples=400)
    assert mean.value == pytest.approx(np.mean([auc(labels, p) for p in repeat_probs]))
    assert mean.low <= mean.value <= mean.high
    assert mean.high - mean.low < single.high - single.low
    summary = summarize_repeats(
        labels,
        repeat_probs,
        [{"auc": auc(labels, p), "balanced_accuracy": 0.5} for p in repeat_probs],
    )
    assert summary["auc_std"] == pytest.approx(
        np.std([auc(labels, p) for p in repeat_probs], ddof=1)
    )
    assert summary["seed_ensemble"]["auc"]["value"] == auc(labels, repeat_probs.mean(0))


def test_summary_reports_auc_and_balanced_accuracy_with_intervals():
    labels = np.array([0, 1] * 10)
    out = summarize(labels, labels * 0.6 + 0.2)
    assert out["auc"]["value"] == 1.0 and out["balanced_accuracy"]["value"] == 1.0


def test_patient_folds_never_split_a_patient():
    rng = np.random.default_rng(1)
    patients = [f"p{i}" for i in rng.integers(0, 30, 90)]
    labels = [int(p[1:]) % 2 for p in patients]  # one label per patient
    folds = patient_folds(labels, patients, 5, seed=3)
    assert sorted(np.concatenate(folds)) == list(range(90))
    owners = [{patients[i] for i in fold} for fold in folds]
    for a in range(5):
        for b in range(a + 1, 5):
            assert not owners[a] & owners[b]
    train, val = validation_split(labels, patients, 0.2, seed=3)
    assert not {patients[i] for i in train} & {patients[i] for i in val}
    assert 0.1 < len(val) / 90 < 0.35


def test_too_few_patients_for_the_folds_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="fewer than the 5 folds"):
        patient_folds([0, 0, 0, 1, 1, 1], ["a", "b", "c", "d", "e", "f"], 5, seed=0)
