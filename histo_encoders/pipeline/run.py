"""Embed many slides into one folder: resume, per-slide failures, a summary of the run.

Each slide becomes ``<out>/<slide stem>.h5``. A slide whose complete file exists with the same
settings fingerprint (settings and slide content, see :mod:`.provenance`) is skipped, so
rerunning an interrupted command finishes the job. Anything that goes wrong with one slide
(it cannot be opened, has no usable mpp, holds corrupt tiles, an error inside a decoder or the
model) is recorded as that slide's failure and the run goes on; the summary (printed, and
``summary.json`` + ``summary.csv`` beside the outputs) says which and why. A feature file of
another slide with the same file name is never replaced (OutputConflictError).

Each slide is embedded under a per-slide lock (``.<stem>.h5.lock``), so two processes on one
output folder never embed the same slide: the second waits for the first and then skips the
finished slide. Only a condition of the run itself stops it: an output folder that cannot take
more files (disk full, read-only): the slide being written fails, its temporary file is removed,
the summary of what finished is written, and RunStoppedError is raised.

Under torchrun each rank embeds its own share (``distributed.shard_slides``), waits for the
others and agrees with them on the outcome (``RunSummary.total_failed``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from histo_encoders.atomic import LOCK_MARK, FileLock, remove_leftovers
from histo_encoders.env import RankInfo, torchrun_ranks
from histo_encoders.errors import (
    OutputConflictError,
    OutputNotWritableError,
    RunStoppedError,
    SlideError,
    SlideOpenError,
)
from histo_encoders.pipeline.distributed import rank_group, shard_slides, total_over_ranks
from histo_encoders.pipeline.embed import embed_prepared, prepare_encoder, run_settings
from histo_encoders.pipeline.features import (
    FINGERPRINT_ATTR,
    complete_attrs,
    pt_path,
    read_features,
    write_features,
    write_pt,
)
from histo_encoders.pipeline.inference import PreparedEncoder
from histo_encoders.pipeline.inputs import (
    SLIDE_EXTENSIONS,
    check_unique_stems,
    collect_slides,
    mpp_for,
    slide_stem,
)
from histo_encoders.pipeline.options import EmbedOptions
from histo_encoders.pipeline.progress import RunProgress
from histo_encoders.pipeline.provenance import RunSettings, SlideIdentity
from histo_encoders.pipeline.summary import RunSummary, SlideResult, Status, save_summary

__all__ = ["SLIDE_EXTENSIONS", "collect_slides", "embed_slides", "output_path"]

_log = logging.getLogger(__name__)
# errno values that say the output's filesystem, not one slide, is the problem.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_ENVIRONMENT_MESSAGES = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def output_path(out_dir: str | Path, slide: str | Path) -> Path:
    """Where a slide's features go: ``<out_dir>/<slide stem>.h5``."""
    return Path(out_dir) / f"{slide_stem(slide)}.h5"


def embed_slides(
    paths: Sequence[str | Path],
    encoder: str | torch.nn.Module | PreparedEncoder,
    out_dir: str | Path,
    options: EmbedOptions | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    local_rank: int | None = None,
    preview: bool = False,
    progress: bool = True,
    pt_files: bool = False,
    slide_mpps: Mapping[str, float] | None = None,
) -> RunSummary:
    """Embed this process's share of ``paths`` into ``out_dir``; return (and save) the summary.

    Without ``rank``/``world_size``/``local_rank`` they come from torchrun's variables, and the
    ranks of a torchrun job join a group, wait for each other at the end and agree on
    ``total_failed``; given explicitly, the caller coordinates the processes. Slides are sorted
    and split between ranks before anything is read, so ranks never write the same file.
    Any error while reading or embedding one slide is recorded and the run goes on.
    ``pt_files`` also writes CLAM's ``pt_files/<slide>.pt``; ``slide_mpps`` gives slides their
    own level-0 mpp (see :func:`.inputs.mpp_for`), over ``options.slide_mpp``.

    Raises ValueError when two slides share a file stem (they would write the same output),
    OutputNotWritableError when ``out_dir`` cannot be created or written (before any work), and
    RunStoppedError when it stops taking files part-way (``.summary`` is what finished; the
    summary files are written if the disk allows). Encoder errors are raised as they are.
    """
    options = options or EmbedOptions()
    check_unique_stems([Path(p) for p in paths])
    extras = _Extras(preview, progress, pt_files, dict(slide_mpps or {}))
    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    if (rank, world_size, local_rank) != (None, None, None):
        ranks = RankInfo(rank or 0, world_size or 1, local_rank or 0)
        return _embed_share(paths, encoder, out_dir, options, ranks, extras)
    ranks = torchrun_ranks()
    stopped: RunStoppedError | None = None
    with rank_group(ranks):
        try:
            summary = _embed_share(paths, encoder, out_dir, options, ranks, extras)
        except RunStoppedError as error:  # still meet the other ranks, then stop
            stopped, summary = error, error.summary
        # Every rank waits here for the others, then all report the same outcome.
        total = total_over_ranks(len(summary.failed))
    summary = replace(summary, total_failed=total)
    if stopped is not None:
        raise RunStoppedError(stopped.reason, summary) from stopped
    return summary


