"""End-to-end pretraining runs on tiny synthetic slides: resume, torchrun + gloo, export."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from histo_encoders.errors import ConfigError
from training.checkpoint import load_checkpoint
from training.config import load_config
from training.export import export_checkpoint
from training.pretrain import pretrain

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "training/configs/moco_tiny.yaml"


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 1024 x 768 slides at 0.5 um/px with planted tissue (~60 tiles of 32 px at 1 um/px)."""
    from histo_encoders.tools.synthetic import write_synthetic_slide

    folder = tmp_path_factory.mktemp("slides")
    for seed in range(2):
        write_synthetic_slide(
            folder / f"slide{seed}.svs",
            width=1024,
            height=768,
            mpp=0.5,
            downsamples=(1, 4),
            seed=seed,
        )
    return folder


@pytest.fixture
def restore_torch_globals():
    """Deterministic mode and thread count are process-wide: put them back after the test."""
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def tiny_config(slide_dir: Path, out: Path, *extra: str):
    overrides = [
        f"data.slides={slide_dir}",
        f"run.out={out}",
        "model.bn_mode=split",
        "data.samples_per_epoch=16",
        "data.workers=0",
        "run.checkpoint_every=100",
        *extra,
    ]
    return load_config(TINY_CONFIG, overrides)


def test_resumed_run_equals_uninterrupted_run(slide_dir, tmp_path, restore_torch_globals) -> None:
    straight = load_checkpoint(pretrain(tiny_config(slide_dir, tmp_path / "straight")))
    # Interrupted mid-epoch (step 3 of 4), then started again with the same run folder.
    pretrain(tiny_config(slide_dir, tmp_path / "resumed", "run.max_steps=3"))
    assert load_checkpoint(tmp_path / "resumed/checkpoint.pt")["step"] == 3
    resumed = load_checkpoint(pretrain(tiny_config(slide_dir, tmp_path / "resumed")))

    assert straight["step"] == resumed["step"] == 8
    for key, value in straight["model"].items():  # both encoders, queue and pointer
        assert torch.equal(value, resumed["model"][key]), key
    assert straight["scheduler"] == resumed["scheduler"]
    momentum_a = straight["optimizer"]["state"]
    momentum_b = resumed["optimizer"]["state"]
    assert all(
        torch.equal(momentum_a[i]["momentum_buffer"], momentum_b[i]["momentum_buffer"])
        for i in momentum_a
    )


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_cuts_the_log_back_to_the_checkpoint(
    slide_dir, tmp_path, monkeypatch, restore_torch_globals
) -> None:
    import training.pretrain_loop as loop

    logged = ("run.log_every=1", "run.checkpoint_every=2")
    pretrain(tiny_config(slide_dir, tmp_path / "straight", *logged))
    # Killed just after step 3: step 3 is in the log, the last checkpoint holds step 2.
    real_step = loop.train_step

    def killed_after_step_3(state, *args):
        if state.step == 3:
            raise KeyboardInterrupt
        return real_step(state, *args)

    monkeypatch.setattr(loop, "train_step", killed_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config(slide_dir, tmp_path / "resumed", *logged))
    assert [r["step"] for r in _records(tmp_path / "resumed")] == [1, 2, 3]
    monkeypatch.setattr(loop, "train_step", real_step)
    pretrain(tiny_config(slide_dir, tmp_path / "resumed", *logged))

    resumed, straight = _records(tmp_path / "resumed"), _records(tmp_path / "straight")
    assert [r["step"] for r in resumed] == list(range(1, 9))  # each step once, in order
    # The resumed curve is the uninterrupted one (timings aside): it plots as it is.
    assert [(r["loss"], r["acc"], r["lr"]) for r in resumed] == [
        (r["loss"], r["acc"], r["lr"]) for r in straight
    ]


def test_resume_with_other_hyperparameters_is_refused(
    slide_dir, tmp_path, restore_torch_globals
) -> None:
    pretrain(tiny_config(slide_dir, tmp_path / "run", "run.max_steps=1"))
    with pytest.raises(ConfigError, match="other settings"):
        pretrain(tiny_config(slide_dir, tmp_path / "run", "optim.lr_per_256=0.1"))


