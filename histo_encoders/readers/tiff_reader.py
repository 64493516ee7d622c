"""Tiles straight from a TIFF slide's stored tiles: each stored tile decoded once, in threads.

OpenSlide's ``read_region`` decodes every stored tile a region touches, for every region, and
spends most of its time compositing. Here the level's raw tile bytes are read with ``pread``,
decoded by imagecodecs (through tifffile's per-page decoder, which knows about JPEGTables, RGB
versus YCbCr JPEG, predictors) in a thread pool (decoders release the GIL), regions are cut from
the decoded tiles and shrunk with :func:`histo_encoders.resize.resize_tile`, the resize the
OpenSlide reader uses, so both readers' pixels agree within one grey level.

Output tiles are visited in the file's tile order (see :mod:`tile_plan`) and each decoded tile is
dropped once no pending output tile needs it, so memory stays bounded on any slide height.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_encoders.errors import DeviceUnavailableError, ReaderNotApplicableError, SlideReadError
from histo_encoders.readers.tiff_layout import (
    RawTileSource,
    TiffLayoutError,
    TiffLevel,
    open_tiff_level,
    validate_jpeg,
)
from histo_encoders.readers.tile_plan import ReadPlan, level_positions, plan_reads
from histo_encoders.resize import resize_tile

_GLASS = 255  # OpenSlide's transparent pixels (outside the level, missing tiles) read as white
# OpenSlide vendors whose level pages are plain tile grids, checked against read_region here.
# Others (Leica SCN, Ventana BIF, Philips, NDPI...) place, overlap or pad tiles their own way.
VERIFIED_VENDORS = ("aperio", "generic-tiff")


@dataclass(frozen=True)
class TiffReaderOptions:
    """How the TIFF reader runs.

    ``num_threads``: decode/resize threads (0: the CPUs this process may use).
    ``prefetch_batches``: batches decoded ahead of the one being consumed.
    ``device``: "cpu", or "cuda" to decode JPEG tiles with nvJPEG and cut/resize on the GPU.
    ``pin_memory``: page-lock the CPU batch buffers (None: when CUDA is available).
    """

    num_threads: int = 0
    prefetch_batches: int = 2
    device: str = "cpu"
    pin_memory: bool | None = None

    def threads(self) -> int:
        if self.num_threads > 0:
            return self.num_threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@dataclass
class ReaderStats:
    """Counters a run reports: how much was decoded, how much was alive at once, fallbacks."""

    tiles_delivered: int = 0
    stored_tiles_decoded: int = 0
    peak_decoded_tiles: int = 0
    gpu_decoded: int = 0
    cpu_fallback_decodes: int = 0
    fallback_reasons: dict[str, int] = field(default_factory=dict)


class TiffTileReader:
    """Reads a :class:`~histo_encoders.tiling.TileGrid`'s tiles from a TIFF slide's raw tiles.

    ``read_tiles(indices)`` returns tiles in the order asked; ``iter_batches`` streams them in
    file-tile order, which is what lets each stored tile be decoded only once. Raises
    ReaderNotApplicableError when the slide's layout, codec or tile positions are not ones this
    reader reproduces exactly, and SlideReadError when a stored tile cannot be decoded.
    """

    name = "tiff"

    def __init__(
        self, path: str | Path, info: Any, grid: Any, options: TiffReaderOptions | None = None
    ):
        self.path = str(path)
        self.info = info
        self.grid = grid
        self.options = options or TiffReaderOptions()
        _check_device(self.options.device)
        self.stats = ReaderStats()
        _check_vendor(path, info)
        self.level = _open_level(path, info, grid.level)
        self._layout = _layout_summary(self.level)
        self._x, self._y = _grid_positions(path, info, grid)
        self._source: RawTileSource | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._scratch = threading.local()
        self._gpu = None

    def __getstate__(self) -> dict[str, Any]:
        # File handle, threads and tifffile's decoder stay behind: a worker process reopens them.
        state = self.__dict__.copy()
        state.update(level=None, _source=None, _pool=None, _scratch=None, _gpu=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._scratch = threading.local()

    def _ensure_open(self) -> None:
        """Open the file, the threads (and the GPU decoder) in the process that reads."""
        if self.level is None:
            self.level = _open_level(self.path, self.info, self.grid.level)
        if self._source is None:
            self._source = RawTileSource(self.path, self.level)
            self._pool = ThreadPoolExecutor(self.options.threads(), thread_name_prefix="tiff")
        if self._gpu is None and self.options.device.startswith("cuda"):
            self._gpu = _gpu_supply(self)

    # --- public API ----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Provenance of this reader: which reader, decode path, codec, threads and counters."""
        if self.options.device.startswith("cuda"):
            self._ensure_open()  # the GPU path knows which tiles it can take only once open
        cpu_path = f"cpu:imagecodecs-{self._layout['codec']}"
        decode_path = self._gpu.decode_path() if self._gpu else cpu_path
        return {
            "reader": self.name,
            "decode_path": decode_path,
            **self._layout,
            "level": int(self.grid.level),
            "threads": self.options.threads(),
            "stats": _stats_dict(self.stats),
        }

    def read_tiles(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Tiles ``indices`` of the grid as (B, tile_size, tile_size, 3) uint8, in that order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(indices), self.grid.tile_size, self.grid.tile_size, 3), np.uint8)
        if len(indices) == 0:
            return out
        for ordered, tiles in self._iter_batches(indices, len(indices), pin=False):
            out[_positions_of(indices, ordered)] = tiles.cpu().numpy()
        return out

    def iter_batches(
        self, indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 64
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Stream tiles ``indices`` (default: the whole grid) in file-tile order.

        Yields (grid indices (B,) int64, tiles (B, t, t, 3) uint8 torch tensor). Tiles are on
        the CPU (pinned when ``pin_memory``), or on the GPU with ``device="cuda"``. The tensor
        is a reused buffer: it stays valid until the next batch is requested; copy it (or move
        it to the device) before then. Raises SlideReadError on a corrupt stored tile.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        indices = np.arange(len(self._x)) if indices is None else np.asarray(indices, np.int64)
        pin = self.options.pin_memory
        yield from self._iter_batches(
            indices, batch_size, torch.cuda.is_available() if pin is None else pin
        )

    def _iter_batches(
        self, indices: np.ndarray, batch_size: int, pin: bool
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        self._ensure_open()
        plan = plan_reads(self._x[indices], self._y[indices], self.grid.read_size, self.level)
        if self._gpu is not None:
            yield from self._gpu.stream(plan, indices, batch_size)
            return
        yield from self._stream_cpu(plan, indices, batch_size, pin)

    def close(self) -> None:
        """Stop the threads and close the file; reading again reopens them."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._source is not None:
            self._source.close()
            self._source = None
        self._gpu = None

    def __enter__(self) -> TiffTileReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- CPU pipeline --------------------------------------------------------------------

    def _stream_cpu(
        self, plan: ReadPlan, indices: np.ndarray, batch_size: int, pin: bool
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        batches = [plan.order[i : i + batch_size] for i in range(0, len(plan.order), batch_size)]
        ring = max(1, min(self.options.prefetch_batches + 1, len(batches)))
        size = min(batch_size, len(plan.order))
        buffers = [self._batch_buffer(size, pin) for _ in range(ring)]
        cache = _DecodedTiles(plan.uses.copy(), self._submit_decode, self.stats)
        pending: deque[tuple[np.ndarray, list[Future], torch.Tensor]] = deque()
        try:
            for number in range(min(ring, len(batches))):
                pending.append(self._submit_batch(plan, batches[number], buffers[number], cache))
            for number in range(len(batches)):
                positions, jobs, buffer = pending.popleft()
                for position, job in zip(positions, jobs, strict=True):
                    job.result()
                    cache.release(plan.tiles_of(position, self.level))
                self.stats.tiles_delivered += len(positions)
                yield indices[positions], buffer[: len(positions)]
                # The consumer is done with this buffer: reuse it for the batch `ring` ahead.
                if number + ring < len(batches):
                    pending.append(self._submit_batch(plan, batches[number + ring], buffer, cache))
        finally:
            for _, jobs, _ in pending:
                for job in jobs:
                    job.cancel()
            cache.clear()

    def _submit_batch(
        self, plan: ReadPlan, positions: np.ndarray, buffer: torch.Tensor, cache: _DecodedTiles
    ) -> tuple[np.ndarray, list[Future], torch.Tensor]:
        out = buffer.numpy()
        jobs = []
        for slot, position in enumerate(positions):
            tiles = [(t, cache.get(t)) for t in plan.tiles_of(position, self.level)]
            # Decodes were queued before this job, and the pool runs jobs in order: no deadlock.
            jobs.append(self._pool.submit(self._cut_and_resize, plan, position, tiles, out, slot))
        return positions, jobs, buffer

    def _submit_decode(self, tile_index: int) -> Future:
        self.stats.stored_tiles_decoded += 1
        return self._pool.submit(self.decode_stored_tile, tile_index)

    def decode_stored_tile(self, tile_index: int) -> np.ndarray | None:
        """One stored tile as (tile_height, tile_width, 3) uint8; None if the file omits it.

        Raises SlideReadError if its data cannot be decoded (same message shape as OpenSlide's).
        """
        data = self._source.read(tile_index)
        if data is None:
            return None
        level = self.level
        try:
            decoded = level.decode(data, tile_index, jpegtables=level.jpegtables)[0]
            # libjpeg's fatal errors came through above; damage it only warns about is caught here.
            damage = validate_jpeg(data) if level.codec == "jpeg" else None
            if damage is not None:
                raise ValueError(damage)
        except (RuntimeError, ValueError) as error:
            raise self._read_error(tile_index, error) from error
        decoded = decoded.reshape(decoded.shape[-3:])
        if decoded.shape != (level.tile_height, level.tile_width, 3):
            raise self._read_error(tile_index, ValueError(f"decoded shape {decoded.shape}"))
        return decoded

    def _read_error(self, tile_index: int, error: Exception) -> SlideReadError:
        row, column = divmod(tile_index, self.level.tiles_across)
        return SlideReadError(
            self.path,
            f"could not decode stored tile {tile_index} (column {column}, row {row}) of level "
            f"{self.grid.level}: {error}. The file is probably corrupt there; re-export or "
            "re-scan the slide, or leave it out of the run.",
        )

    def _cut_and_resize(
        self,
        plan: ReadPlan,
        position: int,
        tiles: list[tuple[int, Future]],
        out: np.ndarray,
        slot: int,
    ) -> None:
        region = self._region_buffer(plan.read_size)
        decoded = [(t, future.result()) for t, future in tiles]
        paste_region(region, int(plan.x[position]), int(plan.y[position]), decoded, self.level)
        out[slot] = resize_tile(region, self.grid.tile_size)

    def _region_buffer(self, size: int) -> np.ndarray:
        """A per-thread scratch region: every call overwrites all of it, so it can be reused."""
        region = getattr(self._scratch, "region", None)
        if region is None or region.shape[0] != size:
            region = np.empty((size, size, 3), dtype=np.uint8)
            self._scratch.region = region
        return region

    def _batch_buffer(self, batch_size: int, pin: bool) -> torch.Tensor:
        shape = (batch_size, self.grid.tile_size, self.grid.tile_size, 3)
        # Pinned (page-locked) buffers let the copy to the GPU run asynchronously.
        return torch.empty(shape, dtype=torch.uint8, pin_memory=pin)


def paste_region(
    region: np.ndarray,
    x: int,
    y: int,
    decoded: list[tuple[int, np.ndarray | None]],
    level: TiffLevel,
) -> None:
    """Fill ``region`` (level pixels from (x, y)) from decoded stored tiles; glass elsewhere."""
    size = region.shape[0]
    inside = x >= 0 and y >= 0 and x + size <= level.width and y + size <= level.height
    if not inside or any(tile is None for _, tile in decoded):
        region[...] = _GLASS
    for tile_index, tile in decoded:
        if tile is None:
            continue
        row, column = divmod(tile_index, level.tiles_across)
        tile_x, tile_y = column * level.tile_width, row * level.tile_height
        # Intersect region, stored tile and level (stored edge tiles are padded past the level).
        x0, x1 = max(x, tile_x), min(x + size, tile_x + level.tile_width, level.width)
        y0, y1 = max(y, tile_y), min(y + size, tile_y + level.tile_height, level.height)
        if x1 > x0 and y1 > y0:
            region[y0 - y : y1 - y, x0 - x : x1 - x] = tile[
                y0 - tile_y : y1 - tile_y, x0 - tile_x : x1 - tile_x
            ]


class _DecodedTiles:
    """Decoded stored tiles (as futures) with the count of output tiles still needing each."""

    def __init__(self, uses: np.ndarray, submit, stats: ReaderStats) -> None:
        self._uses = uses
        self._submit = submit
        self._stats = stats
        self._live: dict[int, Future] = {}

    def get(self, tile_index: int) -> Future:
        future = self._live.get(tile_index)
        if future is None:
            future = self._live[tile_index] = self._submit(tile_index)
            self._stats.peak_decoded_tiles = max(self._stats.peak_decoded_tiles, len(self._live))
        return future

    def release(self, tile_indices: list[int]) -> None:
        for tile_index in tile_indices:
            self._uses[tile_index] -= 1
            if self._uses[tile_index] == 0:
                del self._live[tile_index]

    def clear(self) -> None:
        for future in self._live.values():
            future.cancel()
        self._live.clear()


def _check_vendor(path: str | Path, info: Any) -> None:
    vendor = getattr(info, "vendor", "unknown")
    if vendor not in VERIFIED_VENDORS:
        raise ReaderNotApplicableError(
            str(path),
            f"OpenSlide vendor {vendor!r}: only {', '.join(VERIFIED_VENDORS)} layouts are "
            "verified against OpenSlide",
        )


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"the tiff reader was asked to decode on {device!r} but CUDA is not available here; "
            "use device='cpu' (the default)."
        )


def _open_level(path: str | Path, info: Any, level: int) -> TiffLevel:
    try:
        return open_tiff_level(path, tuple(info.level_dimensions[level]))
    except TiffLayoutError as error:
        raise ReaderNotApplicableError(str(path), error.reason) from error


def _grid_positions(path: str | Path, info: Any, grid: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        return level_positions(grid.coords, info.level_downsamples[grid.level], grid.level)
    except ValueError as error:
        raise ReaderNotApplicableError(str(path), str(error)) from error


def _positions_of(indices: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """For each of ``ordered`` (a permutation of ``indices``), where it sits in ``indices``."""
    sorter = np.argsort(indices, kind="stable")
    found = sorter[np.searchsorted(indices, ordered, sorter=sorter)]
    if len(np.unique(indices)) != len(indices):
        # Repeated indices: hand out each occurrence once, in order.
        taken: dict[int, deque] = {}
        for where, index in enumerate(indices):
            taken.setdefault(int(index), deque()).append(where)
        found = np.array([taken[int(index)].popleft() for index in ordered], dtype=np.int64)
    return found


def _layout_summary(level: TiffLevel) -> dict[str, Any]:
    return {
        "codec": level.codec,
        "jpegtables": level.jpegtables is not None,
        "page": level.page_index,
        "stored_tile_size": [level.tile_width, level.tile_height],
    }


def _stats_dict(stats: ReaderStats) -> dict[str, Any]:
    return {
        "tiles_delivered": stats.tiles_delivered,
        "stored_tiles_decoded": stats.stored_tiles_decoded,
        "peak_decoded_tiles": stats.peak_decoded_tiles,
        "gpu_decoded": stats.gpu_decoded,
        "cpu_fallback_decodes": stats.cpu_fallback_decodes,
        "fallback_reasons": dict(stats.fallback_reasons),
    }


def _gpu_supply(reader: TiffTileReader):
    from histo_encoders.readers.gpu_decode import GpuTileSupply

    return GpuTileSupply(reader)
