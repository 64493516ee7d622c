"""Verifying downloaded weights: their sha256 against a pin, against the hash the hub advertised
for them, or against the hash recorded the first time that commit's file was seen (trust on
first use, kept under ``env.home()`` in a locked, atomically replaced record).

huggingface_hub does not re-hash the files it downloads, so every load hashes the weights here.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

from histo_encoders import env
from histo_encoders.atomic import FileLock, atomic_write_text
from histo_encoders.errors import ChecksumMismatchError, TrustRecordError

_KNOWN_HASHES = "known_hashes.json"
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1_PATTERN = re.compile(r"[0-9a-f]{40}")


def sha256_file(path: Path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks so a large file never sits in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, source: str, *, actual: str | None = None) -> str:
    """Hash ``path`` (unless ``actual`` is its hash already) and return the hash.

    Raises ChecksumMismatchError when it is not ``expected``.
    """
    actual = actual or sha256_file(path)
    if actual != expected.lower():
        raise ChecksumMismatchError(str(path), expected.lower(), actual, source)
    return actual


def verify_advertised(cached_file: Path, sha256: str | None = None) -> str | None:
    """Check a file downloaded into the HF cache against the hash the hub advertised for it.

    The HF cache names each blob after the ETag the hub sent: for an LFS file (weights) the
    sha256 of its content, for a small git file the git blob sha1. Returns the sha256 of the
    file when the advertised hash is a sha256 (None when there is nothing to compare, e.g. a
    cache without symlinks). Raises ChecksumMismatchError when the body differs.
    """
    blob = cached_file.resolve()
    if blob.parent.name != "blobs":
        return None
    source = f"the hub's advertised hash for {cached_file.name} (its ETag)"
    if _SHA256_PATTERN.fullmatch(blob.name):
        return verify_file(cached_file, blob.name, source, actual=sha256)
    if _GIT_SHA1_PATTERN.fullmatch(blob.name):
        data = blob.read_bytes()
        # git names a (small, non-LFS) file's blob by this sha1
        actual = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if actual != blob.name:
            raise ChecksumMismatchError(str(cached_file), blob.name, actual, source)
    return None


def verify_first_seen(path: Path, key: str, *, sha256: str | None = None) -> tuple[str, str]:
    """Check ``path`` against the hash recorded for ``key``; record it if this is the first time.

    ``key`` names the file at an immutable commit (``org/name@commit/model.safetensors``), so a
    later file under the same key must be byte-identical. The record is read, updated and
    replaced under a lock, so concurrent first loads never lose an entry. Returns
    ``(sha256, what vouched for it)``. When the record cannot be written (a read-only home) the
    file is still loaded, with a warning that nothing was recorded.

    Raises ChecksumMismatchError, or TrustRecordError for a record that cannot be read.
    """
    record = _known_hashes_path()
    actual = sha256 or sha256_file(path)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(record.with_name(record.name + ".lock"))
        lock.acquire()
    except OSError as error:
        # No writable home: check against what is recorded (if it can be read), record nothing.
        known = _read_known_hashes(record)
        if key in known:
            verify_file(
                path, known[key], f"the hash recorded at first download of {key}", actual=actual
            )
            return actual, "the hash recorded at first download"
        _warn_not_recorded(record, key, error)
        return actual, f"nothing: first download, and {record} could not be written"
    try:
        known = _read_known_hashes(record)
        if key in known:
            source = f"the hash recorded at first download of {key}"
            return verify_file(path, known[key], source, actual=actual), (
                "the hash recorded at first download"
            )
        known[key] = actual
        try:
            # Written beside and renamed: a crash never leaves a half-written record to trust.
            atomic_write_text(record, json.dumps(known, indent=1, sort_keys=True))
        except OSError as error:
            _warn_not_recorded(record, key, error)
            return actual, f"nothing: first download, and {record} could not be written"
        return actual, "the hash recorded at first download"
    finally:
        lock.release()


def _warn_not_recorded(record: Path, key: str, error: OSError) -> None:
    warnings.warn(
        f"Could not record the sha256 of {key} in {record} ({error}): the weights were loaded, "
        "but a later load cannot be checked against this one. Make HISTO_ENCODERS_HOME "
        "writable to keep the record.",
        RuntimeWarning,
        stacklevel=3,
    )


def _known_hashes_path() -> Path:
    return env.home() / _KNOWN_HASHES


def _read_known_hashes(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no record yet (or no home to hold one)
        return {}
    except OSError as error:
        raise TrustRecordError(str(path), f"it cannot be read ({error})") from error
    try:
        known = json.loads(text)
    except ValueError as error:
        raise TrustRecordError(str(path), f"it is not valid JSON ({error})") from error
    if not isinstance(known, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256_PATTERN.fullmatch(v)
        for k, v in known.items()
    ):
        raise TrustRecordError(str(path), "it is not a map of names to sha256 hex digests")
    return known
