"""Hub access: parse and validate hub ids, resolve revisions, download files, verify them.

What was downloaded is verified by :mod:`.trust`: against the sha256 the hub advertised for it
(an LFS file's ETag, which the HF cache uses as the blob's name), then against the registry's pin
or the hash recorded the first time that commit's file was seen.

Ids and revisions are checked against the hub's grammar before any request, and every request
that may go to the network is preceded by one bounded request (``env.hub_timeouts``): a hub that
hangs fails the load in seconds with :class:`~histo_encoders.errors.HubTimeoutError` instead of
huggingface_hub's retries of a minute each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histo_encoders import env
from histo_encoders.errors import (
    ConfigError,
    GatedRepoAccessError,
    HubTimeoutError,
    InvalidHubReferenceError,
    WeightsUnavailableError,
)

HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
# The hub's repository names (huggingface_hub.utils.validate_repo_id): letters, digits, '-', '_'
# and '.', at most 96 characters, not starting or ending with '-' or '.'.
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
# Git ref names (git-check-ref-format(1)) as the hub accepts them: printable ASCII without
# space, ~ ^ : ? * [ \\ or control characters.
_REVISION_PATTERN = re.compile(r"[!-~]+")
_REVISION_FORBIDDEN = frozenset("~^:?*[\\")
_MAX_REVISION_LENGTH = 255


@dataclass(frozen=True)
class HubRef:
    """A hub repository at a revision (a commit sha, branch or tag; None means ``main``).

    Both are checked against the hub's grammar when the reference is made: a repo id like
    ``../../etc`` or a revision with ``..`` raises InvalidHubReferenceError (a ValueError), so no
    request or cache path is ever built from one.
    """

    repo_id: str
    revision: str | None = None

    def __post_init__(self) -> None:
        reason = repo_id_problem(self.repo_id)
        if reason is None and self.revision is not None:
            reason = revision_problem(self.revision)
        if reason is not None:
            raise InvalidHubReferenceError(str(self), reason)

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    @property
    def is_commit(self) -> bool:
        """Whether the revision is a full commit sha (immutable: no request resolves it)."""
        return self.revision is not None and COMMIT_PATTERN.fullmatch(self.revision) is not None

    def at(self, commit: str) -> HubRef:
        """The same repository at ``commit``."""
        return HubRef(self.repo_id, commit)


def repo_id_problem(repo_id: object) -> str | None:
    """Why ``repo_id`` is not a hub repository id 'org/name', or None when it is one."""
    if not isinstance(repo_id, str):
        return f"a repo id is text, not {type(repo_id).__name__}"
    parts = repo_id.split("/")
    if len(parts) != 2:
        return "a repo id is 'org/name' (exactly one '/')"
    for part in parts:
        if not _NAME_PATTERN.fullmatch(part):
            return (
                f"{part!r} is not a hub name (letters, digits, '-', '_', '.'; 1 to 96 "
                "characters; not starting or ending with '-' or '.')"
            )
        if "--" in part or ".." in part:
            return f"{part!r} contains '--' or '..', which the hub does not allow"
    if repo_id.endswith(".git"):
        return "a repo id cannot end with '.git'"
    return None


def revision_problem(revision: object) -> str | None:
    """Why ``revision`` is not a valid hub revision (git ref name or commit), or None."""
    if not isinstance(revision, str):
        return f"a revision is text, not {type(revision).__name__}"
    if not revision or len(revision) > _MAX_REVISION_LENGTH:
        return f"a revision has 1 to {_MAX_REVISION_LENGTH} characters"
    if not _REVISION_PATTERN.fullmatch(revision) or _REVISION_FORBIDDEN & set(revision):
        return "a revision may not contain spaces, control characters or any of ~ ^ : ? * [ \\"
    if ".." in revision or "@{" in revision or "//" in revision or revision == "@":
        return "a revision may not contain '..', '@{' or '//', nor be '@'"
    components = revision.split("/")
    if revision.startswith("/") or revision.endswith(("/", ".")):
        return "a revision may not start with '/' or end with '/' or '.'"
    if any(c.startswith(".") or c.endswith(".lock") for c in components):
        return "no part of a revision may start with '.' or end with '.lock'"
    return None


def parse_hub_id(text: str) -> HubRef:
    """Parse ``hf-hub:org/name[@revision]``.

    Raises InvalidHubReferenceError (a ValueError) for anything else, before any request.
    """
    if not text.startswith(HUB_PREFIX):
        raise InvalidHubReferenceError(text, f"a hub id starts with {HUB_PREFIX!r}")
    repo_id, at, revision = text[len(HUB_PREFIX) :].partition("@")
    if at and not revision:
        raise InvalidHubReferenceError(text, "'@' must be followed by a revision")
    return HubRef(repo_id, revision or None)


def same_repo(a: str, b: str) -> bool:
    """Whether two repo ids name the same repository (the hub ignores case)."""
    return a.casefold() == b.casefold()


# --- resolving and downloading ------------------------------------------------------------


def resolve_commit(ref: HubRef) -> str:
    """The commit ``ref``'s revision is now (a full sha stays as it is, with no request).

    A branch or tag is resolved by fetching the repository's config.json at it (or, for a
    repository without one, by asking for the weights file's metadata), so that the cache
    remembers the branch for offline use. Raises WeightsUnavailableError / HubTimeoutError.
    """
    if ref.is_commit:
        return ref.revision  # type: ignore[return-value]
    try:
        path = download(ref, CONFIG_NAME)
    except WeightsUnavailableError as error:
        if not getattr(error, "missing_file", False):
            raise
        try:
            return _metadata(ref, WEIGHTS_NAME)["commit"]
        except _Unreachable as unreachable:
            raise unreachable.typed from unreachable.__cause__
    commit = commit_of(path)
    if commit is None:
        raise WeightsUnavailableError(ref.repo_id, ref.revision, "the hub sent no commit sha")
    return commit


def download(ref: HubRef, filename: str) -> Path:
    """Return the local path of ``filename`` at ``ref``, downloading it into the HF cache.

    A file already cached at a commit is used without any request. Otherwise one bounded
    request checks that the hub answers before huggingface_hub downloads. Raises
    WeightsUnavailableError (HubTimeoutError for a hub that does not answer in time) when the
    hub cannot be reached and the cache does not hold the file, or when the repository,
    revision or file does not exist; GatedRepoAccessError when the hub says the repository is
    gated and refuses this user (the token, HF_TOKEN or a saved login, is passed by
    huggingface_hub untouched).
    """
    cached = _cached(ref, filename) if ref.is_commit else None
    if cached is not None:
        return cached
    if not env.hub_offline():
        try:
            _metadata(ref, filename)
        except _Unreachable as error:
            # As huggingface_hub does: an unreachable hub falls back to what the cache holds.
            fallback = _cached(ref, filename)
            if fallback is not None:
                return fallback
            raise error.typed from error.__cause__
    return _hf_download(ref, filename)


def commit_of(cached_file: Path) -> str | None:
    """The commit a file in the HF cache belongs to (``.../snapshots/<commit>/<file>``)."""
    parent = cached_file.parent
    if parent.parent.name == "snapshots" and COMMIT_PATTERN.fullmatch(parent.name):
        return parent.name
    return None


class _Unreachable(Exception):
    """The hub did not answer: carries the typed error to raise if the cache cannot help."""

    def __init__(self, typed: WeightsUnavailableError) -> None:
        self.typed = typed
        super().__init__(str(typed))


def _timeouts() -> tuple[float, float, float, float]:
    try:
        timeouts = env.hub_timeouts()
    except ValueError as error:
        raise ConfigError(str(error)) from error
    # httpx's (connect, read, write, pool): what huggingface_hub >= 1.0 passes to its client.
    return (timeouts.connect, timeouts.read, timeouts.read, timeouts.connect)


def _metadata(ref: HubRef, filename: str) -> dict[str, Any]:
    """One HEAD request for ``filename`` at ``ref``, bounded by the hub timeouts.

    Returns ``{"commit", "etag", "size"}``. Raises _Unreachable for a hub that does not answer,
    WeightsUnavailableError for an answer that says the file is not there.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    httpx = _http_client_module()
    timeout = _timeouts()
    url = hf_hub_url(ref.repo_id, filename, revision=ref.revision)
    try:
        meta = get_hf_file_metadata(url, timeout=timeout)  # type: ignore[arg-type]
    except httpx.TimeoutException as error:
        why = (
            f"the hub at {_endpoint()} did not answer within {timeout[1]:g} s (connect "
            f"{timeout[0]:g} s); set {env.HUB_READ_TIMEOUT_VARIABLE} / "
            f"{env.HUB_CONNECT_TIMEOUT_VARIABLE} to wait longer"
        )
        raise _Unreachable(HubTimeoutError(ref.repo_id, ref.revision, why)) from error
    except httpx.TransportError as error:
        why = f"the hub at {_endpoint()} is unreachable ({type(error).__name__}: {error})"
        raise _Unreachable(WeightsUnavailableError(ref.repo_id, ref.revision, why)) from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", 0) or 0
        if status < 500:
            raise _typed_download_error(ref, filename, error) from error
        why = f"the hub at {_endpoint()} answered HTTP {status}"
        raise _Unreachable(WeightsUnavailableError(ref.repo_id, ref.revision, why)) from error
    except Exception as error:
        raise _typed_download_error(ref, filename, error) from error
    if not meta.commit_hash:
        raise WeightsUnavailableError(ref.repo_id, ref.revision, "the hub sent no commit sha")
    return {"commit": meta.commit_hash, "etag": meta.etag, "size": meta.size}


