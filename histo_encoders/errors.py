"""Every error histo-encoders raises on purpose.

Each subclasses the built-in a caller would already catch (a missing file is a FileNotFoundError,
a bad name a KeyError), carries the fields needed to act on it, and its message says what to do.
They are raised ``from`` their cause so the original traceback survives.
"""

from __future__ import annotations

from collections.abc import Sequence


class HistoEncodersError(Exception):
    """Base class: ``except HistoEncodersError`` catches everything raised here on purpose."""


# --- encoders: registry, hub, weights -------------------------------------------------------


class UnknownEncoderError(HistoEncodersError, KeyError):
    """A name that is neither a registered encoder, an alias, a hub id nor a local path."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        hint = (
            f" Did you mean {', '.join(map(repr, self.suggestions))}?" if self.suggestions else ""
        )
        super().__init__(
            f"Unknown encoder {name!r}.{hint} `histo-encoders list` shows every registered name; "
            "a hub id is written 'hf-hub:org/name[@revision]' and a local folder or file by its path."
        )

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class EncoderNotPublishedError(HistoEncodersError, LookupError):
    """The encoder is registered but its weights have not been released yet."""

    def __init__(self, name: str, how_to_get: str) -> None:
        self.name = name
        super().__init__(
            f"The weights of encoder {name!r} are not published yet, so there is nothing to load. "
            f"{how_to_get}"
        )


class WeightsUnavailableError(HistoEncodersError, ConnectionError):
    """The weights could not be fetched: offline, unreachable hub, or not in the local cache."""

    def __init__(self, repo_id: str, revision: str | None, reason: str) -> None:
        self.repo_id = repo_id
        self.revision = revision
        at = f"@{revision}" if revision else ""
        super().__init__(
            f"Could not get the weights of hf-hub:{repo_id}{at}: {reason}. "
            "To fix: run once with network access to fill the cache (`histo-encoders fetch NAME`), "
            "point HF_ENDPOINT at a reachable hub mirror, or pass a local folder or weights file to "
            "load(). With HF_HUB_OFFLINE=1 only the local cache is used."
        )


class GatedRepoAccessError(HistoEncodersError, PermissionError):
    """The weights live in a gated hub repository and the hub refused this user (401 or 403)."""

    def __init__(self, repo_id: str, revision: str | None, status: int | None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.status = status
        self.access_url = f"https://huggingface.co/{repo_id}"
        if status == 401:
            why = "no token was sent, or the hub did not accept it"
        elif status == 403:
            why = "the token sent has not been granted access (yet)"
        else:
            why = "the hub refused access"
        super().__init__(
            f"hf-hub:{repo_id} is gated: its authors grant access on request, and {why} "
            f"(HTTP {status}). Request access at {self.access_url} (logged in, accepting the "
            "authors' terms), then give your token: set HF_TOKEN, or run `hf auth login` once. "
            "histo-encoders passes it to the hub untouched."
        )


class HubTimeoutError(WeightsUnavailableError, TimeoutError):
    """The hub accepted no connection or sent no answer within the configured timeouts."""


class ChecksumMismatchError(HistoEncodersError, ValueError):
    """The weights file does not hash to the expected sha256: nothing was loaded."""

    def __init__(self, path: str, expected: str, actual: str, source: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 of {path} is {actual}, but {source} says {expected}. Nothing was loaded. "
            "The file was altered or corrupted after download: delete it from the Hugging Face cache "
            "(`hf cache delete`, or remove the file) and load again."
        )


class CorruptWeightsError(HistoEncodersError, ValueError):
    """The weights file cannot be parsed (truncated download, wrong format)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"Cannot read weights from {path}: {reason}. The file is truncated, not a safetensors "
            "file, or a pytorch_model.bin holding more than tensors (it is read with "
            "weights_only=True, so no pickled code runs): delete it and download again, or "
            "convert the checkpoint with `histo-encoders convert`."
        )


class WeightsMismatchError(HistoEncodersError, ValueError):
    """The weights' keys or shapes do not fit the architecture: loading strictly refused them."""

    def __init__(
        self,
        architecture: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        shape_errors: Sequence[str] = (),
    ) -> None:
        self.architecture = architecture
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.shape_errors = tuple(shape_errors)
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {list(self.missing[:3])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {list(self.unexpected[:3])})")
        if self.shape_errors:
            parts.append(f"shape mismatches: {list(self.shape_errors[:3])}")
        super().__init__(
            f"The weights do not fit architecture {architecture!r}: {'; '.join(parts)}. "
            "Check the architecture in config.json, or convert the checkpoint with "
            "`histo-encoders convert` (it strips known prefixes such as 'module.encoder_q.')."
        )


class ConfigError(HistoEncodersError, ValueError):
    """An encoder folder or config.json is missing fields or has invalid values."""


