"""The benchmark's pictures: heatmaps and ROC curves a pathologist can put in a paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histo_encoders.pipeline.embed import EmbedOptions
from histo_encoders.pipeline.run import embed_slides
from training.mil.data import load_bags, read_labels
from training.mil.heatmap import heatmap_for_slide, prediction_line, score_label
from training.mil.models import build_model


@pytest.fixture
def embedded(synthetic_slides, tiny_encoder, tmp_path):
    options = EmbedOptions(device="cpu", workers=0, batch_size=16)
    embed_slides([synthetic_slides.svs], tiny_encoder, tmp_path / "f", options, progress=False)
    labels = tmp_path / "labels.csv"
    labels.write_text("slide_id,label\nalpha,tumor\n")
    table = read_labels(labels, ["normal", "tumor"])
    return load_bags(tmp_path / "f", table)[0], synthetic_slides.svs


def test_heatmap_names_what_it_shows_and_the_slides_label(embedded, tmp_path):
    bag, slide = embedded
    torch.manual_seed(0)
    abmil, chowder = build_model("abmil", 96, 1).eval(), build_model("chowder", 96, 1).eval()
    assert score_label([abmil]).startswith("attention")
    assert score_label([chowder]).startswith("tile score")
    line = prediction_line([abmil], bag, ["normal", "tumor"])
    assert line.startswith("true label: tumor; predicted P(tumor) = ")
    path = heatmap_for_slide(
        [abmil],
        bag,
        slide,
        tmp_path / "heat.png",
        title="alpha: abmil",
        class_names=["normal", "tumor"],
    )
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] > image.shape[0]  # two panels side by side


def test_roc_has_bands_counts_line_styles_and_names_not_paths(tmp_path):
    from training.mil.protocols import ProtocolOptions, evaluate
    from training.mil.report import display_name, plot_roc, roc_band
    from training.mil.synthetic import witness_bags
    from training.mil.train import TrainOptions

    torch.set_num_threads(1)
    bags = witness_bags(24, seed=5, n_tiles=30, n_witnesses=6, shift=2.0, dim=8)
    options = ProtocolOptions("kfold", folds=3, val_fraction=0.25)
    results = {}
    for encoder, epochs in (("features/strong-encoder", 6), ("hf-hub:org/weak-encoder", 1)):
        train = [TrainOptions(m, epochs=epochs, patience=6, batch_size=4) for m in ("abmil",)]
        results[encoder] = [evaluate(bags, train, 2, options)]
    assert display_name("features/strong-encoder") == "strong-encoder"
    assert display_name("hf-hub:org/weak-encoder") == "weak-encoder"
    ev = results["features/strong-encoder"][0]
    low, high = roc_band(ev.labels, ev.probs, n_boot=50)
    assert (low <= high).all() and high.max() <= 1.0
    path = plot_roc(results, tmp_path / "roc.png")
    assert path.stat().st_size > 5000
