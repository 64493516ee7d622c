"""MIL models learn what they should: planted witnesses, and bags of real digit images."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from training.mil.metrics import auc
from training.mil.synthetic import digits_bags, witness_bags
from training.mil.train import TrainOptions, predict, train_model

# 3 witnesses among 2,000 tiles (0.15%): a bag's mean moves by 0.67 of its noise, its top tiles
# stand out clearly. Low-dimensional features keep the test fast on a shared CPU.
WITNESS = dict(n_tiles=2000, n_witnesses=3, shift=10.0, dim=8)


@pytest.fixture(scope="module")
def witness_sets():
    torch.set_num_threads(1)  # tiny models: threads cost more than they give on a shared CPU
    return (
        witness_bags(40, seed=1, **WITNESS),
        witness_bags(20, seed=2, **WITNESS),
        witness_bags(40, seed=3, **WITNESS),
    )


def _test_auc(sets, options: TrainOptions) -> float:
    train, val, test = sets
    trained = train_model(train, val, 2, options, seed=0)
    return auc(np.array([b.label for b in test]), predict(trained.model, test))


def test_chowder_finds_rare_witnesses(witness_sets):
    options = TrainOptions(
        "chowder", epochs=25, patience=25, batch_size=1, model_options=(("n_extreme", 5),)
    )
    assert _test_auc(witness_sets, options) > 0.95


def test_abmil_finds_rare_witnesses(witness_sets):
    assert _test_auc(witness_sets, TrainOptions("abmil", epochs=10, batch_size=4)) > 0.95


def test_mean_pooling_cannot_see_rare_witnesses(witness_sets):
    assert _test_auc(witness_sets, TrainOptions("mean-pool", epochs=20, batch_size=4)) < 0.8


def test_abmil_on_bags_of_real_digits_generalizes_to_unseen_images():
    torch.set_num_threads(1)
    digits = load_digits()
    images, labels = digits.data / 16.0, digits.target
    # Train and test bags draw from disjoint halves of the images.
    half = np.random.default_rng(0).permutation(len(images))
    fit_part, held_part = half[: len(half) // 2], half[len(half) // 2 :]
    train = digits_bags(120, seed=1, images=images[fit_part], digits=labels[fit_part])
    val = digits_bags(40, seed=2, images=images[fit_part], digits=labels[fit_part])
    test = digits_bags(100, seed=3, images=images[held_part], digits=labels[held_part])
    trained = train_model(train, val, 2, TrainOptions("abmil", epochs=30, batch_size=4), seed=0)
    assert auc(np.array([b.label for b in test]), predict(trained.model, test)) > 0.9
