"""What happened in a run: one result per slide, and the summary saved beside the outputs.

``summary.json`` and ``summary.csv`` are written atomically. Under torchrun each rank writes
``summary.rank<R>.json`` and whichever rank finds all of them (the last to finish always does)
merges them into ``summary.json`` / ``summary.csv``. A run stopped by its environment (a full
disk) still writes them where it can: ``stopped`` says why, and the slides it never reached are
listed as ``not_run``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from histo_encoders.atomic import atomic_write_text
from histo_encoders.pipeline.provenance import RunSettings

Status = Literal["ok", "skipped", "failed", "empty", "not_run"]
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
    """Every slide's result, in the order they were processed, and where the summary was saved.

    ``total_failed`` counts failed slides over every rank of a torchrun job (this rank's alone
    otherwise): what decides the exit status.
    """

    results: tuple[SlideResult, ...]
    out_dir: Path
    encoder: str
    settings: RunSettings | None = None
    rank: int = 0
    world_size: int = 1
    total_failed: int | None = None
    stopped: str | None = None

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
            detail = f"{r.error_type}: {r.error}" if r.error else f"{r.n_tiles} tiles"
            lines.append(f"  {r.status:<7} {r.slide}  {detail}  ({r.seconds:.1f} s)")
        if self.stopped:
            lines.append(f"STOPPED: {self.stopped}")
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """The JSON document saved as the summary."""
        return {
            "encoder": self.encoder,
            "settings": self.settings.as_dict() if self.settings else {},
            "rank": self.rank,
            "world_size": self.world_size,
            "counts": self.counts,
            "stopped": self.stopped,
            "slides": [asdict(r) for r in self.results],
        }


def save_summary(summary: RunSummary) -> Path:
    """Write the summary as JSON and CSV beside the outputs; returns the JSON path."""
    if summary.world_size == 1:
        return _write_summary_files(summary.out_dir, "summary", summary.record())
    stem = f"summary.rank{summary.rank}"
    path = _write_summary_files(summary.out_dir, stem, summary.record())
    _merge_rank_summaries(summary.out_dir, summary.world_size)
    return path


def _write_summary_files(out_dir: Path, stem: str, record: dict[str, Any]) -> Path:
    json_path = out_dir / f"{stem}.json"
    atomic_write_text(json_path, json.dumps(record, indent=2, default=str))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=_CSV_FIELDS)
    writer.writeheader()
    writer.writerows({k: row[k] for k in _CSV_FIELDS} for row in record["slides"])
    atomic_write_text(out_dir / f"{stem}.csv", text.getvalue())
    return json_path


def _merge_rank_summaries(out_dir: Path, world_size: int) -> None:
    parts = [out_dir / f"summary.rank{r}.json" for r in range(world_size)]
    if not all(p.exists() for p in parts):
        return  # another rank is still running; it merges when it finishes
    records = [json.loads(p.read_text()) for p in parts]
    slides = sorted((s for rec in records for s in rec["slides"]), key=lambda s: s["slide"])
    stopped = [rec["stopped"] for rec in records if rec.get("stopped")]
    merged = {
        **{k: records[0][k] for k in ("encoder", "settings")},
        "world_size": world_size,
        "counts": dict(Counter(s["status"] for s in slides)),
        "stopped": stopped[0] if stopped else None,
        "slides": slides,
    }
    _write_summary_files(out_dir, "summary", merged)
