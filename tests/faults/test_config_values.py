"""Class 6: config.json values are checked field by field when the encoder is loaded, before any
slide is read; a bad value is a ConfigError naming the field and its allowed range."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import histo_encoders
from histo_encoders import errors
from histo_encoders.cli import main
from histo_encoders.encoders.registry import register_encoder, unregister_encoder
from tests.encoder_kit import TINY, export_tiny

# (field path in config.json, new value, what the message must name)
BAD_VALUES = [
    ("histo_encoders.tile_size", 0, "histo_encoders.tile_size"),
    ("histo_encoders.tile_size", -32, "histo_encoders.tile_size"),
    ("histo_encoders.mpp", 0, "histo_encoders.mpp"),
    ("histo_encoders.mpp", -0.5, "histo_encoders.mpp"),
    ("histo_encoders.mpp", math.nan, "histo_encoders.mpp"),
    ("histo_encoders.mpp", "0.5", "histo_encoders.mpp"),
    ("pretrained_cfg.mean", [0.5, 0.5], "pretrained_cfg.mean"),
    ("pretrained_cfg.mean", [0.5, 0.5, 128], "pretrained_cfg.mean"),
    ("pretrained_cfg.std", [0.2, 0.0, 0.2], "pretrained_cfg.std"),
    ("pretrained_cfg.std", [0.2, -0.1, 0.2], "pretrained_cfg.std"),
    ("pretrained_cfg.std", [0.2, math.inf, 0.2], "pretrained_cfg.std"),
    ("pretrained_cfg.input_size", [3, 32], "pretrained_cfg.input_size"),
    ("pretrained_cfg.input_size", [1, 32, 32], "pretrained_cfg.input_size"),
    ("pretrained_cfg.input_size", [3, 32, 16], "pretrained_cfg.input_size"),
    ("pretrained_cfg.input_size", [3, 64, 64], "histo_encoders.tile_size"),  # disagrees
    ("pretrained_cfg.crop_pct", 0, "pretrained_cfg.crop_pct"),
    ("pretrained_cfg.interpolation", "cubic-ish", "pretrained_cfg.interpolation"),
    ("architecture", "resnet_does_not_exist", "architecture"),
    ("architecture", "", "architecture"),
    ("num_features", -1, "num_features"),
    ("histo_encoders.weights_sha256", "not-a-hash", "histo_encoders.weights_sha256"),
]


def _set(document: dict, path: str, value: object) -> None:
    *parents, key = path.split(".")
    for parent in parents:
        document = document[parent]
    document[key] = value


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("good") / "tiny")


def _broken_copy(good: Path, target: Path, field: str, value: object) -> Path:
    target.mkdir()
    for file in good.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    document = json.loads((target / "config.json").read_text())
    _set(document, field, value)
    (target / "config.json").write_text(json.dumps(document))
    return target


@pytest.mark.parametrize(("field", "value", "named"), BAD_VALUES)
def test_bad_config_value_is_refused_naming_the_field_and_range(
    good_folder, tmp_path, field, value, named
) -> None:
    folder = _broken_copy(good_folder, tmp_path / "bad", field, value)
    with pytest.raises(errors.ConfigError) as caught:
        histo_encoders.load(folder)
    message = str(caught.value)
    assert named in message and "must be" in message


def test_cli_embed_with_a_bad_config_reads_no_slide(
    good_folder, tmp_path, synthetic_slides, capsys
):
    folder = _broken_copy(good_folder, tmp_path / "bad", "pretrained_cfg.std", [0.2, 0.0, 0.2])
    out = tmp_path / "out"
    args = ["embed", str(synthetic_slides.svs), "--encoder", str(folder), "--out", str(out)]
    code = main([*args, "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pretrained_cfg.std" in err and "(0, 1]" in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert not list(out.glob("*.h5")) and not (out / "summary.json").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [({"std": (0.2, 0.0, 0.2)}, "std"), ({"tile_size": 0}, "tile_size"), ({"mpp": -1.0}, "mpp")],
)
def test_registered_records_are_checked_before_any_download(change, named) -> None:
    register_encoder(TINY.with_updates(name="faults-bad-record", hub_id="faults/none", **change))
    try:
        with pytest.raises(errors.InvalidConfigValueError) as caught:
            histo_encoders.load("faults-bad-record")
        assert caught.value.field == named and "registry record" in str(caught.value)
    finally:
        unregister_encoder("faults-bad-record")
