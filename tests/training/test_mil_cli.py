"""The MIL benchmark from files: labels CSV, feature files, protocols, command line, outputs."""

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from histo_encoders.errors import FeatureFileError
from training.mil.cli import main, parse_config
from training.mil.data import load_bags, read_labels
from training.mil.errors import EmptyBagError, MilDataError, ProtocolError
from training.mil.heatmap import render_heatmap, tile_scores
from training.mil.protocols import ProtocolOptions, evaluate
from training.mil.synthetic import witness_bags, write_feature_files, write_labels_csv
from training.mil.train import TrainOptions, train_model

# Small, easy bags: 10 witnesses among 60 tiles; enough to see learning, fast on a shared CPU.
EASY = dict(n_tiles=60, n_witnesses=10, shift=4.0, dim=8)
FAST = TrainOptions("abmil", epochs=6, patience=6, batch_size=4)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def dataset(tmp_path):
    bags = witness_bags(24, seed=0, **EASY)
    splits = ["test" if i >= 16 else "train" for i in range(len(bags))]
    patients = [f"patient{i // 2}" for i in range(len(bags))]  # two slides per patient
    write_feature_files(bags, tmp_path / "features" / "toy-encoder")
    labels = write_labels_csv(bags, tmp_path / "labels.csv", splits=splits, patients=patients)
    return tmp_path / "features" / "toy-encoder", labels


