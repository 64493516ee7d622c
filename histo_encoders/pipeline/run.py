"""Embed many slides into one folder: resume, per-slide failures, a summary of the run.

Each slide becomes ``<out>/<slide stem>.h5``. A slide whose complete file exists with the same
settings fingerprint is skipped, so rerunning an interrupted command finishes the job. A slide
that cannot be opened, has no usable mpp or holds corrupt tiles is recorded as failed and the run
goes on; the summary (printed, and ``summary.json`` + ``summary.csv`` beside the outputs) says
which and why. Under torchrun each rank embeds its own share (``distributed.shard_slides``),
waits for the others and agrees with them on the outcome (``RunSummary.total_failed``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from histo_encoders.env import RankInfo, torchrun_ranks
from histo_encoders.errors import SlideError
from histo_encoders.pipeline.distributed import rank_group, shard_slides, total_over_ranks
from histo_encoders.pipeline.embed import embed_prepared, prepare_encoder, run_settings
from histo_encoders.pipeline.features import (
    count_tiles,
    is_complete,
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
    Per-slide errors (SlideError) are recorded and the run goes on; encoder errors and write
    failures stop it. ``pt_files`` also writes CLAM's ``pt_files/<slide>.pt``; ``slide_mpps``
    gives slides their own level-0 mpp (see :func:`.inputs.mpp_for`), over ``options.slide_mpp``.
    Raises ValueError when two slides share a file stem (they would write the same output).
    """
    options = options or EmbedOptions()
    check_unique_stems([Path(p) for p in paths])
    extras = _Extras(preview, progress, pt_files, dict(slide_mpps or {}))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (rank, world_size, local_rank) != (None, None, None):
        ranks = RankInfo(rank or 0, world_size or 1, local_rank or 0)
        return _embed_share(paths, encoder, out_dir, options, ranks, extras)
    ranks = torchrun_ranks()
    with rank_group(ranks):
        summary = _embed_share(paths, encoder, out_dir, options, ranks, extras)
        # Every rank waits here for the others, then all report the same outcome.
        total = total_over_ranks(len(summary.failed))
    return replace(summary, total_failed=total)


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
    mine = shard_slides(paths, ranks.rank, ranks.world_size)
    progress = RunProgress(
        len(mine), enabled=extras.progress, rank=ranks.rank, world_size=ranks.world_size
    )
    results = []
    try:
        for slide in mine:
            progress.start_slide(slide)
            slide_options, slide_settings = options, settings
            mpp = mpp_for(slide, extras.slide_mpps) if extras.slide_mpps else None
            if mpp is not None:
                slide_options = options.with_updates(slide_mpp=mpp)
                slide_settings = replace(settings, slide_mpp_override=mpp)
            result = _embed_one(
                Path(slide), prepared, slide_options, slide_settings, out_dir, extras, progress
            )
            progress.end_slide(slide, result.status, _detail(result))
            results.append(result)
    finally:
        progress.close()
    summary = RunSummary(
        tuple(results),
        out_dir,
        prepared.spec.name,
        settings,
        rank=ranks.rank,
        world_size=ranks.world_size,
        total_failed=sum(r.status == "failed" for r in results),
    )
    save_summary(summary)
    return summary


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
) -> SlideResult:
    output = output_path(out_dir, slide)
    started = time.perf_counter()
    if is_complete(output, settings.fingerprint(SlideIdentity.of(slide))):
        if extras.pt_files and not pt_path(out_dir, slide).is_file():
            write_pt(pt_path(out_dir, slide), read_features(output)[0])
        return SlideResult(str(slide), "skipped", count_tiles(output), 0.0, output=str(output))
    preview_path = out_dir / f"{slide_stem(slide)}.preview.png" if extras.preview else None
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
    except SlideError as error:
        return SlideResult(
            str(slide),
            "failed",
            seconds=time.perf_counter() - started,
            error_type=type(error).__name__,
            error=str(error),
        )
    write_features(output, embedding.features, embedding.coords, embedding.attrs)
    if extras.pt_files:
        write_pt(pt_path(out_dir, slide), embedding.features)
    status: Status = "ok" if embedding.n_tiles else "empty"
    elapsed = time.perf_counter() - started
    return SlideResult(str(slide), status, embedding.n_tiles, elapsed, output=str(output))
