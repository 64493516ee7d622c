"""Classes 4, 5, 7 and the hanging hub of class 11: pins hold for every spelling of the same
weights, ids and revisions are checked before any request, the trust record survives faults,
a body that differs from the hub's advertised hash is never trusted, a hub that hangs fails fast.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from pathlib import Path

import pytest

import histo_encoders
from histo_encoders import errors
from histo_encoders.cli import main
from histo_encoders.encoders import trust
from histo_encoders.encoders.registry import register_encoder, unregister_encoder
from tests.encoder_kit import TINY, export_tiny, folder_files
from tests.hubserver import session_hub

FAKE_HUB = session_hub()
REPO = "faults/pinned"


@pytest.fixture(scope="module")
def pinned_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A repository with two commits of different weights; main and tag v1 point at them."""
    root = tmp_path_factory.mktemp("pinned")
    first = FAKE_HUB.add_commit(REPO, folder_files(export_tiny(root / "a", seed=0)))
    second = FAKE_HUB.add_commit(REPO, folder_files(export_tiny(root / "b", seed=1)))
    FAKE_HUB.repos[REPO].refs["v1"] = first
    return {
        "first": first,
        "second": second,
        "sha_first": trust.sha256_file(root / "a" / "model.safetensors"),
        "sha_second": trust.sha256_file(root / "b" / "model.safetensors"),
    }


@pytest.fixture()
def record(pinned_repo: dict[str, str]):
    """A registered encoder pinned to the first commit and its sha256, with an alias."""
    config = TINY.with_updates(
        name="faults-pinned",
        aliases=("faults_pinned",),
        hub_id=REPO,
        revision=pinned_repo["first"],
        sha256=pinned_repo["sha_first"],
    )
    register_encoder(config)
    yield config
    unregister_encoder("faults-pinned")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HISTO_ENCODERS_HOME (the trust record lives there)."""
    folder = tmp_path / "home"
    monkeypatch.setenv("HISTO_ENCODERS_HOME", str(folder))
    return folder


def _record_file(home: Path) -> dict[str, str]:
    path = home / "known_hashes.json"
    return json.loads(path.read_text()) if path.exists() else {}


# --- class 4: the registry's pin holds for every way of naming the same weights -------------


@pytest.mark.parametrize(
    "spelling",
    ["faults-pinned", "faults_pinned", "hf-hub:faults/pinned", "hf-hub:FAULTS/Pinned@v1"],
)
def test_every_spelling_of_the_pinned_weights_is_checked_against_the_pin(
    record, pinned_repo, spelling, home
) -> None:
    model = histo_encoders.load(spelling)
    assert model.histo_provenance.commit == pinned_repo["first"]
    assert model.histo_provenance.weights_sha256 == pinned_repo["sha_first"]
    assert model.histo_provenance.sha256_checked_against == "the registry record"
    assert model.histo_config.name == "faults-pinned"
    assert _record_file(home) == {}  # pinned weights need no trust on first use


def test_the_pinned_commit_by_hub_id_is_held_to_the_registry_hash(pinned_repo, home) -> None:
    # The registry pins commit `first` with the hash of OTHER weights: whatever config.json of
    # that commit says, the plain hub id of the repository at that commit must be refused.
    register_encoder(
        TINY.with_updates(
            name="faults-badpin",
            hub_id=REPO,
            revision=pinned_repo["first"],
            sha256=pinned_repo["sha_second"],
        )
    )
    try:
        with pytest.raises(errors.ChecksumMismatchError, match="registry record"):
            histo_encoders.load(f"hf-hub:{REPO}@{pinned_repo['first']}")
    finally:
        unregister_encoder("faults-badpin")
    assert _record_file(home) == {}  # nothing was recorded as trusted


@pytest.mark.parametrize("how", ["revision=main", "hub id at main", "hub id at its commit"])
def test_a_revision_that_leaves_the_pinned_commit_needs_an_opt_in(
    record, pinned_repo, how, home
) -> None:
    before = len(FAKE_HUB.requests)
    with pytest.raises(errors.UnpinnedRevisionError, match="allow_unpinned"):
        if how == "revision=main":
            histo_encoders.load("faults-pinned", revision="main")
        elif how == "hub id at main":
            histo_encoders.load(f"hf-hub:{REPO}@main")
        else:
            histo_encoders.load(f"hf-hub:{REPO}@{pinned_repo['second']}")
    downloads = [r for r in FAKE_HUB.requests[before:] if r[0] == "GET"]
    assert not any(path.endswith("model.safetensors") for _, path in downloads)


def test_the_opt_in_loads_other_weights_under_trust_on_first_use(record, pinned_repo, home):
    model = histo_encoders.load("faults-pinned", revision="main", allow_unpinned=True)
    assert model.histo_provenance.commit == pinned_repo["second"]
    assert model.histo_provenance.sha256_checked_against == "the hash recorded at first download"
    key = f"{REPO}@{pinned_repo['second']}/model.safetensors"
    assert _record_file(home) == {key: pinned_repo["sha_second"]}


def test_cli_fetch_of_main_is_refused_in_one_line_and_allowed_with_the_flag(
    record, home, capsys
) -> None:
    assert main(["fetch", "faults-pinned", "--revision", "main"]) == 2
    err = capsys.readouterr().err
    assert "--allow-unpinned" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["fetch", "faults-pinned", "--revision", "main", "--allow-unpinned"]) == 0


# --- class 5: ids and revisions checked against the hub's grammar before any request ---------


@pytest.mark.parametrize(
    ("name", "revision"),
    [
        ("hf-hub:../../etc", None),
        ("hf-hub:faults/pinned@../../../outside", None),
        ("hf-hub:faults/pinned@main..x", None),
        ("hf-hub:faults//pinned", None),
        ("hf-hub:faults/pinned@", None),
        ("hf-hub:faults/pin ned", None),
        ("hf-hub:faults/pinned.git", None),
        ("hf-hub:faults/-pinned", None),
        ("faults-pinned", "../../outside"),
        ("faults-pinned", "refs/heads/../../x"),
        ("faults-pinned", "a\nb"),
        ("hf-hub:faults/pinned", ".hidden"),
    ],
)
def test_bad_ids_and_revisions_are_refused_before_any_request(record, name, revision) -> None:
    before = len(FAKE_HUB.requests)
    with pytest.raises(errors.InvalidHubReferenceError) as caught:
        histo_encoders.load(name, revision=revision)
    assert isinstance(caught.value, ValueError)
    assert len(FAKE_HUB.requests) == before


def test_bad_hub_id_on_the_command_line_is_one_line(capsys, tmp_path: Path) -> None:
    assert main(["fetch", "hf-hub:../../etc"]) == 2
    err = capsys.readouterr().err
    assert "Invalid hub reference" in err and "Traceback" not in err
    assert not (tmp_path.parent / "etc").exists()


# --- class 7: the trust record ----------------------------------------------------------------


@pytest.fixture(scope="module")
def unpinned_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A repository nothing pins (no registry record, no hash in its config.json)."""
    root = tmp_path_factory.mktemp("unpinned")
    files = folder_files(export_tiny(root / "t", seed=3), drop_sha256=True)
    return FAKE_HUB.add_commit("faults/unpinned", files)


