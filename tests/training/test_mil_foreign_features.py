"""The MIL benchmark on feature folders other tools wrote: CLAM's and TRIDENT's, as they are."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from histo_encoders.pipeline import ForeignFeaturesWarning
from training.mil.cli import main
from training.mil.synthetic import witness_bags, write_labels_csv

EASY = dict(n_tiles=40, n_witnesses=8, shift=4.0, dim=8)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _write_clam(bags, root):
    """CLAM's extract_features_fp.py output: h5_files/ (no attributes, int32 coords) + pt_files/."""
    (root / "h5_files").mkdir(parents=True)
    (root / "pt_files").mkdir()
    for bag in bags:
        features = bag.features.numpy()
        with h5py.File(root / "h5_files" / f"{bag.slide_id}.h5", "w") as h5:
            h5.create_dataset("features", data=features)
            h5.create_dataset("coords", data=bag.coords.astype(np.int32))
        torch.save(bag.features.clone(), root / "pt_files" / f"{bag.slide_id}.pt")
    return root


def _write_trident(bags, root):
    """TRIDENT's features_<encoder>/<slide>.h5 with its coords attributes."""
    root.mkdir(parents=True)
    for bag in bags:
        with h5py.File(root / f"{bag.slide_id}.h5", "w") as h5:
            h5.create_dataset("features", data=bag.features.numpy())
            coords = h5.create_dataset("coords", data=bag.coords)
            coords.attrs.update({"patch_size": 224, "patch_size_level0": 448})
            coords.attrs.update({"level0_magnification": 40, "target_magnification": 20})
    return root


@pytest.mark.parametrize("layout", ["clam", "clam-pt", "trident"])
def test_foreign_feature_folders_benchmark_as_they_are(layout, tmp_path):
    bags = witness_bags(16, seed=3, **EASY)
    splits = ["test" if i >= 10 else "train" for i in range(len(bags))]
    labels = write_labels_csv(bags, tmp_path / "labels.csv", splits=splits)
    if layout == "trident":
        features = _write_trident(bags, tmp_path / "features_toy")
    else:
        features = _write_clam(bags, tmp_path / "clam_features")
        if layout == "clam-pt":
            features = features / "pt_files"
    out = tmp_path / "out"
    argv = ["--features", str(features), "--labels", str(labels), "--model", "mean-pool"]
    argv += ["--epochs", "3", "--batch-size", "4", "--out", str(out), "--encoder", "toy"]
    with pytest.warns(ForeignFeaturesWarning) as caught:
        assert main(argv) == 0
    assert len([w for w in caught if w.category is ForeignFeaturesWarning]) == 1
    record = json.loads((out / "results.json").read_text())["encoders"]["toy"]
    assert len(record["mean-pool"]["predictions"]) == 6


def test_help_shows_every_default(capsys):
    from training.mil.cli import build_parser

    build_parser().print_help()
    text = capsys.readouterr().out
    for shown in ("(default: official-split)", "(default: 100)", "(default: 0)", "(default: 8)"):
        assert shown in " ".join(text.split()), shown
