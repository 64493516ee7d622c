"""load() against a real HTTP hub on 127.0.0.1: revisions, checksums, offline use, plain timm."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

import histo_encoders
from histo_encoders import errors
from histo_encoders.encoders.registry import register_encoder, unregister_encoder
from tests.encoder_kit import TINY, export_tiny, features, folder_files
from tests.hubserver import session_hub

FAKE_HUB = session_hub()

BATCH = torch.from_numpy(
    __import__("numpy").random.default_rng(1).normal(size=(2, 3, 32, 32)).astype("float32")
)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A hub repo with two commits of different weights; main points at the second."""
    root = tmp_path_factory.mktemp("tiny-repo")
    first = FAKE_HUB.add_commit("histo-test/tiny", folder_files(export_tiny(root / "a", seed=0)))
    second = FAKE_HUB.add_commit("histo-test/tiny", folder_files(export_tiny(root / "b", seed=1)))
    return {"first": first, "second": second, "folder_first": str(root / "a")}


@pytest.fixture()
def registered(tiny_repo: dict[str, str]):
    """Register a record pinned to the first commit, with its sha256."""
    from histo_encoders.encoders.trust import sha256_file

    sha = sha256_file(Path(tiny_repo["folder_first"]) / "model.safetensors")
    config = TINY.with_updates(
        name="tiny-pinned", hub_id="histo-test/tiny", revision=tiny_repo["first"], sha256=sha
    )
    register_encoder(config)
    yield config
    unregister_encoder("tiny-pinned")


def test_load_and_plain_timm_give_identical_features(tiny_repo: dict[str, str]) -> None:
    ours = histo_encoders.load("hf-hub:histo-test/tiny")
    plain = timm.create_model("hf-hub:histo-test/tiny", pretrained=True).eval()
    assert torch.equal(features(ours, BATCH), features(plain, BATCH))
    assert features(ours, BATCH).shape == (2, 96)
    assert ours.histo_provenance.commit == tiny_repo["second"]
    ours_cfg = timm.data.resolve_model_data_config(ours)
    plain_cfg = timm.data.resolve_model_data_config(plain)
    for key in ("mean", "std", "input_size", "crop_pct", "interpolation"):
        assert _plain(ours_cfg[key]) == _plain(plain_cfg[key]), key
    assert tuple(ours_cfg["mean"]) == TINY.mean and ours_cfg["crop_pct"] == 1.0


