"""Typed errors of the MIL benchmark.

They subclass the library's :class:`HistoEncodersError` (one ``except`` catches both) and the
built-in a caller would already catch; each message says what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from histo_encoders.errors import HistoEncodersError


class MilDataError(HistoEncodersError, ValueError):
    """The labels CSV or the feature files cannot make a benchmark (missing column, bad label)."""


class EmptyBagError(MilDataError):
    """A slide has no tiles: no MIL model can score an empty bag."""

    def __init__(self, slide_id: str | None, position: int | None = None) -> None:
        self.slide_id = slide_id
        self.position = position
        what = f"Slide {slide_id!r}" if slide_id is not None else f"Bag {position} of the batch"
        super().__init__(
            f"{what} has no tiles (an empty bag). Check its tissue mask and tiling settings and "
            "embed it again, or remove it from the labels CSV."
        )


class ProtocolError(HistoEncodersError, ValueError):
    """The evaluation protocol cannot run on these labels (no split column, too few slides)."""


class EmbeddingRunError(HistoEncodersError, RuntimeError):
    """Some slides could not be embedded, so an encoder cannot be benchmarked on every slide."""

    def __init__(self, out_dir: Path, failures: Sequence[str]) -> None:
        self.out_dir = out_dir
        self.failures = tuple(failures)
        super().__init__(
            f"{len(self.failures)} slide(s) failed to embed into {out_dir}: "
            f"{'; '.join(self.failures[:3])}. Fix or drop those slides (the run summary in that "
            "folder explains each), then run again: finished feature files are reused."
        )