def test_command_line_writes_json_table_and_roc(dataset, tmp_path, capsys):
    features, labels = dataset
    out = tmp_path / "out"
    argv = [
        "--features",
        str(features),
        "--labels",
        str(labels),
        "--model",
        "abmil",
        "mean-pool",
        "--protocol",
        "official-split",
        "--val-fraction",
        "0.25",
        "--epochs",
        "6",
        "--batch-size",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    record = json.loads((out / "results.json").read_text())["encoders"]["toy-encoder"]
    assert set(record) == {"abmil", "mean-pool"}
    assert len(record["abmil"]["predictions"]) == 8  # the 8 test slides only
    assert record["abmil"]["summary"]["auc_mean"] > 0.9
    table = (out / "results.md").read_text()
    assert "| abmil |" in table and "toy-encoder" in table
    assert (out / "roc.png").stat().st_size > 1000
    assert "Slide-level AUC" in capsys.readouterr().out


def test_parse_config_is_frozen_and_nested_cv_defaults_to_five_inner_folds(dataset):
    features, labels = dataset
    config = parse_config(
        [
            "--features",
            str(features),
            "--labels",
            str(labels),
            "--protocol",
            "nested-cv",
            "--model",
            "chowder",
        ]
    )
    assert config.protocol.inner_folds == 5 and config.encoder == "toy-encoder"
    with pytest.raises(AttributeError):
        config.models = ("abmil",)


@pytest.mark.parametrize("protocol", ["kfold", "nested-cv"])
def test_cross_validation_scores_every_slide_once_with_patient_level_folds(dataset, protocol):
    features, labels_csv = dataset
    labels = read_labels(labels_csv)
    bags = load_bags(features, labels, half=True)
    inner = 2 if protocol == "nested-cv" else 1
    options = ProtocolOptions(protocol, folds=3, inner_folds=inner, val_fraction=0.25, repeats=2)
    evaluation = evaluate(bags, FAST, labels.n_classes, options)
    assert sorted(evaluation.slide_ids) == sorted(row.slide_id for row in labels.rows)
    assert len(evaluation.per_repeat) == 2
    assert evaluation.summary["auc_mean"] > 0.8
    # A slide is scored by the models of the fold that held it out (2 inner models for nested).
    assert {len(m) for m in evaluation.members.values()} == {2 if protocol == "nested-cv" else 1}


def test_several_learning_rates_are_chosen_between_on_validation(dataset):
    features, labels_csv = dataset
    labels = read_labels(labels_csv)
    bags = load_bags(features, labels)
    candidates = [FAST, TrainOptions("abmil", epochs=6, batch_size=4, lr=1e-7)]
    evaluation = evaluate(bags, candidates, 2, ProtocolOptions(val_fraction=0.25))
    # A learning rate too small to learn anything is never the one selected.
    assert evaluation.per_repeat[0]["folds"][0]["lr"] == 1e-3


def test_multi_class_bags_give_one_probability_per_class(tmp_path):
    bags = witness_bags(30, seed=4, **EASY)
    classes = ("a", "b", "c")
    bags = [
        type(b)(b.slide_id, b.patient_id, i % 3, b.features, b.coords) for i, b in enumerate(bags)
    ]
    write_feature_files(bags, tmp_path / "f")
    labels = read_labels(write_labels_csv(bags, tmp_path / "l.csv", class_names=classes))
    evaluation = evaluate(
        load_bags(tmp_path / "f", labels),
        FAST,
        3,
        ProtocolOptions("kfold", folds=3, val_fraction=0.25),
    )
    assert evaluation.probs.shape == (30, 3)
    np.testing.assert_allclose(evaluation.probs.sum(1), 1.0, rtol=1e-5)
    assert 0.0 <= evaluation.summary["auc_mean"] <= 1.0


def test_official_split_without_a_split_column_says_what_to_use(tmp_path):
    bags = witness_bags(10, seed=5, **EASY)
    write_feature_files(bags, tmp_path / "f")
    labels = read_labels(write_labels_csv(bags, tmp_path / "l.csv"))
    with pytest.raises(ProtocolError, match="--protocol kfold"):
        evaluate(load_bags(tmp_path / "f", labels), FAST, 2, ProtocolOptions())


def test_labels_csv_problems_are_reported_clearly(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("slide,label\na,1\n")
    with pytest.raises(MilDataError, match="slide_id"):
        read_labels(path)
    path.write_text("slide_id,label,split\na,1,train\nb,0,validation\n")
    with pytest.raises(MilDataError, match="'validation'"):
        read_labels(path)
    path.write_text("slide_id,label\na,10\nb,9\n")
    assert read_labels(path).class_names == ("9", "10")  # numeric order, not text order


def test_missing_and_empty_feature_files_are_refused(tmp_path):
    bags = witness_bags(4, seed=6, **EASY)
    labels = read_labels(write_labels_csv(bags, tmp_path / "l.csv"))
    write_feature_files(bags[:3], tmp_path / "f")
    with pytest.raises(FeatureFileError, match="1 labelled slide"):
        load_bags(tmp_path / "f", labels)
    empty = type(bags[3])(bags[3].slide_id, "p", 1, torch.zeros(0, 8), np.zeros((0, 2), np.int64))
    write_feature_files([empty], tmp_path / "f")
    with pytest.raises(EmptyBagError, match=bags[3].slide_id):
        load_bags(tmp_path / "f", labels)


def test_heatmap_paints_tile_scores_where_the_tiles_are(tmp_path):
    bag = witness_bags(2, seed=7, n_tiles=16, n_witnesses=2, dim=8)[1]
    torch.manual_seed(0)
    from training.mil.models import build_model

    scores = tile_scores([build_model("chowder", 8, 2).eval()], bag)
    assert scores.shape == (16,)
    thumbnail = np.full((100, 100, 3), 230, np.uint8)
    path = render_heatmap(thumbnail, 10.0, bag.coords, 224.0, scores, tmp_path / "h.png")
    assert path.stat().st_size > 1000


def test_predict_returns_probabilities_in_the_order_of_the_bags_given():
    from training.mil.models import build_model
    from training.mil.train import predict

    long = witness_bags(4, n_tiles=12, n_witnesses=2, dim=8, seed=8)
    short = witness_bags(5, n_tiles=3, n_witnesses=2, dim=8, seed=9)
    mixed = [long[0], short[0], long[1], short[1], long[2], short[2], long[3], short[3], short[4]]
    torch.manual_seed(0)
    model = build_model("abmil", 8, 2)
    one_by_one = np.concatenate([predict(model, [bag]) for bag in mixed])
    np.testing.assert_allclose(predict(model, mixed, batch_size=2), one_by_one, atol=1e-6)


def test_each_training_epoch_sees_every_slide_once_with_little_padding():
    from training.mil.data import iterate_batches

    bags = [
        witness_bags(1, n_tiles=int(n), n_witnesses=1, dim=4, seed=i, prefix=f"b{i}_")[0]
        for i, n in enumerate(np.random.default_rng(0).integers(5, 300, 64))
    ]
    batches = list(iterate_batches(bags, mode="padded", batch_size=4, shuffle=True, seed=1))
    seen = [slide for batch in batches for slide in batch.slide_ids]
    assert sorted(seen) == sorted(bag.slide_id for bag in bags)
    padding = sum(int((~batch.mask).sum()) for batch in batches)
    real = sum(bag.n_tiles for bag in bags)
    assert padding < 0.2 * real  # unsorted random batches of these lengths pad ~50%


def test_sample_mode_draws_a_fresh_subset_of_tiles_each_epoch():
    from training.mil.data import iterate_batches

    bags = witness_bags(2, n_tiles=100, n_witnesses=2, dim=4, seed=3)
    first, second = (
        next(iterate_batches(bags, mode="sample", sample_tiles=10, shuffle=True, seed=s))
        for s in (0, 1)
    )
    assert first.features.shape[1] == 10 and first.mask.all()
    assert not torch.equal(first.features, second.features)


def test_each_epoch_logs_one_line_with_the_train_loss_and_validation_auc(caplog):
    bags = witness_bags(16, seed=10, **EASY)
    options = TrainOptions("abmil", epochs=3, min_epochs=3, batch_size=4)
    with caplog.at_level(logging.INFO, logger="training.mil.train"):
        train_model(bags[:10], bags[10:], 2, options)
    lines = [r.getMessage() for r in caplog.records if r.name == "training.mil.train"]
    assert len(lines) == 3
    assert all("train loss" in line and "val AUC" in line for line in lines)
    assert lines[0].startswith("abmil lr=0.001") and "epoch 1/3" in lines[0]


def test_a_stopped_benchmark_keeps_finished_repeats_and_a_rerun_skips_them(
    dataset, tmp_path, monkeypatch
):
    import training.mil.protocols as protocols

    features, labels_csv = dataset
    bags = load_bags(features, read_labels(labels_csv))
    options = ProtocolOptions(val_fraction=0.25, repeats=3, results_dir=tmp_path / "repeats")
    real_repeat, ran = protocols.run_repeat, []

    def stopped_at_seed_1(bags, candidates, n_classes, options, seed):
        if seed == 1:
            raise KeyboardInterrupt
        ran.append(seed)
        return real_repeat(bags, candidates, n_classes, options, seed)

    monkeypatch.setattr(protocols, "run_repeat", stopped_at_seed_1)
    with pytest.raises(KeyboardInterrupt):
        evaluate(bags, FAST, 2, options)
    assert ran == [0] and len(list((tmp_path / "repeats").glob("abmil-*/repeat-0.json"))) == 1

    monkeypatch.setattr(
        protocols, "run_repeat", lambda *a, **k: ran.append(a[-1]) or real_repeat(*a, **k)
    )
    evaluation = evaluate(bags, FAST, 2, options)
    assert ran == [0, 1, 2]  # seed 0 was loaded, not trained again
    assert [r["seed"] for r in evaluation.per_repeat] == [0, 1, 2]
    # The first repeat's models come back from disk for heatmaps.
    assert set(evaluation.members) == set(evaluation.slide_ids)
    again = evaluate(bags, FAST, 2, options)
    assert ran == [0, 1, 2]
    np.testing.assert_array_equal(again.repeat_probs, evaluation.repeat_probs)
    slide = evaluation.slide_ids[0]
    np.testing.assert_allclose(
        tile_scores(again.members[slide], bags[0]),
        tile_scores(evaluation.members[slide], bags[0]),
        rtol=1e-6,
    )


def test_other_settings_or_features_never_reuse_saved_repeats(dataset, tmp_path):
    features, labels_csv = dataset
    bags = load_bags(features, read_labels(labels_csv))
    options = ProtocolOptions(val_fraction=0.25, results_dir=tmp_path / "repeats")
    evaluate(bags, FAST, 2, options)
    evaluate(bags, replace(FAST, lr=3e-3), 2, options)
    shifted = [replace(bag, features=bag.features + 1) for bag in bags]
    evaluate(shifted, FAST, 2, options)
    assert len(list((tmp_path / "repeats").glob("abmil-*"))) == 3


def test_the_command_line_writes_each_model_as_soon_as_it_finishes(dataset, tmp_path, monkeypatch):
    import training.mil.benchmark as benchmark

    features, labels = dataset
    real_evaluate = benchmark.evaluate

    def stopped_in_the_second_model(bags, candidates, n_classes, protocol):
        if candidates[0].name == "mean-pool":
            raise KeyboardInterrupt
        return real_evaluate(bags, candidates, n_classes, protocol)

    monkeypatch.setattr(benchmark, "evaluate", stopped_in_the_second_model)
    argv = ["--features", str(features), "--labels", str(labels), "--out", str(tmp_path / "out")]
    argv += ["--model", "abmil", "mean-pool", "--val-fraction", "0.25", "--epochs", "3"]
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    record = json.loads((tmp_path / "out" / "results.json").read_text())["encoders"]
    assert set(record["toy-encoder"]) == {"abmil"}


def test_an_ensemble_scores_each_test_slide_with_e_models(dataset):
    features, labels_csv = dataset
    bags = load_bags(features, read_labels(labels_csv))
    evaluation = evaluate(bags, FAST, 2, ProtocolOptions(val_fraction=0.25, ensemble=3))
    assert {len(models) for models in evaluation.members.values()} == {3}
    assert len(evaluation.per_repeat[0]["folds"][0]["best_epochs"]) == 3


def test_results_table_labels_spread_interval_and_seed_ensemble_apart(dataset, tmp_path):
    from training.mil.report import write_markdown

    features, labels_csv = dataset
    bags = load_bags(features, read_labels(labels_csv))
    evaluation = evaluate(bags, FAST, 2, ProtocolOptions(val_fraction=0.25, repeats=2))
    text = write_markdown({"toy": [evaluation]}, tmp_path / "results.md").read_text()
    comparison = next(line for line in text.splitlines() if line.startswith("| abmil |"))
    assert "±" in comparison and "–" not in comparison  # mean ± std only
    header = next(line for line in text.splitlines() if line.startswith("| encoder |"))
    for column in (
        "mean ± std over seeds",
        "95% CI of the mean (bootstrap)",
        "seed-ensemble value",
        "seed-ensemble 95% CI (bootstrap)",
    ):
        assert column in header
    summary = evaluation.summary
    assert summary["auc_mean_ci"]["low"] <= summary["auc_mean"] <= summary["auc_mean_ci"]["high"]


def test_a_config_file_sets_defaults_the_command_line_overrides(dataset, tmp_path):
    from histo_encoders.errors import ConfigError
    from tests.fixture_paths import REPO

    features, labels = dataset
    base = ["--features", str(features), "--labels", str(labels)]
    shipped = REPO / "training/configs/mil_camelyon16.yaml"
    config = parse_config([*base, "--config", str(shipped)])
    assert config.models == ("chowder", "abmil") and config.n_extreme == 5
    assert config.protocol.repeats == 5 and config.train.batch_size == 16
    overridden = parse_config([*base, "--config", str(shipped), "--repeats", "2"])
    assert overridden.protocol.repeats == 2
    typo = tmp_path / "typo.yaml"
    typo.write_text("n-extremes: 5\n")
    with pytest.raises(ConfigError, match="n_extremes"):
        parse_config([*base, "--config", str(typo)])


def test_the_throughput_tool_prints_epochs_against_the_floor(capsys):
    from training.mil.throughput import main as throughput

    argv = ["--slides", "4", "--tiles", "20", "40", "--dim", "16", "--epochs", "2"]
    assert throughput([*argv, "--gemm-size", "128", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("; fraction ") == 2 and "best epoch reaches" in out  # printed, not asserted
