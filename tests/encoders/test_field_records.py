"""The field's encoders (UNI, Virchow, H-optimus, GigaPath, Phikon, Lunit DINO, kaiko) through the
real hub code, against the local test hub serving a tiny same-architecture stand-in of each.

The stand-in keeps the record's timm architecture and kwargs (patch size, image size, registers,
SwiGLU layers) and pooling, with width 32 and depth 1. It is pinned by its own sha256 here; the
records keep the real pins, and a test shows the real pin refuses anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import histo_encoders
from histo_encoders import errors
from histo_encoders.encoders.load import timm_model_args
from histo_encoders.encoders.registry import get_config, register_encoder, unregister_encoder
from histo_encoders.encoders.transforms import data_config, get_transform
from histo_encoders.pipeline.inference import PreparedEncoder
from tests.encoder_kit import (
    GRANTED_TOKEN,
    seeded_state,
    seeded_tile,
    serve_standin,
    standin_config,
)
from tests.hubserver import session_hub

FAKE_HUB = session_hub()
GRANTED = GRANTED_TOKEN

# What each record's architecture must be, stated independently of the records:
# (patch size in px, prefix tokens = class token + registers).
GEOMETRY = {
    "uni": (16, 1),
    "uni2-h": (14, 9),
    "virchow": (14, 1),
    "virchow2": (14, 5),
    "h-optimus-0": (14, 5),
    "h-optimus-1": (14, 5),
    "prov-gigapath": (16, 1),
    "phikon": (16, 1),
    "lunit-dino-vits8": (8, 1),
    "kaiko-vits16": (16, 1),
    "kaiko-vits8": (8, 1),
    "kaiko-vitb16": (16, 1),
    "kaiko-vitb8": (8, 1),
}
NAMES = list(GEOMETRY)
GATED = [name for name in NAMES if get_config(name).gated]


def _serve_standin(name: str, *, commit: str | None = None) -> tuple[str, bytes]:
    commit, weights, _ = serve_standin(FAKE_HUB, get_config(name), commit=commit)
    return commit, weights


_REGISTERED: set[str] = set()


def _register(name: str, **updates: object) -> str:
    config = standin_config(get_config(name), **updates)
    register_encoder(config, overwrite=True)
    _REGISTERED.add(config.name)
    return config.name


@pytest.fixture(autouse=True)
def _unregister_standins():
    yield
    while _REGISTERED:
        unregister_encoder(_REGISTERED.pop(), missing_ok=True)


@pytest.fixture
def granted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", GRANTED)


def _reference_tokens(name: str, x: torch.Tensor) -> torch.Tensor:
    """Tokens from a stand-in built by plain timm and given the served weights."""
    config = standin_config(get_config(name))
    reference = timm.create_model(config.architecture, num_classes=0, **timm_model_args(config))
    reference.load_state_dict(seeded_state(config), strict=True)
    with torch.no_grad():
        return reference.eval().forward_features(x)


@pytest.mark.parametrize("name", NAMES)
def test_standin_loads_verified_with_the_records_pooling_normalization_and_tiles(
    name: str, granted: None
) -> None:
    record = get_config(name)
    commit, weights = _serve_standin(name)
    sha = hashlib.sha256(weights).hexdigest()
    model = histo_encoders.load(_register(name, revision=commit, sha256=sha))

    provenance = model.histo_provenance
    assert provenance.commit == commit and provenance.weights_sha256 == sha
    assert provenance.sha256_checked_against == "the registry record"
    assert Path(provenance.weights_path).name == record.weights_file

    # Tile geometry: a tile of the record's size gives (tile / patch)^2 patch tokens + prefix.
    patch, prefix = GEOMETRY[name]
    size = record.tile_size
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, size, size)).astype("f4"))
    tokens = _reference_tokens(name, x)
    assert tokens.shape[1] == (size // patch) ** 2 + prefix

    # Pooling: exactly the record's rule, computed by hand from the tokens.
    with torch.no_grad():
        embedding = model(x)
    by_hand = {
        "cls": tokens[:, 0],
        "cls+mean": torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=-1),
    }[record.pooling]
    assert embedding.shape == (2, model.num_features) == by_hand.shape
    torch.testing.assert_close(embedding, by_hand, rtol=1e-5, atol=1e-5)

    # Normalization: the record's own mean/std and tile size drive the transforms.
    cfg = data_config(model)
    assert tuple(cfg["mean"]) == record.mean and tuple(cfg["std"]) == record.std
    assert tuple(cfg["input_size"]) == (3, size, size) and cfg["crop_pct"] == 1.0
    from PIL import Image

    tile = seeded_tile(size)
    expected = (torch.from_numpy(tile).permute(2, 0, 1) / 255 - torch.tensor(record.mean)[:, None, None]) / torch.tensor(record.std)[:, None, None]  # fmt: skip
    torch.testing.assert_close(get_transform(model)(Image.fromarray(tile)), expected)


@pytest.mark.parametrize("name", GATED)
def test_gated_record_without_access_names_the_repo_and_where_to_ask(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = get_config(name)
    commit, _ = _serve_standin(name)
    standin = _register(name, revision=commit)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(errors.GatedRepoAccessError) as no_token:
        histo_encoders.load(standin)
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(errors.GatedRepoAccessError) as not_granted:
        histo_encoders.load(standin)
    assert (no_token.value.status, not_granted.value.status) == (401, 403)
    for caught in (no_token, not_granted):
        message = str(caught.value)
        assert record.hub_id in message and "gated" in message
        assert f"https://huggingface.co/{record.hub_id}" in message and "HF_TOKEN" in message
        assert isinstance(caught.value, PermissionError)


@pytest.mark.parametrize("name", [n for n in NAMES if get_config(n).pinned == "commit+sha256"])
def test_the_records_real_pin_refuses_any_other_file(name: str) -> None:
    record = get_config(name)
    _serve_standin(name, commit=record.revision)  # the stand-in, at the real pinned commit
    standin = _register(name, revision=record.revision, sha256=record.sha256)
    with pytest.raises(errors.ChecksumMismatchError) as caught:
        histo_encoders.load(standin)
    assert record.sha256 in str(caught.value) and "Nothing was loaded" in str(caught.value)


@pytest.mark.parametrize("name", [n for n in NAMES if get_config(n).pinned == "commit"])
def test_a_pinned_commit_without_a_hash_records_the_hash_at_first_download(name: str) -> None:
    record = get_config(name)
    _, weights = _serve_standin(name, commit=record.revision)
    _serve_standin(name)  # main moves on; the record still loads its commit
    model = histo_encoders.load(_register(name, revision=record.revision))
    assert model.histo_provenance.commit == record.revision
    assert model.histo_provenance.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert model.histo_provenance.sha256_checked_against == "the hash recorded at first download"


def test_an_unpinned_bin_record_is_verified_by_trust_on_first_use(granted: None) -> None:
    commit, weights = _serve_standin("uni")  # gated, pytorch_model.bin, no commit or hash
    model = histo_encoders.load(_register("uni"))
    provenance = model.histo_provenance
    assert provenance.commit == commit and provenance.revision is None
    assert provenance.sha256_checked_against == "the hash recorded at first download"
    known = json.loads((Path(os.environ["HISTO_ENCODERS_HOME"]) / "known_hashes.json").read_text())
    key = f"MahmoodLab/UNI@{commit}/pytorch_model.bin"
    assert known[key] == hashlib.sha256(weights).hexdigest()


class _RunsCode:
    def __reduce__(self):  # unpickling this would run a command
        return (os.system, ("touch pwned-by-pickle",))


def test_a_bin_file_is_hashed_then_read_without_running_pickled_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.chdir(tmp_path)
    buffer = io.BytesIO()
    torch.save({"cls_token": _RunsCode()}, buffer)
    payload = buffer.getvalue()
    commit = FAKE_HUB.add_commit("histo-test/pickled", {"pytorch_model.bin": payload})
    sha = hashlib.sha256(payload).hexdigest()
    name = _register("h-optimus-0", hub_id="histo-test/pickled", revision=commit, sha256=sha)
    with pytest.raises(errors.CorruptWeightsError, match="UnpicklingError"):
        histo_encoders.load(name)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_the_pipeline_embeds_uint8_tiles_with_a_cls_mean_encoder(granted: None) -> None:
    commit, weights = _serve_standin("virchow2")
    sha = hashlib.sha256(weights).hexdigest()
    model = histo_encoders.load(_register("virchow2", revision=commit, sha256=sha))
    prepared = PreparedEncoder(model, device=torch.device("cpu"), precision="fp32")
    tiles = torch.from_numpy(np.stack([seeded_tile(224, seed=s) for s in range(3)]))
    features = prepared(tiles)
    assert features.shape == (3, 64) == (3, prepared.spec.num_features)
    assert prepared.spec.mean == get_config("virchow2").mean