def check_output_folder(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and make sure a file can be written there.

    Raises OutputNotWritableError (disk full, read-only, no permission, a file in the way).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputNotWritableError(str(out_dir), "it is a file, not a folder")
    probe = out_dir / f".write-test.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"histo-encoders")
    except OSError as error:
        raise OutputNotWritableError(str(out_dir), str(error)) from error
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Extras:
    """What a run does beside embedding: preview PNGs, progress, CLAM .pt files, slide mpps."""

    preview: bool
    progress: bool
    pt_files: bool
    slide_mpps: dict[str, float]


def _embed_share(
    paths: Sequence[str | Path],
    encoder: str | torch.nn.Module | PreparedEncoder,
    out_dir: Path,
    options: EmbedOptions,
    ranks: RankInfo,
    extras: _Extras,
) -> RunSummary:
    prepared = prepare_encoder(encoder, options, local_rank=ranks.local_rank)
    settings = run_settings(prepared, options)
    mine = [Path(p) for p in shard_slides(paths, ranks.rank, ranks.world_size)]
    progress = RunProgress(
        len(mine), enabled=extras.progress, rank=ranks.rank, world_size=ranks.world_size
    )
    results: dict[Path, SlideResult] = {}
    busy: list[Path] = []  # slides another process was embedding when this one reached them
    stop: OutputNotWritableError | None = None

    def run(slide: Path, wait: bool) -> bool:
        nonlocal stop
        progress.start_slide(slide)
        slide_options, slide_settings = _for_slide(slide, options, settings, extras)
        result, stop = _embed_one(
            slide, prepared, slide_options, slide_settings, out_dir, extras, progress, wait
        )
        if result is None:
            busy.append(slide)
            progress.set_aside(slide, "another process is embedding it: back to it at the end")
            return True
        results[slide] = result
        progress.end_slide(slide, result.status, _detail(result))
        return stop is None

    try:
        for slide in mine:
            if not run(slide, wait=False):
                break
        waiting, busy = busy, []
        for slide in waiting if stop is None else ():
            # Another process was embedding these: wait for it, then skip what it finished.
            if not run(slide, wait=True):
                break
    finally:
        progress.close()
    summary = _summary(mine, results, out_dir, prepared, settings, ranks, stop)
    try:
        save_summary(summary)
    except OSError as error:
        reason = f"the summary could not be written to {out_dir} ({error})"
        stop = stop or OutputNotWritableError(str(out_dir), reason)
        summary = replace(summary, stopped=summary.stopped or reason)
    if stop is not None:
        raise RunStoppedError(str(stop), summary) from stop
    return summary


def _for_slide(
    slide: Path, options: EmbedOptions, settings: RunSettings, extras: _Extras
) -> tuple[EmbedOptions, RunSettings]:
    """The options and settings of one slide: its own level-0 mpp where the run has one."""
    mpp = mpp_for(slide, extras.slide_mpps) if extras.slide_mpps else None
    if mpp is None:
        return options, settings
    return options.with_updates(slide_mpp=mpp), replace(settings, slide_mpp_override=mpp)


def _summary(
    slides: Sequence[Path],
    results: dict[Path, SlideResult],
    out_dir: Path,
    prepared: PreparedEncoder,
    settings: RunSettings,
    ranks: RankInfo,
    stop: OutputNotWritableError | None,
) -> RunSummary:
    """Every slide's result in order; those a stopped run never reached are ``not_run``."""
    ordered = tuple(
        results.get(slide)
        or SlideResult(str(slide), "not_run", error_type="RunStoppedError", error=str(stop))
        for slide in slides
    )
    return RunSummary(
        ordered,
        out_dir,
        prepared.spec.name,
        settings,
        rank=ranks.rank,
        world_size=ranks.world_size,
        total_failed=sum(r.status == "failed" for r in ordered),
        stopped=str(stop) if stop else None,
    )


def _detail(result: SlideResult) -> str:
    if result.status == "failed":
        return f"{result.error_type}: {result.error}"
    return f"{result.n_tiles} tiles" + (f", {result.seconds:.1f} s" if result.seconds else "")


def _embed_one(
    slide: Path,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    settings: RunSettings,
    out_dir: Path,
    extras: _Extras,
    progress: RunProgress,
    wait: bool,
) -> tuple[SlideResult | None, OutputNotWritableError | None]:
    """One slide under its lock: (its result, or None when another process holds the slide
    and ``wait`` is False; the environment failure that must stop the run, if any)."""
    output = output_path(out_dir, slide)
    started = time.perf_counter()
    try:
        identity = SlideIdentity.of(slide)
    except OSError as error:
        failure = SlideOpenError(str(slide), f"cannot read the file ({error})")
        return _failed(slide, started, failure), None
    lock = FileLock(output.with_name(f".{output.name}{LOCK_MARK}"), remove=True)
    try:
        if not lock.acquire(blocking=wait):
            return None, None
    except OSError as error:
        stop = OutputNotWritableError(str(out_dir), f"cannot create a lock file ({error})")
        return _failed(slide, started, stop), stop
    try:
        return _embed_locked(
            slide, identity, output, prepared, options, settings, extras, progress, started
        )
    finally:
        lock.release()


def _embed_locked(
    slide: Path,
    identity: SlideIdentity,
    output: Path,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    settings: RunSettings,
    extras: _Extras,
    progress: RunProgress,
    started: float,
) -> tuple[SlideResult, OutputNotWritableError | None]:
    fingerprint = settings.fingerprint(identity)
    # Under the slide's lock no live writer has a temporary file here: any is a killed run's.
    remove_leftovers(output)
    finished = complete_attrs(output)
    if finished is not None:
        recorded, n_tiles = finished
        if recorded.get(FINGERPRINT_ATTR) == fingerprint:
            if extras.pt_files and not pt_path(output.parent, slide).is_file():
                write_pt(pt_path(output.parent, slide), read_features(output)[0])
            return SlideResult(str(slide), "skipped", n_tiles, 0.0, output=str(output)), None
        if "slide_path" in recorded and not identity.same_file_as(recorded):
            conflict = OutputConflictError(
                str(slide),
                f"{output} holds the features of another slide with the same file name, "
                f"{recorded['slide_path']}, and is not replaced. Embed this slide into another "
                "--out, or rename one of the two files.",
            )
            return _failed(slide, started, conflict), None
    preview_path = output.with_name(f"{slide_stem(slide)}.preview.png") if extras.preview else None
    try:
        embedding = embed_prepared(
            slide,
            prepared,
            options,
            settings=settings,
            preview_path=preview_path,
            on_batch=progress.tiles_done,
            on_plan=progress.planned,
        )
        write_features(output, embedding.features, embedding.coords, embedding.attrs)
        if extras.pt_files:
            write_pt(pt_path(output.parent, slide), embedding.features)
    except Exception as error:  # whatever goes wrong with one slide is that slide's failure
        stop = _environment_failure(error, output)
        if not isinstance(error, SlideError | OutputNotWritableError):
            _log.debug("%s failed", slide, exc_info=True)  # the traceback, for --debug
        return _failed(slide, started, stop or error), stop
    status: Status = "ok" if embedding.n_tiles else "empty"
    elapsed = time.perf_counter() - started
    return SlideResult(str(slide), status, embedding.n_tiles, elapsed, output=str(output)), None


def _environment_failure(error: BaseException, output: Path) -> OutputNotWritableError | None:
    """The error as a run-stopping OutputNotWritableError when it says the output's disk is
    full or read-only (anywhere in its chain of causes); None for the slide's own failures."""
    if isinstance(error, OutputNotWritableError):
        return error
    seen: BaseException | None = error
    while seen is not None:
        text = str(seen)
        if (isinstance(seen, OSError) and seen.errno in _ENVIRONMENT_ERRNOS) or any(
            message in text for message in _ENVIRONMENT_MESSAGES
        ):
            return OutputNotWritableError(str(output.parent), text)
        seen = seen.__cause__ or seen.__context__
    return None


def _failed(slide: Path, started: float, error: BaseException) -> SlideResult:
    """A failed slide's result: the error's type and the first line of its message."""
    message = str(error).strip() or type(error).__name__
    return SlideResult(
        str(slide),
        "failed",
        seconds=time.perf_counter() - started,
        error_type=type(error).__name__,
        error=message.splitlines()[0],
    )
