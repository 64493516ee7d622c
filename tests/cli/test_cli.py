"""The command line as a user runs it: help, embed (exit codes, summary), demo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from histo_encoders.cli import build_parser, main
from histo_encoders.pipeline.features import read_features

_REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    return subprocess.run(
        [sys.executable, "-m", "histo_encoders", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=_REPO,
        env=env,
    )


def _embed_args(encoder_dir: Path, out: Path) -> list[str]:
    return [
        "--encoder", str(encoder_dir), "--out", str(out), "--device", "cpu",
        "--workers", "0", "--batch-size", "8", "--no-progress",
    ]  # fmt: skip


def test_help_lists_the_commands_and_embed_options(capsys):
    # In process: `python -m histo_encoders` itself is exercised by the embed and demo tests.
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    for command in ("embed", "demo", "benchmark", "list", "info", "fetch", "publish", "convert"):
        assert command in printed
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    embed_help = capsys.readouterr().out
    for option in ("--slide-mpp", "--min-tissue", "--preview", "--reader", "--precision"):
        assert option in embed_help
    embed_help = build_parser().parse_args(["embed", "x.svs", "--out", "o"])
    assert embed_help.encoder is None and embed_help.mpp is None


@pytest.mark.integration
def test_embed_subprocess_writes_features_and_summary(synthetic_slides, tiny_encoder_dir, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(synthetic_slides.svs, slides)
    shutil.copy(synthetic_slides.blank, slides)
    out = tmp_path / "out"

    result = _run("embed", str(slides), *_embed_args(tiny_encoder_dir, out), "--preview")

    assert result.returncode == 0, result.stderr
    features, coords, attrs = read_features(out / "alpha.h5")
    assert features.shape[1] == 96 and len(coords) == len(features) > 0
    assert attrs["encoder"] == "tiny-embed"
    assert (out / "alpha.preview.png").is_file()
    assert json.loads((out / "summary.json").read_text())["counts"] == {"ok": 1, "empty": 1}
    assert "1 ok" in result.stdout


def test_embed_exits_non_zero_when_a_slide_fails(
    synthetic_slides, openslide_fixtures, tiny_encoder_dir, tmp_path, capsys
):
    slides = [str(synthetic_slides.svs), str(openslide_fixtures / "unreadable.svs")]
    code = main(["embed", *slides, *_embed_args(tiny_encoder_dir, tmp_path)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "failed  " in printed and "SlideReadError" in printed
    assert (tmp_path / "alpha.h5").is_file()


def test_implausible_mpp_is_refused_unless_slide_mpp_is_given(
    openslide_fixtures, tiny_encoder_dir, tmp_path, capsys
):
    boxes = str(openslide_fixtures / "boxes.tiff")
    args = _embed_args(tiny_encoder_dir, tmp_path)
    assert main(["embed", boxes, *args]) == 1
    assert "ImplausibleMppError" in capsys.readouterr().out

    assert main(["embed", boxes, *args, "--slide-mpp", "0.5"]) == 0
    assert read_features(tmp_path / "boxes.h5")[2]["slide_mpp_source"]


def test_encoder_errors_are_one_clear_line(tmp_path, synthetic_slides, capsys):
    code = main(["embed", str(synthetic_slides.svs), "--out", str(tmp_path), "--encoder", "mocco"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Unknown encoder 'mocco'" in err and "Traceback" not in err


def test_missing_slide_path_is_a_clear_error(tmp_path, capsys):
    args = ["embed", str(tmp_path / "nope.svs"), "--out", str(tmp_path / "out")]
    code = main([*args, "--encoder", "imagenet"])
    assert code == 2
    assert "No such slide file or folder" in capsys.readouterr().err


def test_list_and_info_show_registered_encoders(capsys):
    assert main(["list"]) == 0
    assert "moco-camelyon" in capsys.readouterr().out
    assert main(["info", "lunit-mocov2"]) == 0
    info = capsys.readouterr().out
    assert "0.70322989" in info and "1aurent/resnet50.lunit_mocov2" in info


@pytest.mark.integration
def test_demo_runs_offline_and_says_its_encoder_is_untrained(tmp_path):
    started = time.perf_counter()
    result = _run("demo", "--out", str(tmp_path / "demo"), "--device", "cpu", timeout=180)
    elapsed = time.perf_counter() - started

    assert result.returncode == 0, result.stderr
    assert "UNTRAINED" in result.stdout and "meaningless" in result.stdout
    features, _, attrs = read_features(tmp_path / "demo" / "features" / "demo-slide.h5")
    assert features.shape[0] > 0 and features.shape[1] == 512
    assert attrs["encoder"] == "untrained-demo"
    card = (tmp_path / "demo" / "untrained-demo" / "README.md").read_text()
    assert "meaningless" in card
    assert elapsed < 60, f"demo took {elapsed:.0f} s"


@pytest.mark.parametrize("command", ["info", "fetch"])
def test_unknown_encoder_name_for_info_and_fetch(command, capsys):
    assert main([command, "no-such-encoder"]) == 2
    assert "histo-encoders list" in capsys.readouterr().err


def test_benchmark_prints_model_only_and_end_to_end(synthetic_slides, tiny_encoder_dir, capsys):
    args = ["benchmark", "--slide", str(synthetic_slides.svs), "--encoder", str(tiny_encoder_dir)]
    args += ["--mpp", "2.0", "--tile-size", "32", "--max-tiles", "8", "--model-tiles", "8"]
    args += ["--repeats", "1", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "model only" in printed and "end to end" in printed


def test_convert_and_publish_write_loadable_encoder_folders(tmp_path, capsys):
    import torch

    from histo_encoders.encoders.load import load
    from histo_encoders.encoders.registry import register_encoder, unregister_encoder
    from tests.encoder_kit import TINY, seeded_state

    state = seeded_state(TINY)
    moco = {f"module.encoder_q.{key}": value for key, value in state.items()}
    moco |= {"module.queue": torch.zeros(8, 16), "module.queue_ptr": torch.zeros(1)}
    checkpoint = tmp_path / "moco.pth.tar"
    torch.save({"state_dict": moco}, checkpoint)
    register_encoder(TINY.with_updates(name="cli-tiny"))
    try:
        args = ["convert", str(checkpoint), "--out", str(tmp_path / "conv"), "--name", "my-tiny"]
        code = main([*args, "--like", "cli-tiny"])
    finally:
        unregister_encoder("cli-tiny")
    assert code == 0, capsys.readouterr().err
    assert load(tmp_path / "conv").histo_config.name == "my-tiny"

    meta = {"architecture": "test_resnet", "num_features": 96, "tile_size": 32, "mpp": 0.5}
    meta |= {"mean": [0.5] * 3, "std": [0.25] * 3}
    checkpoint = tmp_path / "trained.pt"
    torch.save({"encoder_state_dict": state, "encoder_meta": meta}, checkpoint)
    out = tmp_path / "published"
    assert main(["publish", str(checkpoint), "--name", "trained-tiny", "--out", str(out)]) == 0
    assert load(out).histo_config.mean == (0.5, 0.5, 0.5)
