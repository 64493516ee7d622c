"""Embed many slides into one folder: resume, per-slide failures, a summary of the run.

Each slide becomes ``<out>/<slide stem>.h5``. A slide whose complete file exists with the same
settings fingerprint is skipped, so rerunning an interrupted command finishes the job. A slide
that cannot be opened, has no usable mpp or holds corrupt tiles is recorded as failed and the run
goes on; the summary (printed, and ``summary.json`` + ``summary.csv`` beside the outputs) says
which and why. Under torchrun each rank embeds its own share (``distributed.shard_slides``) and
writes ``summary.rank<R>.json``; the last rank to finish merges them into ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from histo_encoders.distributed import shard_slides
from histo_encoders.embed import (
    EmbedOptions,
    embed_prepared,
    prepare_encoder,
    run_settings,
    slide_fingerprint,
)
from histo_encoders.errors import SlideError
from histo_encoders.features_io import count_tiles, is_complete, write_features
from histo_encoders.inference import PreparedEncoder

# Extensions a folder given on the command line is searched for (OpenSlide's and plain images).
SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif"}
    | {".dcm", ".czi", ".png", ".jpg", ".jpeg"}
)
Status = Literal["ok", "skipped", "failed", "empty"]
_CSV_FIELDS = ("slide", "status", "n_tiles", "seconds", "error_type", "error", "output")


@dataclass(frozen=True)
class SlideResult:
    """What happened to one slide in a run."""

    slide: str
    status: Status
    n_tiles: int = 0
    seconds: float = 0.0
    error_type: str = ""
    error: str = ""
    output: str = ""


@dataclass(frozen=True)
class RunSummary:
    """Every slide's result, in the order they were processed, and where the summary was saved."""

    results: tuple[SlideResult, ...]
    out_dir: Path
    encoder: str
    settings: dict[str, Any] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1

    @property
    def failed(self) -> tuple[SlideResult, ...]:
        """Results of slides that failed (their outputs were not written)."""
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def counts(self) -> dict[str, int]:
        """Number of slides per status."""
        return dict(Counter(r.status for r in self.results))

    def format(self) -> str:
        """A short human-readable table of the run, failures explained."""
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()))
        lines = [f"{len(self.results)} slide(s): {counts or 'none'}  ->  {self.out_dir}"]
        for r in self.results:
            detail = f"{r.error_type}: {r.error}" if r.status == "failed" else f"{r.n_tiles} tiles"
            lines.append(f"  {r.status:<7} {r.slide}  {detail}  ({r.seconds:.1f} s)")
        return "\n".join(lines)


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
    rank: int = 0,
    world_size: int = 1,
    local_rank: int = 0,
    preview: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Embed this rank's share of ``paths`` into ``out_dir``; return (and save) the summary.

    Slides are sorted and split between ranks before anything is read, so ranks never write the
    same file. Per-slide errors (SlideError) are recorded and the run goes on; encoder errors
    and write failures stop it. Raises ValueError when two slides share a file stem (they would
    write the same output).
    """
    options = options or EmbedOptions()
    _check_unique_stems([Path(p) for p in paths])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_encoder(encoder, options, local_rank=local_rank)
    settings = run_settings(prepared, options)
    mine = shard_slides(paths, rank, world_size)
    results = []
    bar = tqdm(mine, desc=f"slides (rank {rank})", unit="slide", disable=not progress)
    tiles = tqdm(desc="tiles", unit="tile", disable=not progress, leave=False, position=1)
    for slide in bar:
        bar.set_postfix_str(Path(slide).name)
        tiles.reset()
        result = _embed_one(Path(slide), prepared, options, settings, out_dir, preview, tiles)
        if result.status == "failed" and progress:
            bar.write(
                f"failed: {result.error_type}: {result.error}"
            )  # seen now, not only at the end
        results.append(result)
    tiles.close()
    bar.close()
    summary = RunSummary(
        tuple(results), out_dir, prepared.spec.name, settings, rank=rank, world_size=world_size
    )
    save_summary(summary)
    return summary


def _embed_one(
    slide: Path,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    settings: dict[str, Any],
    out_dir: Path,
    preview: bool,
    tiles: tqdm,
) -> SlideResult:
    output = output_path(out_dir, slide)
    started = time.perf_counter()
    if is_complete(output, slide_fingerprint(slide, settings)):
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


def save_summary(summary: RunSummary) -> Path:
    """Write the summary as JSON and CSV beside the outputs; returns the JSON path.

    With one rank: ``summary.json`` / ``summary.csv``. With several, each rank writes
    ``summary.rank<R>.json`` and whichever finds all ranks' files merges them into
    ``summary.json`` / ``summary.csv`` (the last rank to finish always does).
    """
    if summary.world_size == 1:
        return _write_summary_files(summary.out_dir, "summary", _summary_record(summary))
    stem = f"summary.rank{summary.rank}"
    path = _write_summary_files(summary.out_dir, stem, _summary_record(summary))
    _merge_rank_summaries(summary.out_dir, summary.world_size)
    return path


def _summary_record(summary: RunSummary) -> dict[str, Any]:
    return {
        "encoder": summary.encoder,
        "settings": summary.settings,
        "rank": summary.rank,
        "world_size": summary.world_size,
        "counts": summary.counts,
        "slides": [asdict(r) for r in summary.results],
    }


def _write_summary_files(out_dir: Path, stem: str, record: dict[str, Any]) -> Path:
    json_path = out_dir / f"{stem}.json"
    _atomic_write_text(json_path, json.dumps(record, indent=2, default=str))
    rows = [{k: row[k] for k in _CSV_FIELDS} for row in record["slides"]]
    csv_path = out_dir / f"{stem}.csv"
    temporary = csv_path.with_name(f"{csv_path.name}.{os.getpid()}.partial")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, csv_path)
    return json_path


def _merge_rank_summaries(out_dir: Path, world_size: int) -> None:
    parts = [out_dir / f"summary.rank{r}.json" for r in range(world_size)]
    if not all(p.exists() for p in parts):
        return  # another rank is still running; it merges when it finishes
    records = [json.loads(p.read_text()) for p in parts]
    slides = sorted((s for rec in records for s in rec["slides"]), key=lambda s: s["slide"])
    merged = {
        **{k: records[0][k] for k in ("encoder", "settings")},
        "world_size": world_size,
        "counts": dict(Counter(s["status"] for s in slides)),
        "slides": slides,
    }
    _write_summary_files(out_dir, "summary", merged)


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.partial")
    temporary.write_text(text)
    os.replace(temporary, path)
