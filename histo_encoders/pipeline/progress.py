"""The progress of a run over many slides, on the terminal.

One bar, for the slide being embedded: it knows that slide's tile count as soon as the slide is
planned, and is redrawn after every batch (a slide that fits in one batch still shows its
count). When a slide is done one line says what became of it (ok, skipped, empty, failed and
why) above the bar, so the terminal keeps a log and never a stale bar; the bar is cleared when
the run ends, before the summary is printed. Only a torchrun job labels its lines with the rank.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm


class RunProgress:
    """Progress of one process's share of slides. Disabled, every method does nothing."""

    def __init__(
        self,
        n_slides: int,
        *,
        enabled: bool = True,
        rank: int = 0,
        world_size: int = 1,
        file: IO[str] | None = None,
    ) -> None:
        self._n_slides = n_slides
        self._done = 0
        self._enabled = enabled
        self._prefix = f"rank {rank}/{world_size} " if world_size > 1 else ""
        self._file = file if file is not None else sys.stderr
        self._bar: Any = None

    def start_slide(self, slide: str | Path) -> None:
        """A slide begins: a fresh bar whose total is set by :meth:`planned`."""
        if not self._enabled:
            return
        self._close_bar()
        position = f"{self._prefix}[{self._done + 1}/{self._n_slides}] {Path(slide).name}"
        self._bar = tqdm(
            desc=position,
            unit="tile",
            leave=False,
            file=self._file,
            dynamic_ncols=True,
            mininterval=0.2,
        )

    def planned(self, n_tiles: int) -> None:
        """The slide's tile grid is known: the bar's total."""
        if self._bar is not None:
            self._bar.total = int(n_tiles)
            self._bar.refresh()

    def tiles_done(self, n_tiles: int) -> None:
        """A batch of ``n_tiles`` tiles was embedded."""
        if self._bar is not None:
            self._bar.update(n_tiles)
            if self._bar.total is not None and self._bar.n >= self._bar.total:
                self._bar.refresh()  # the last batch is always drawn, however quick

    def end_slide(self, slide: str | Path, status: str, detail: str = "") -> None:
        """The slide is done: one line that stays, the bar goes."""
        self._done += 1
        if not self._enabled:
            return
        self._close_bar()
        line = f"{self._prefix}[{self._done}/{self._n_slides}] {status:<7} {Path(slide).name}"
        tqdm.write(f"{line}  {detail}".rstrip(), file=self._file)

    def set_aside(self, slide: str | Path, reason: str) -> None:
        """The slide is left for later (it is not done): one line saying why."""
        if not self._enabled:
            return
        self._close_bar()
        line = f"{self._prefix}[{self._done + 1}/{self._n_slides}] {'later':<7} {Path(slide).name}"
        tqdm.write(f"{line}  {reason}", file=self._file)

    def close(self) -> None:
        """Clear the bar (before the summary is printed)."""
        self._close_bar()
        if self._enabled:
            self._file.flush()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