def _plain(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


def test_pinned_revision_loads_that_commit(tiny_repo: dict[str, str]) -> None:
    at_first = histo_encoders.load(f"hf-hub:histo-test/tiny@{tiny_repo['first']}")
    at_main = histo_encoders.load("hf-hub:histo-test/tiny")
    local = histo_encoders.load(tiny_repo["folder_first"])
    assert torch.equal(features(at_first, BATCH), features(local, BATCH))
    assert not torch.allclose(features(at_first, BATCH), features(at_main, BATCH))
    assert at_first.histo_provenance.commit == tiny_repo["first"]


def test_registry_name_loads_its_pinned_commit_not_main(registered, tiny_repo) -> None:
    model = histo_encoders.load("tiny-pinned")
    assert model.histo_provenance.commit == tiny_repo["first"]
    assert model.histo_provenance.sha256_checked_against == "the registry record"
    assert model.histo_config.name == "tiny-pinned"


def test_wrong_pinned_checksum_never_loads(registered) -> None:
    register_encoder(registered.with_updates(name="tiny-bad-sha", sha256="0" * 64))
    try:
        with pytest.raises(errors.ChecksumMismatchError) as caught:
            histo_encoders.load("tiny-bad-sha")
        assert "Nothing was loaded" in str(caught.value)
    finally:
        unregister_encoder("tiny-bad-sha")


def _tamper(model: torch.nn.Module) -> None:
    path = Path(model.histo_provenance.weights_path).resolve()  # the blob behind the symlink
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_weights_altered_after_download_are_refused(tmp_path: Path) -> None:
    commit = FAKE_HUB.add_commit("histo-test/tamper", folder_files(export_tiny(tmp_path / "t")))
    model = histo_encoders.load(f"hf-hub:histo-test/tamper@{commit}")
    _tamper(model)
    with pytest.raises(errors.ChecksumMismatchError):
        histo_encoders.load(f"hf-hub:histo-test/tamper@{commit}")


def test_first_seen_hash_is_recorded_then_enforced(tmp_path: Path) -> None:
    files = folder_files(export_tiny(tmp_path / "t"), drop_sha256=True)  # a repo that pins nothing
    commit = FAKE_HUB.add_commit("histo-test/unpinned", files)
    model = histo_encoders.load("hf-hub:histo-test/unpinned")
    assert model.histo_provenance.sha256_checked_against == "the hash recorded at first download"
    histo_encoders.load(f"hf-hub:histo-test/unpinned@{commit}")  # same file: accepted
    _tamper(model)
    with pytest.raises(errors.ChecksumMismatchError):
        histo_encoders.load("hf-hub:histo-test/unpinned")


def test_missing_repo_revision_and_file_say_what_is_wrong() -> None:
    with pytest.raises(errors.WeightsUnavailableError, match="does not exist"):
        histo_encoders.load("hf-hub:histo-test/no-such-repo")
    with pytest.raises(errors.WeightsUnavailableError, match="revision"):
        histo_encoders.load("hf-hub:histo-test/tiny@" + "f" * 40)


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(errors.UnknownEncoderError) as caught:
        histo_encoders.load("moco-camelyn")
    assert isinstance(caught.value, KeyError)
    assert "moco-camelyon" in str(caught.value)


def test_unpublished_encoder_gives_clear_error() -> None:
    with pytest.raises(errors.EncoderNotPublishedError, match="not published yet"):
        histo_encoders.load("moco-camelyon")


_SCRIPT = textwrap.dedent(
    """
    import sys, torch, histo_encoders
    from histo_encoders import errors
    try:
        model = histo_encoders.load(sys.argv[1])
    except errors.WeightsUnavailableError as error:
        print("UNAVAILABLE:", error)
        raise SystemExit(3)
    torch.manual_seed(0)
    with torch.no_grad():
        print("SUM:", float(model(torch.randn(2, 3, 32, 32)).sum()))
    """
)


def _run(name: str, **env_changes: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_changes}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, name], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.integration
def test_offline_with_warm_cache_works_with_no_server(tiny_repo: dict[str, str]) -> None:
    name = f"hf-hub:histo-test/tiny@{tiny_repo['first']}"
    model = histo_encoders.load(name)
    torch.manual_seed(0)  # after load: building the model draws from the generator
    expected = float(features(model, torch.randn(2, 3, 32, 32)).sum())
    dead = "http://127.0.0.1:9"  # nothing listens there: any request would fail
    result = _run(name, HF_HUB_OFFLINE="1", HF_ENDPOINT=dead)
    assert result.returncode == 0, result.stderr
    assert abs(float(result.stdout.split("SUM:")[1]) - expected) < 1e-4


def test_offline_with_cold_cache_says_how_to_fix(tmp_path: Path) -> None:
    result = _run("hf-hub:histo-test/tiny", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty"))
    assert result.returncode == 3, result.stderr
    assert "offline" in result.stdout and "histo-encoders fetch" in result.stdout


@pytest.mark.integration
def test_unreachable_hub_with_cold_cache_says_how_to_fix(tmp_path: Path) -> None:
    result = _run(
        "hf-hub:histo-test/tiny", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "e")
    )
    assert result.returncode == 3, result.stderr
    assert "HF_ENDPOINT" in result.stdout


def test_pushed_folder_loads_back_from_the_hub(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # the test hub accepts any token
    folder = export_tiny(tmp_path / "tiny", seed=5)
    commit = histo_encoders.push_to_hub(folder, "histo-test/pushed")
    assert ("POST", "/api/models/histo-test/pushed/commit/main") in FAKE_HUB.requests
    from_hub = histo_encoders.load(f"hf-hub:histo-test/pushed@{commit}")
    assert torch.equal(features(from_hub, BATCH), features(histo_encoders.load(folder), BATCH))
    assert from_hub.histo_provenance.sha256_checked_against.startswith("config.json")