def _hf_download(ref: HubRef, filename: str) -> Path:
    # Imported here: huggingface_hub reads HF_ENDPOINT/HF_HUB_OFFLINE when first imported, and
    # importing histo_encoders must not freeze them.
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            ref.repo_id, filename, revision=ref.revision, etag_timeout=_timeouts()
        )
    except Exception as error:
        raise _typed_download_error(ref, filename, error) from error
    return Path(path)


def _cached(ref: HubRef, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, filename, revision=ref.revision)
    return Path(found) if isinstance(found, str) else None


def _http_client_module() -> Any:
    """The httpx module huggingface_hub's client raises from (httpx2 from huggingface_hub 2)."""
    try:
        from huggingface_hub.utils import httpx  # huggingface_hub >= 1.30
    except ImportError:
        import httpx
    return httpx


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _typed_download_error(ref: HubRef, filename: str, error: Exception) -> Exception:
    """huggingface_hub's (and the network's) errors as the typed errors of this package."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    httpx = _http_client_module()
    if isinstance(error, GatedRepoError):
        return GatedRepoAccessError(ref.repo_id, ref.revision, refused_status(error))
    if isinstance(error, LocalEntryNotFoundError):
        why = "offline (HF_HUB_OFFLINE=1)" if env.hub_offline() else "the hub is unreachable"
        reason = f"{why} and {filename} is not in the local cache"
    elif isinstance(error, RevisionNotFoundError):
        reason = f"revision {ref.revision!r} does not exist"
    elif isinstance(error, RepositoryNotFoundError):
        reason = "the repository does not exist or needs a token (HF_TOKEN) you have not given"
    elif isinstance(error, EntryNotFoundError):
        typed = WeightsUnavailableError(
            ref.repo_id, ref.revision, f"the repository has no file {filename!r}"
        )
        typed.missing_file = True  # type: ignore[attr-defined]
        return typed
    elif isinstance(error, httpx.TimeoutException):
        return HubTimeoutError(ref.repo_id, ref.revision, f"the hub stopped answering: {error}")
    elif isinstance(error, HfHubHTTPError | OSError | httpx.HTTPError):
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    else:
        return error  # a bug, not the hub's answer: let it surface as it is
    return WeightsUnavailableError(ref.repo_id, ref.revision, reason)


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
