"""Hub access: parse hub ids, download pinned files, and verify what was downloaded.

huggingface_hub does not re-hash the files it downloads, so every load hashes the weights here:
against the registry's sha256 where one is pinned, otherwise against the hash recorded the first
time that commit's file was seen (trust on first use, kept under ``env.home()``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from histo_encoders import env
from histo_encoders.atomic import atomic_write_text
from histo_encoders.errors import (
    ChecksumMismatchError,
    GatedRepoAccessError,
    WeightsUnavailableError,
)

HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_KNOWN_HASHES = "known_hashes.json"


@dataclass(frozen=True)
class HubRef:
    """A hub repository at a revision (a commit sha, branch or tag; None means ``main``)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(text: str) -> HubRef:
    """Parse ``hf-hub:org/name[@revision]``. Raises ValueError for anything else."""
    if not text.startswith(HUB_PREFIX):
        raise ValueError(f"not a hub id (expected '{HUB_PREFIX}org/name[@revision]'): {text!r}")
    repo_id, _, revision = text[len(HUB_PREFIX) :].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"hub repo id must look like 'org/name': {text!r}")
    return HubRef(repo_id, revision or None)


def download(ref: HubRef, filename: str) -> Path:
    """Return the local path of ``filename`` at ``ref``, downloading it into the HF cache.

    Raises WeightsUnavailableError when the hub cannot be reached and the cache does not hold it,
    or when the repository, revision or file does not exist; GatedRepoAccessError when the hub
    says the repository is gated and refuses this user (the token, HF_TOKEN or a saved login,
    is passed by huggingface_hub untouched).
    """
    # Imported here: huggingface_hub reads HF_ENDPOINT/HF_HUB_OFFLINE when first imported, and
    # importing histo_encoders must not freeze them.
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(ref.repo_id, filename, revision=ref.revision))
    except GatedRepoError as error:
        raise GatedRepoAccessError(ref.repo_id, ref.revision, refused_status(error)) from error
    except LocalEntryNotFoundError as error:
        why = "offline (HF_HUB_OFFLINE=1)" if env.hub_offline() else "the hub is unreachable"
        reason = f"{why} and {filename} is not in the local cache"
        raise WeightsUnavailableError(ref.repo_id, ref.revision, reason) from error
    except RevisionNotFoundError as error:
        reason = f"revision {ref.revision!r} does not exist"
        raise WeightsUnavailableError(ref.repo_id, ref.revision, reason) from error
    except RepositoryNotFoundError as error:
        reason = "the repository does not exist or needs a token (HF_TOKEN) you have not given"
        raise WeightsUnavailableError(ref.repo_id, ref.revision, reason) from error
    except EntryNotFoundError as error:
        reason = f"the repository has no file {filename!r}"
        raise WeightsUnavailableError(ref.repo_id, ref.revision, reason) from error
    except (HfHubHTTPError, OSError) as error:
        raise WeightsUnavailableError(ref.repo_id, ref.revision, str(error)) from error


def refused_status(error: BaseException) -> int | None:
    """401 or 403 when the hub refused the request behind ``error`` (it or a cause), else None.

    A 401/403 the hub does not mark as gated reaches callers as "repository not found" (401) or
    as a cache miss caused by it (403).
    """
    seen: BaseException | None = error
    while seen is not None:
        status = getattr(getattr(seen, "response", None), "status_code", None)
        if status in (401, 403):
            return int(status)
        seen = seen.__cause__ or seen.__context__
    return None


def commit_of(cached_file: Path) -> str | None:
    """The commit a file in the HF cache belongs to (``.../snapshots/<commit>/<file>``)."""
    parent = cached_file.parent
    if parent.parent.name == "snapshots" and len(parent.name) == 40:
        return parent.name
    return None


def sha256_file(path: Path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks so a large file never sits in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, source: str) -> str:
    """Hash ``path`` and return the hash. Raises ChecksumMismatchError when it is not ``expected``."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumMismatchError(str(path), expected.lower(), actual, source)
    return actual


def verify_first_seen(path: Path, key: str) -> str:
    """Check ``path`` against the hash recorded for ``key``; record it if this is the first time.

    ``key`` names the file at an immutable commit (``org/name@commit/model.safetensors``), so a
    later file under the same key must be byte-identical.
    """
    known = _read_known_hashes()
    if key in known:
        return verify_file(path, known[key], f"the hash recorded at first download of {key}")
    actual = sha256_file(path)
    known[key] = actual
    _write_known_hashes(known)
    return actual


def _known_hashes_path() -> Path:
    return env.home() / _KNOWN_HASHES


def _read_known_hashes() -> dict[str, str]:
    path = _known_hashes_path()
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_known_hashes(known: dict[str, str]) -> None:
    path = _known_hashes_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: a crash never leaves a half-written record to trust later.
    atomic_write_text(path, json.dumps(known, indent=1, sort_keys=True))
