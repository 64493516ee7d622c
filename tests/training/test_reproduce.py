"""The reproduction driver end to end: synthetic slides -> two encoders -> table, ROC, heatmaps."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import timm
import torch

from histo_encoders.pipeline.embed import EmbedOptions
from histo_encoders.tools.synthetic import write_synthetic_slide
from tests.fixture_paths import OPENSLIDE_FIXTURES as FIXTURES
from training.mil.errors import EmbeddingRunError, MilDataError
from training.mil.protocols import ProtocolOptions
from training.mil.train import TrainOptions
from training.reproduce import ReproduceConfig, folder_name, parse_config, run

N_SLIDES = 8


def _tiny_encoder(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("resnet18", layers=[1, 1, 1, 1], num_classes=0).eval()


def _write_inputs(root: Path) -> tuple[Path, Path]:
    slides = root / "slides"
    slides.mkdir(parents=True)
    rows = []
    for i in range(N_SLIDES):
        write_synthetic_slide(
            slides / f"s{i}.svs", width=512, height=512, tile=128, downsamples=(1, 4), seed=i
        )
        rows.append(
            [f"s{i}", "tumor" if i % 2 else "normal", f"p{i}", "test" if i >= 6 else "train"]
        )
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([["slide_id", "label", "patient_id", "split"], *rows])
    return slides, labels


def _config(slides: Path, labels: Path, out: Path) -> ReproduceConfig:
    return ReproduceConfig(
        slides=slides,
        labels=labels,
        encoders=("tiny-a", "tiny-b"),
        out=out,
        models=("chowder", "abmil"),
        protocol=ProtocolOptions("official-split", val_fraction=0.5),
        train=TrainOptions(epochs=2, patience=2, batch_size=2),
        embed=EmbedOptions(mpp=1.0, tile_size=32, workers=0, device="cpu", batch_size=16),
    )


def test_driver_embeds_benchmarks_and_writes_the_comparison(tmp_path):
    torch.set_num_threads(1)
    slides, labels = _write_inputs(tmp_path)
    config = _config(slides, labels, tmp_path / "out")
    models = {"tiny-a": _tiny_encoder(0), "tiny-b": _tiny_encoder(1)}
    paths = run(config, models=models)

    table = paths["markdown"].read_text()
    assert "| model (official-split) | tiny-a | tiny-b |" in table
    assert "| chowder |" in table and "| abmil |" in table
    record = json.loads(paths["json"].read_text())
    assert set(record["encoders"]) == {"tiny-a", "tiny-b"}
    assert record["class_names"] == ["normal", "tumor"]
    assert paths["roc"].stat().st_size > 1000
    assert len(paths["heatmaps"]) == 4 and all(p.stat().st_size > 1000 for p in paths["heatmaps"])
    features = sorted((tmp_path / "out" / "features" / "tiny-a").glob("*.h5"))
    assert [p.stem for p in features] == [f"s{i}" for i in range(N_SLIDES)]

    # A second run reuses the finished feature files instead of embedding again.
    stamps = {p: p.stat().st_mtime_ns for p in features}
    run(config, models=models)
    assert {p: p.stat().st_mtime_ns for p in features} == stamps


def test_a_labelled_slide_without_a_file_is_named(tmp_path):
    slides, labels = _write_inputs(tmp_path)
    (slides / "s3.svs").unlink()
    with pytest.raises(MilDataError, match="s3"):
        run(_config(slides, labels, tmp_path / "out"), models={})


def test_a_slide_that_fails_to_embed_stops_the_run_with_the_reason(tmp_path):
    slides, labels = _write_inputs(tmp_path)
    (slides / "s5.svs").unlink()
    shutil.copy(FIXTURES / "unopenable.tiff", slides / "s5.tiff")
    config = _config(slides, labels, tmp_path / "out")
    with pytest.raises(EmbeddingRunError, match="s5"):
        run(config, models={"tiny-a": _tiny_encoder(0), "tiny-b": _tiny_encoder(1)})


def test_command_line_parses_into_a_frozen_config():
    config = parse_config(
        [
            "--slides",
            "s",
            "--labels",
            "l.csv",
            "--encoders",
            "imagenet",
            "moco-camelyon",
            "--model",
            "chowder",
            "--protocol",
            "kfold",
            "--mpp",
            "0.5",
            "--tile-size",
            "224",
        ]
    )
    assert config.encoders == ("imagenet", "moco-camelyon")
    assert config.embed.mpp == 0.5 and config.embed.tile_size == 224
    assert config.protocol.protocol == "kfold" and config.protocol.inner_folds == 1


def test_encoder_names_become_safe_folder_names():
    assert folder_name("hf-hub:org/name@abc") == "name_abc"
    assert folder_name("/models/moco-camelyon/") == "moco-camelyon"


def test_the_library_never_imports_training():
    package = Path(__file__).resolve().parents[2] / "histo_encoders"
    for source in package.rglob("*.py"):
        text = source.read_text()
        assert "import training" not in text and "from training" not in text, source
