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
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from histo_encoders.env import RankInfo, torchrun_ranks
from histo_encoders.errors import SlideError
from histo_encoders.pipeline.distributed import rank_group, shard_slides, total_over_ranks
from histo_encoders.pipeline.embed import embed_prepared, prepare_encoder, run_settings
from histo_encoders.pipeline.features import count_tiles, is_complete, write_features
from histo_encoders.pipeline.inference import PreparedEncoder
from histo_encoders.pipeline.options import EmbedOptions
from histo_encoders.pipeline.provenance import RunSettings, SlideIdentity
from histo_encoders.pipeline.summary import RunSummary, SlideResult, Status, save_summary

# Extensions a folder given on the command line is searched for (OpenSlide's and plain images).
SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif"}
    | {".dcm", ".czi", ".png", ".jpg", ".jpeg"}
)


def collect_slides(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively by slide extension) into a sorted list.

    Raises FileNotFoundError for an input that does not exist, ValueError when two slides would
    write the same output name (same file stem in different folders).
    """
    slides: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            slides.update(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SLIDE_EXTENSIONS
            )
        elif path.exists():
            slides.add(path)
        else:
            raise FileNotFoundError(f"No such slide file or folder: {path}")
    ordered = sorted(slides, key=str)
    _check_unique_stems(ordered)
    return ordered


def _check_unique_stems(slides: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for slide in slides:
        if slide.stem in seen:
            raise ValueError(
                f"{seen[slide.stem]} and {slide} would both write {slide.stem}.h5: embed them "
                "into different --out folders, or rename one."
            )
        seen[slide.stem] = slide


def output_path(out_dir: str | Path, slide: str | Path) -> Path:
    """Where a slide's features go: ``<out_dir>/<slide stem>.h5``."""
    return Path(out_dir) / f"{Path(slide).stem}.h5"


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
) -> RunSummary:
    """Embed this process's share of ``paths`` into ``out_dir``; return (and save) the summary.

    Without ``rank``/``world_size``/``local_rank`` they come from torchrun's variables, and the
    ranks of a torchrun job join a group, wait for each other at the end and agree on
    ``total_failed``; given explicitly, the caller coordinates the processes. Slides are sorted
    and split between ranks before anything is read, so ranks never write the same file.
    Per-slide errors (SlideError) are recorded and the run goes on; encoder errors and write
    failures stop it. Raises ValueError when two slides share a file stem (they would write the
    same output).
    """
    options = options or EmbedOptions()
    _check_unique_stems([Path(p) for p in paths])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (rank, world_size, local_rank) != (None, None, None):
        ranks = RankInfo(rank or 0, world_size or 1, local_rank or 0)
        return _embed_share(paths, encoder, out_dir, options, ranks, preview, progress)
    ranks = torchrun_ranks()
    with rank_group(ranks):
        summary = _embed_share(paths, encoder, out_dir, options, ranks, preview, progress)
        # Every rank waits here for the others, then all report the same outcome.
        total = total_over_ranks(len(summary.failed))
    return replace(summary, total_failed=total)


def _embed_share(
    paths: Sequence[str | Path],
    encoder: str | torch.nn.Module | PreparedEncoder,
    out_dir: Path,
    options: EmbedOptions,
    ranks: RankInfo,
    preview: bool,
    progress: bool,
) -> RunSummary:
    prepared = prepare_encoder(encoder, options, local_rank=ranks.local_rank)
    settings = run_settings(prepared, options)
    mine = shard_slides(paths, ranks.rank, ranks.world_size)
    label = f"slides (rank {ranks.rank})" if ranks.is_distributed else "slides"
    bar = tqdm(mine, desc=label, unit="slide", disable=not progress)
    tiles = tqdm(desc="tiles", unit="tile", disable=not progress, leave=False, position=1)
    results = []
    for slide in bar:
        bar.set_postfix_str(Path(slide).name)
        tiles.reset()
        result = _embed_one(Path(slide), prepared, options, settings, out_dir, preview, tiles)
        if result.status == "failed" and progress:
            bar.write(f"failed: {result.error_type}: {result.error}")  # seen now, not at the end
        results.append(result)
    tiles.close()
    bar.close()
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


def _embed_one(
    slide: Path,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    settings: RunSettings,
    out_dir: Path,
    preview: bool,
    tiles: tqdm,
) -> SlideResult:
    output = output_path(out_dir, slide)
    started = time.perf_counter()
    if is_complete(output, settings.fingerprint(SlideIdentity.of(slide))):
        return SlideResult(str(slide), "skipped", count_tiles(output), 0.0, output=str(output))
    preview_path = out_dir / f"{slide.stem}.preview.png" if preview else None
    try:
        embedding = embed_prepared(
            slide,
            prepared,
            options,
            settings=settings,
            preview_path=preview_path,
            on_batch=tiles.update,
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
    status: Status = "ok" if embedding.n_tiles else "empty"
    elapsed = time.perf_counter() - started
    return SlideResult(str(slide), status, embedding.n_tiles, elapsed, output=str(output))