def test_slides_are_planned_once_per_run(slide_dir, tmp_path, monkeypatch, restore_torch_globals):
    import training.tiles

    planned = []
    real_plan = training.tiles._plan_slide
    monkeypatch.setattr(
        training.tiles,
        "_plan_slide",
        lambda path, options: planned.append(path) or real_plan(path, options),
    )
    pretrain(tiny_config(slide_dir, tmp_path / "run", "run.max_steps=6"))  # crosses an epoch
    assert len(planned) == 2  # one tissue detection + tile plan per slide, not per epoch
    pretrain(tiny_config(slide_dir, tmp_path / "run", "run.max_steps=7"))  # resume: cached index
    assert len(planned) == 2


def test_folder_of_tiles_trains_and_logs_knn(tmp_path, restore_torch_globals) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(8):
            folder = tmp_path / "tiles" / label
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    config = load_config(
        TINY_CONFIG,
        [
            "data.source=folder",
            f"data.tiles_dir={tmp_path / 'tiles'}",
            f"run.out={tmp_path / 'run'}",
            "model.bn_mode=split",
            "data.workers=1",
            "optim.epochs=1",  # 32 tiles drawn from 16 images: 8 steps of 4
            f"knn.train_dir={tmp_path / 'tiles'}",
            f"knn.val_dir={tmp_path / 'tiles'}",
            "knn.every_steps=2",
            "knn.k=3",
        ],
    )
    pretrain(config)
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 8 and 0.0 <= records[-1]["knn_acc"] <= 1.0


def test_queue_must_hold_whole_global_batches(slide_dir, tmp_path) -> None:
    with pytest.raises(ConfigError, match="multiple of the global batch"):
        pretrain(tiny_config(slide_dir, tmp_path / "run", "model.queue_size=70"))


def test_shuffle_bn_in_one_process_points_to_split(tmp_path) -> None:
    config = load_config(TINY_CONFIG, [f"run.out={tmp_path}", "model.bn_mode=shuffle"])
    with pytest.raises(ConfigError, match="bn_mode=split"):
        pretrain(config)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_torchrun(slide_dir: Path, out: Path, *overrides: str) -> None:
    """The tiny config under torchrun with 2 CPU ranks (gloo, shuffle BN across ranks)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "training.pretrain",
        "--config",
        str(TINY_CONFIG),
        f"data.slides={slide_dir}",
        f"run.out={out}",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.distributed
def test_torchrun_two_ranks_with_shuffle_bn_trains_and_exports(slide_dir, tmp_path) -> None:
    out = tmp_path / "run"
    run_torchrun(slide_dir, out, "run.max_steps=6")

    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["step"] == 6 and saved["world_size"] == 2 and len(saved["rng"]) == 2
    assert saved["encoder_meta"]["global_batch"] == 8
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "acc", "images_per_s", "data_wait", "lr"} <= set(records[-1])
    run_config = yaml.safe_load((out / "config.yaml").read_text())
    assert run_config["world_size"] == 2 and run_config["histo_encoders_version"]

    folder = export_checkpoint(out, tmp_path / "encoder", name="moco-tiny-test")
    images = torch.rand(2, 3, 32, 32)
    plain = timm.create_model("local-dir:" + str(folder), pretrained=True, num_classes=0).eval()
    backbone = timm.create_model("resnet18", num_classes=0, layers=[1, 1, 1, 1]).eval()
    backbone.load_state_dict(saved["encoder_state_dict"])
    with torch.no_grad():
        torch.testing.assert_close(plain(images), backbone(images))
    import histo_encoders

    loaded = histo_encoders.load(folder)
    assert loaded.histo_config.mpp == 1.0 and loaded.histo_config.tile_size == 32
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), backbone(images))
    assert "steps: 6" in (folder / "README.md").read_text()


@pytest.mark.distributed
@pytest.mark.slow
def test_torchrun_resume_equals_uninterrupted_run(slide_dir, tmp_path) -> None:
    run_torchrun(slide_dir, tmp_path / "straight", "run.max_steps=6")
    run_torchrun(slide_dir, tmp_path / "resumed", "run.max_steps=3")  # mid-epoch (4 per epoch)
    run_torchrun(slide_dir, tmp_path / "resumed", "run.max_steps=6")
    straight = load_checkpoint(tmp_path / "straight/checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "resumed/checkpoint.pt")
    assert straight["step"] == resumed["step"] == 6
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
