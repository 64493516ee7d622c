"""`training.reproduce --encoders ...` with the field's encoders: any registered name takes part,
and every encoder is fetched and verified before a single slide is embedded."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from histo_encoders import errors
from histo_encoders.encoders import get_config, is_registered, register_encoder, unregister_encoder
from histo_encoders.pipeline import EmbedOptions
from histo_encoders.tools.synthetic import write_synthetic_slide
from tests.encoder_kit import GRANTED_TOKEN, serve_standin
from tests.hubserver import session_hub
from tests.training.test_reproduce import _config, _tiny_encoder, _write_inputs
from training.reproduce import parse_config, run

FAKE_HUB = session_hub()


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch):
    """Stand-ins of Virchow2 (gated, class token + patch mean) and kaiko ViT-S/16, registered
    pinned to their own hashes; the user holds a token for the gated one."""
    names = []
    for record in (get_config("virchow2"), get_config("kaiko-vits16")):
        commit, weights, config = serve_standin(FAKE_HUB, record)
        sha = hashlib.sha256(weights).hexdigest()
        register_encoder(config.with_updates(revision=commit, sha256=sha), overwrite=True)
        names.append(config.name)
    monkeypatch.setenv("HF_TOKEN", GRANTED_TOKEN)
    yield names
    for name in names:
        unregister_encoder(name)


def test_the_field_s_names_are_accepted_on_the_command_line() -> None:
    names = ["imagenet", "lunit-mocov2", "uni2-h", "virchow2", "h-optimus-0", "kaiko-vitb8"]
    config = parse_config(["--slides", "s", "--labels", "l.csv", "--encoders", *names])
    assert config.encoders == tuple(names) and all(map(is_registered, names))
    assert config.embed.mpp is None and config.embed.tile_size is None  # each encoder's own


def _write_slides_for_224_px_tiles(root: Path) -> tuple[Path, Path]:
    """Eight slides of 1024 px at 0.25 um/px, tissue everywhere: 2 x 2 tiles of 224 px at 0.5."""
    slides, labels = _write_inputs(root)
    for path in slides.glob("*.svs"):
        write_synthetic_slide(
            path, width=1024, height=1024, tile=256, downsamples=(1, 4),
            tissue_boxes=((0, 0, 1024, 1024),), seed=int(path.stem[1:]),
        )  # fmt: skip
    return slides, labels


def test_the_comparison_runs_across_field_encoders_at_their_own_tiles(tmp_path, standins):
    torch.set_num_threads(1)
    slides, labels = _write_slides_for_224_px_tiles(tmp_path)
    config = _config(slides, labels, tmp_path / "out")
    embed = EmbedOptions(workers=0, device="cpu", batch_size=16)  # mpp, tile size: the records'
    changes = {"encoders": tuple(standins), "embed": embed, "models": ("abmil",)}
    paths = run(replace(config, heatmaps=False, **changes))
    table = paths["markdown"].read_text()
    assert f"| {standins[0]} | {standins[1]} |" in table
    assert set(json.loads(paths["json"].read_text())["encoders"]) == set(standins)
    import h5py

    for name, width in zip(standins, (64, 32), strict=True):
        first = sorted((tmp_path / "out" / "features" / name).glob("*.h5"))[0]
        with h5py.File(first) as handle:
            assert handle["features"].shape[0] > 0 and handle["features"].shape[1] == width
            assert handle.attrs["encoder"] == name


@pytest.mark.parametrize("problem", ["unknown", "gated"])
def test_an_unusable_encoder_stops_the_run_before_any_slide_is_embedded(
    tmp_path: Path, problem: str, standins, monkeypatch: pytest.MonkeyPatch
) -> None:
    slides, labels = _write_inputs(tmp_path)
    config = _config(slides, labels, tmp_path / "out")
    if problem == "unknown":
        bad, expected = "virchow3", errors.UnknownEncoderError
    else:
        bad, expected = standins[0], errors.GatedRepoAccessError
        # A fresh commit of the gated repo, not in the cache, and no token.
        commit, _, stand_in = serve_standin(FAKE_HUB, get_config("virchow2"))
        register_encoder(stand_in.with_updates(revision=commit), overwrite=True)
        monkeypatch.delenv("HF_TOKEN")
    encoders = ("tiny-a", bad)
    with pytest.raises(expected):
        run(replace(config, encoders=encoders), models={"tiny-a": _tiny_encoder(0)})
    assert not (tmp_path / "out" / "features").exists()
