"""Gated hub repositories: the user's token reaches the hub untouched, and a refusal (401/403) is
a typed error naming the repo and where access is requested. Against the local test hub, which
answers for a gated repo the way the hub does (X-Error-Code: GatedRepo)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import histo_encoders
from histo_encoders import errors
from histo_encoders.encoders.registry import register_encoder, unregister_encoder
from tests.encoder_kit import TINY, export_tiny, folder_files
from tests.hubserver import session_hub

FAKE_HUB = session_hub()
GRANTED = "hf_granted_token"


@pytest.fixture
def gated_record(tmp_path: Path, request: pytest.FixtureRequest):
    """A gated repo holding the tiny encoder, and a record pinned to it (gated=True)."""
    repo = f"histo-test/gated-{request.node.name.split('[')[0][-20:]}"
    files = folder_files(export_tiny(tmp_path / "tiny"))
    commit = FAKE_HUB.add_commit(repo, files)
    FAKE_HUB.gate(repo, (GRANTED,))
    sha = hashlib.sha256(files["model.safetensors"]).hexdigest()
    config = TINY.with_updates(
        name="tiny-gated", hub_id=repo, revision=commit, sha256=sha, gated=True
    )
    register_encoder(config, overwrite=True)
    yield config
    unregister_encoder(config.name)


def test_no_token_then_an_ungranted_token_are_refused_with_where_to_ask(
    gated_record, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(errors.GatedRepoAccessError) as no_token:
        histo_encoders.load("tiny-gated")
    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(errors.GatedRepoAccessError) as not_granted:
        histo_encoders.load("tiny-gated")
    assert (no_token.value.status, not_granted.value.status) == (401, 403)
    for caught in (no_token, not_granted):
        error = caught.value
        assert isinstance(error, PermissionError) and error.repo_id == gated_record.hub_id
        assert f"https://huggingface.co/{gated_record.hub_id}" in str(error)
        assert "gated" in str(error) and "HF_TOKEN" in str(error)
        assert "GatedRepo" in type(error.__cause__).__name__  # raised from huggingface_hub's


def test_hf_token_is_passed_through(gated_record, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    model = histo_encoders.load("tiny-gated")
    assert model.histo_provenance.commit == gated_record.revision
    assert model.histo_provenance.sha256_checked_against == "the registry record"


def test_a_saved_login_is_passed_through(gated_record, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    token_file = Path(constants.HF_TOKEN_PATH)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(GRANTED)  # what `hf auth login` leaves behind
    try:
        model = histo_encoders.load("tiny-gated")
    finally:
        token_file.unlink()
    assert model.histo_provenance.commit == gated_record.revision


def test_an_ungated_repo_needs_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    commit = FAKE_HUB.add_commit("histo-test/open", folder_files(export_tiny(tmp_path / "t")))
    assert histo_encoders.load(f"hf-hub:histo-test/open@{commit}").histo_provenance.commit == commit


@pytest.mark.parametrize("gated", [True, False])
def test_a_bare_401_or_403_is_named_gated_only_when_the_record_says_so(
    gated: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hub or mirror answering 401/403 without the hub's X-Error-Code: GatedRepo.
    repo = f"histo-test/bare-refusal-{gated}"
    commit = FAKE_HUB.add_commit(repo, folder_files(export_tiny(tmp_path / "t")))
    FAKE_HUB.gate(repo, (GRANTED,), error_code=None)
    config = TINY.with_updates(name="tiny-bare", hub_id=repo, revision=commit, gated=gated)
    register_encoder(config, overwrite=True)
    expected = errors.GatedRepoAccessError if gated else errors.WeightsUnavailableError
    try:
        for token, status in ((None, 401), ("hf_not_granted", 403)):
            if token:
                monkeypatch.setenv("HF_TOKEN", token)
            else:
                monkeypatch.delenv("HF_TOKEN", raising=False)
            with pytest.raises(expected) as caught:
                histo_encoders.load("tiny-bare")
            if gated:
                assert caught.value.status == status
    finally:
        unregister_encoder("tiny-bare")
