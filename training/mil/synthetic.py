"""Bags with a known answer, for tests and demos.

- ``witness_bags``: Gaussian tiles; a positive bag hides a few tiles shifted along one direction.
  Only models that look at individual tiles can find them when the witness rate is low.
- ``planted_bags``: the harder, freshly drawn variant used to check that every model learns:
  bags of varying length, a witness rate of a fraction of a percent, witnesses shifted along one
  of a few directions drawn from the seed (PlantedWitnesses says how).
- ``digits_bags``: bags of real 8x8 digit images (scikit-learn's ``load_digits``); a bag is
  positive when it holds the chosen digit, as in Ilse et al.'s MNIST-bags.
- ``write_feature_files`` / ``write_labels_csv``: the same bags as HDF5 feature files and a CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_encoders.pipeline import FINGERPRINT_ATTR, write_features

from .data import Bag


def _bag(slide_id: str, label: int, features: np.ndarray, split: str | None = None) -> Bag:
    n = len(features)
    # A square grid of level-0 coordinates so heatmaps of synthetic bags look like slides.
    side = int(np.ceil(np.sqrt(n)))
    coords = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1).astype(np.int64) * 224
    return Bag(
        slide_id, slide_id, label, torch.from_numpy(features.astype(np.float32)), coords, split
    )


def witness_bags(
    n_bags: int,
    n_tiles: int = 1000,
    dim: int = 32,
    n_witnesses: int = 10,
    shift: float = 5.0,
    seed: int = 0,
    prefix: str = "slide",
) -> list[Bag]:
    """Half the bags positive (alternating); each positive bag holds ``n_witnesses`` tiles shifted
    by ``shift`` standard deviations along a fixed direction (the same for every seed)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(12345).normal(size=dim)
    direction /= np.linalg.norm(direction)
    bags = []
    for i in range(n_bags):
        label = i % 2
        tiles = rng.normal(size=(n_tiles, dim))
        if label:
            tiles[rng.choice(n_tiles, n_witnesses, replace=False)] += shift * direction
        bags.append(_bag(f"{prefix}{seed}_{i:04d}", label, tiles))
    return bags


@dataclass(frozen=True)
class PlantedWitnesses:
    """Planted-witness bags: standard Gaussian tiles; a positive bag holds
    ``max(1, round(witness_rate * n_tiles))`` witnesses, each moved about ``shift`` noise
    standard deviations away, spread over ``n_directions`` orthonormal directions.

    Directions are drawn from ``seed`` (never fixed), bag lengths uniformly from ``tiles``. A
    linear tile score (Chowder, max pooling) separates witnesses from noise, so bag-level models
    that look at tiles can reach AUC 1; the bag mean moves by only ``witness_rate * shift``, so
    mean pooling cannot at rates of a fraction of a percent.
    """

    n_bags: int
    tiles: tuple[int, int] = (300, 3000)
    dim: int = 32
    witness_rate: float = 0.005
    n_directions: int = 3
    shift: float = 8.0
    seed: int = 0


def witness_directions(spec: PlantedWitnesses) -> np.ndarray:
    """The ``(n_directions, dim)`` orthonormal directions of ``spec``'s witnesses."""
    rng = np.random.default_rng([spec.seed, 1])
    basis, _ = np.linalg.qr(rng.normal(size=(spec.dim, spec.n_directions)))
    return basis.T


def planted_bags(spec: PlantedWitnesses, prefix: str = "planted") -> list[Bag]:
    """``spec.n_bags`` bags, alternately negative and positive (see :class:`PlantedWitnesses`)."""
    directions = witness_directions(spec)
    rng = np.random.default_rng([spec.seed, 2])
    bags = []
    for i in range(spec.n_bags):
        label = i % 2
        n_tiles = int(rng.integers(spec.tiles[0], spec.tiles[1] + 1))
        tiles = rng.normal(size=(n_tiles, spec.dim))
        if label:
            n_witnesses = max(1, round(spec.witness_rate * n_tiles))
            rows = rng.choice(n_tiles, n_witnesses, replace=False)
            # Each witness is far from the noise along every direction (weights 0.75-1.25 of
            # shift / sqrt(n_directions)), so its distance is about ``shift`` in total.
            weights = rng.uniform(0.75, 1.25, (n_witnesses, spec.n_directions))
            tiles[rows] += spec.shift / np.sqrt(spec.n_directions) * weights @ directions
        bags.append(_bag(f"{prefix}{spec.seed}_{i:04d}", label, tiles))
    return bags


def digits_bags(
    n_bags: int,
    bag_size: int = 10,
    target: int = 9,
    seed: int = 0,
    images: np.ndarray | None = None,
    digits: np.ndarray | None = None,
) -> list[Bag]:
    """Bags of ``bag_size`` digit images (64 pixel features in 0..1), half of them positive.

    A negative bag draws only non-target digits; a positive one swaps in 1-3 target digits.
    Pass ``images``/``digits`` to draw from a held-out part of the data set.
    """
    if images is None or digits is None:
        from sklearn.datasets import load_digits  # a small data set shipped with scikit-learn

        data = load_digits()
        images, digits = data.data / 16.0, data.target
    rng = np.random.default_rng(seed)
    target_pool = np.flatnonzero(digits == target)
    other_pool = np.flatnonzero(digits != target)
    bags = []
    for i in range(n_bags):
        label = i % 2
        picks = rng.choice(other_pool, bag_size, replace=False)
        if label:
            n_target = int(rng.integers(1, 4))
            picks[:n_target] = rng.choice(target_pool, n_target, replace=False)
        bags.append(_bag(f"digits{seed}_{i:04d}", label, images[rng.permutation(picks)]))
    return bags


def write_feature_files(
    bags: Sequence[Bag], out_dir: str | Path, attrs: Mapping[str, Any] | None = None
) -> Path:
    """Write each bag as ``out_dir/<slide_id>.h5`` with the library's writer; returns out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = {FINGERPRINT_ATTR: "synthetic-bags", "patch_size_level0": 224.0, **(attrs or {})}
    for bag in bags:
        write_features(
            out_dir / f"{bag.slide_id}.h5", bag.features.float().numpy(), bag.coords, attrs
        )
    return out_dir


def write_labels_csv(
    bags: Sequence[Bag],
    path: str | Path,
    class_names: Sequence[str] = ("normal", "tumor"),
    splits: Sequence[str] | None = None,
    patients: Sequence[str] | None = None,
) -> Path:
    """Write ``slide_id,label,patient_id[,split]`` rows for ``bags``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide_id", "label", "patient_id"] + (["split"] if splits else []))
        for i, bag in enumerate(bags):
            patient = patients[i] if patients else bag.patient_id
            row = [bag.slide_id, class_names[bag.label], patient]
            writer.writerow(row + ([splits[i]] if splits else []))
    return path