def test_corrupt_trust_record_is_a_typed_error_naming_the_file(unpinned_repo, home, capsys):
    home.mkdir()
    (home / "known_hashes.json").write_text("{not json")
    with pytest.raises(errors.TrustRecordError) as caught:
        histo_encoders.load("hf-hub:faults/unpinned")
    assert str(home / "known_hashes.json") in str(caught.value) and "delete it" in str(caught.value)
    assert main(["fetch", "hf-hub:faults/unpinned"]) == 2
    err = capsys.readouterr().err
    assert "known_hashes.json" in err and "Traceback" not in err


def test_unwritable_home_still_loads_pinned_weights_and_says_it_could_not_record(
    record, unpinned_repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where HISTO_ENCODERS_HOME's parent should be")
    monkeypatch.setenv("HISTO_ENCODERS_HOME", str(blocker / "home"))  # cannot be created
    pinned = histo_encoders.load("faults-pinned")  # verified against the pin, nothing to record
    assert pinned.histo_provenance.sha256_checked_against == "the registry record"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unpinned = histo_encoders.load("hf-hub:faults/unpinned")
    assert any("Could not record" in str(w.message) for w in caught)
    assert unpinned.histo_provenance.sha256_checked_against.startswith("nothing")


def test_concurrent_first_loads_lose_no_entry(tmp_path: Path, home) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    keys = [f"org/repo{i}@{'0' * 40}/model.safetensors" for i in range(48)]
    failures: list[BaseException] = []

    def record(chunk: list[str]) -> None:
        try:
            for key in chunk:
                trust.verify_first_seen(weights, key)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=record, args=(keys[i::6],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(_record_file(home)) == sorted(keys)
    assert not [p for p in home.iterdir() if p.name.endswith(".partial")]


def test_body_differing_from_the_advertised_lfs_hash_is_never_trusted(tmp_path: Path, home):
    files = folder_files(export_tiny(tmp_path / "t", seed=4), drop_sha256=True)
    commit = FAKE_HUB.add_commit("faults/corrupt-body", files)
    FAKE_HUB.corrupt_body("faults/corrupt-body", "model.safetensors")
    with pytest.raises(errors.ChecksumMismatchError, match="advertised"):
        histo_encoders.load(f"hf-hub:faults/corrupt-body@{commit}")
    assert _record_file(home) == {}


# --- class 11 (hub): a hub that hangs fails the load in seconds, with a clear error ----------


def test_hanging_hub_fails_fast_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    files = folder_files(export_tiny(tmp_path / "t", seed=5))
    FAKE_HUB.add_commit("faults/hanging", files)
    FAKE_HUB.hang("faults/hanging", 4.0)
    monkeypatch.setenv("HISTO_ENCODERS_HUB_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("HISTO_ENCODERS_HUB_READ_TIMEOUT", "0.5")
    started = time.perf_counter()
    with pytest.raises(errors.HubTimeoutError, match=r"did not answer within 0\.5 s"):
        histo_encoders.load("hf-hub:faults/hanging")
    assert time.perf_counter() - started < 3.0
    assert main(["fetch", "hf-hub:faults/hanging"]) == 2
    err = capsys.readouterr().err
    assert "HISTO_ENCODERS_HUB_READ_TIMEOUT" in err and "Traceback" not in err


def test_bad_timeout_setting_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTO_ENCODERS_HUB_READ_TIMEOUT", "-1")
    with pytest.raises(errors.ConfigError, match="HISTO_ENCODERS_HUB_READ_TIMEOUT"):
        histo_encoders.load("hf-hub:faults/never-asked")
