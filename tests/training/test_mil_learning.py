"""MIL models learn what they should, with the command line's default settings.

Planted witnesses: freshly drawn bags (witness rate 0.4-1%, bags of 100-1,500 tiles, witnesses
far from the noise along 3 directions drawn per seed, 16-32 dimensions) on five seeds. Each model
runs through the benchmark's default path (learning-rate grid chosen on validation, early
stopping with the per-model minimum of epochs, official split with a 20% validation split).
Chowder, max pooling and ABMIL must reach a test AUC of 0.95 on every seed; mean pooling, which
only sees the bag mean (moved by 0.02-0.08 noise standard deviations), must stay well below.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from training.mil.benchmark import run_models
from training.mil.metrics import auc
from training.mil.protocols import ProtocolOptions
from training.mil.synthetic import PlantedWitnesses, digits_bags, planted_bags
from training.mil.train import TrainOptions, predict, train_model

SPECS = (
    PlantedWitnesses(0, tiles=(100, 700), dim=16, witness_rate=0.01, seed=0),
    PlantedWitnesses(0, tiles=(150, 900), dim=32, witness_rate=0.006, seed=1),
    PlantedWitnesses(0, tiles=(300, 1000), dim=24, witness_rate=0.004, seed=2),
    PlantedWitnesses(0, tiles=(100, 800), dim=32, witness_rate=0.008, seed=3),
    PlantedWitnesses(0, tiles=(300, 1500), dim=16, witness_rate=0.004, seed=4),
)
N_POOL, N_TEST = 50, 40  # the pool is split 40 train / 10 validation by the protocol
TILE_MODELS = ("chowder", "max-pool", "abmil")


def _planted_split(spec: PlantedWitnesses) -> list:
    bags = planted_bags(replace(spec, n_bags=N_POOL + N_TEST))
    return [replace(bag, split="train" if i < N_POOL else "test") for i, bag in enumerate(bags)]


@pytest.fixture(scope="module")
def planted_aucs() -> dict[str, list[float]]:
    """Test AUC of every model on every seed, trained with the defaults."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads cost more than they give on a shared CPU
    try:
        aucs: dict[str, list[float]] = {m: [] for m in (*TILE_MODELS, "mean-pool")}
        for spec in SPECS:
            evaluations = run_models(
                _planted_split(spec), 2, list(aucs), TrainOptions(), ProtocolOptions()
            )
            for evaluation in evaluations:
                aucs[evaluation.model].append(evaluation.summary["auc_mean"])
    finally:
        torch.set_num_threads(threads)
    print("planted-witness test AUC per seed:", {m: np.round(v, 3) for m, v in aucs.items()})
    return aucs


@pytest.mark.parametrize("model", TILE_MODELS)
def test_tile_level_models_find_rare_witnesses_on_every_seed(planted_aucs, model):
    assert min(planted_aucs[model]) >= 0.95, planted_aucs


def test_mean_pooling_stays_well_below_the_tile_level_models(planted_aucs):
    assert np.mean(planted_aucs["mean-pool"]) < 0.85, planted_aucs
    best_tile_level = np.min([planted_aucs[m] for m in TILE_MODELS], axis=0)
    assert (np.asarray(planted_aucs["mean-pool"]) < best_tile_level - 0.05).all(), planted_aucs


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