class InvalidConfigValueError(ConfigError):
    """One field of an encoder's configuration holds a value outside what it may be.

    ``field`` is the field's name as written in config.json (e.g. ``pretrained_cfg.std``),
    ``allowed`` the range or set it must be in, ``source`` where the value was read.
    """

    def __init__(self, source: str, field: str, value: object, allowed: str) -> None:
        self.source = source
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(
            f"{source}: {field} is {value!r}, but it must be {allowed}. Nothing was loaded: fix "
            "the value (or re-export the encoder with `histo-encoders publish`/`convert`)."
        )


class InvalidHubReferenceError(HistoEncodersError, ValueError):
    """A hub id or revision that the hub's grammar does not allow: refused before any request."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(
            f"Invalid hub reference {text!r}: {reason}. A hub id is written "
            "'hf-hub:org/name[@revision]' (letters, digits, '-', '_' and '.'); a revision is a "
            "branch, tag or commit sha."
        )


class UnpinnedRevisionError(HistoEncodersError, ValueError):
    """A revision of a registered encoder resolves to a commit other than the pinned one."""

    def __init__(self, name: str, revision: str, commit: str, pinned: str) -> None:
        self.name = name
        self.revision = revision
        self.commit = commit
        self.pinned = pinned
        super().__init__(
            f"Revision {revision!r} of encoder {name!r} is commit {commit}, but the registry pins "
            f"commit {pinned} (with its sha256). Leave the revision out to load the pinned "
            "weights, or opt in to other weights with allow_unpinned=True (command line: "
            "--allow-unpinned); they are then checked against the hash recorded the first time "
            "that commit is loaded."
        )


class TrustRecordError(HistoEncodersError, ValueError):
    """The record of first-seen weight hashes cannot be read: nothing is trusted from it."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"The record of first-seen weight hashes {path} cannot be used: {reason}. Restore it "
            "from a backup, or delete it to start a new record (unpinned weights are then "
            "trusted again on their next first load). HISTO_ENCODERS_HOME moves it elsewhere."
        )


class MissingWeightsError(HistoEncodersError, FileNotFoundError):
    """A local encoder folder or config.json has no weights file beside it."""


class FolderExistsError(HistoEncodersError, FileExistsError):
    """An output folder exists and may not be replaced (no --overwrite, or not an encoder
    folder: --overwrite never deletes anything else)."""


class CheckpointLayoutError(HistoEncodersError, ValueError):
    """A checkpoint given to the converter is not in any layout it knows."""


# --- slides, tiling, embedding ---------------------------------------------------------------


class SlideError(HistoEncodersError):
    """Base class for per-slide failures: a batch run reports them and goes on."""

    def __init__(self, path: str, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class SlideOpenError(SlideError, OSError):
    """The file is missing, not a slide, or in a format OpenSlide cannot decode."""


class SlideReadError(SlideError, OSError):
    """A region of the slide could not be decoded (corrupt tile data), even after a retry."""


class MissingMppError(SlideError, ValueError):
    """The slide does not record its resolution (microns per pixel)."""


class ImplausibleMppError(SlideError, ValueError):
    """The slide records a resolution that cannot be a microscope's (e.g. 350 um/px)."""


class TargetResolutionError(SlideError, ValueError):
    """The requested mpp is finer than the slide's finest level: tiles would need upsampling."""


class FeatureFileError(HistoEncodersError, OSError):
    """A feature file is missing, incomplete or was written with other settings."""


class OutputConflictError(SlideError, FileExistsError):
    """The slide's output name already holds the features of another slide file."""


class OutputNotWritableError(HistoEncodersError, OSError):
    """The output folder cannot take more files (disk full, read-only, no permission): the run
    stops, since every later slide would fail the same way."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"Cannot write to {path}: {reason}. Free space or choose a writable --out; the "
            "slides already finished are kept, and running the same command again resumes."
        )


class RunStoppedError(HistoEncodersError, OSError):
    """A run-level condition stopped a batch run; ``summary`` is what finished before it."""

    def __init__(self, reason: str, summary: object) -> None:
        self.reason = reason
        self.summary = summary
        super().__init__(f"The run stopped: {reason}")


class NonFiniteFeaturesError(SlideError, ArithmeticError):
    """The encoder produced NaN or infinite features for some tiles: nothing was written."""


class ReaderNotApplicableError(SlideError, ValueError):
    """The requested tile reader cannot reproduce OpenSlide's pixels for this slide.

    ``reason`` says why (layout, codec, tile positions between pixels); reader "auto" then
    chooses OpenSlide and records the reason.
    """

    def __init__(self, path: str, reason: str, reader: str = "tiff") -> None:
        self.reason = reason
        self.reader = reader
        super().__init__(
            path,
            f"the {reader} reader cannot read this slide exactly ({reason}). Use reader "
            "'openslide', or 'auto' to choose per slide.",
        )


class DeviceUnavailableError(HistoEncodersError, RuntimeError):
    """The requested device (e.g. ``cuda:1``) does not exist on this machine."""
