"""Tiles straight from a TIFF slide's stored tiles: each stored tile decoded once, in threads.

OpenSlide's ``read_region`` decodes every stored tile a region touches, for every region, and
spends most of its time compositing. Here the level's raw tile bytes are read with ``pread``,
decoded by imagecodecs (JPEG straight to 4-byte RGBX pixels by libjpeg-turbo; other codecs
through tifffile's per-page decoder, which knows about JPEGTables, predictors) in a thread pool,
regions are cut from the decoded tiles and shrunk with :func:`histo_encoders.readers.resize.shrink_rgbx`,
which gives exactly the pixels of :func:`~histo_encoders.readers.resize.resize_tile`, the resize the
OpenSlide reader uses, so both readers' pixels agree within one grey level.

Output tiles are visited in the file's tile order (see :mod:`tile_plan`) and each decoded tile is
dropped once no pending output tile needs it, so memory stays bounded on any slide height.

Throughput on few cores is decided by the GIL. Decoding (libjpeg-turbo), cutting a region out
of the decoded tiles and shrinking it into its batch slot (compiled loops in
:mod:`histo_encoders.readers.kernels`) all run without it; what is left in Python is a few lines per
stored tile and per region, so two threads keep two cores busy. Each pool job takes several
neighbouring output tiles, and stored tiles are decoded by the first job that needs them (no
separate decode jobs to wait for). Batch and decoded-tile buffers are reused across streams
(:mod:`histo_encoders.readers.buffers`), since first-touch page faults of a fresh 38 MB float
batch cost as much as decoding 60 stored tiles.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_encoders.env import usable_cpus
from histo_encoders.errors import (
    DeviceUnavailableError,
    ReaderNotApplicableError,
    SlideError,
    SlideReadError,
)
from histo_encoders.readers.base import ReaderReport
from histo_encoders.readers.buffers import SPARE_BUFFERS, batch_array
from histo_encoders.readers.normalize import NormalizeTable
from histo_encoders.readers.resize import shrink_rgbx
from histo_encoders.readers.stored_tiles import (
    StoredTile,
    StoredTileCache,
    StoredTileDecoder,
    new_region,
    paste_region,
)
from histo_encoders.readers.tiff_layout import TiffLayoutError, TiffLevel, open_tiff_level
from histo_encoders.readers.tile_plan import ReadPlan, level_positions, plan_reads

# OpenSlide vendors whose level pages are plain tile grids, checked against read_region here.
# Others (Leica SCN, Ventana BIF, Philips, NDPI...) place, overlap or pad tiles their own way.
VERIFIED_VENDORS = ("aperio", "generic-tiff")
_TILES_PER_JOB = 8  # output tiles cut and resized per thread-pool job
_NUMPY_DTYPES = {torch.uint8: np.uint8, torch.float32: np.float32}


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
        """Threads the reader runs: ``num_threads``, or every CPU this process may use."""
        return self.num_threads if self.num_threads > 0 else usable_cpus()


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
    """Reads a :class:`~histo_encoders.slides.tiling.TileGrid`'s tiles from a TIFF slide's raw tiles.

    ``read_tiles(indices)`` returns tiles in the order asked; ``iter_batches`` streams them in
    file-tile order, which is what lets each stored tile be decoded only once. Raises
    ReaderNotApplicableError when the slide's layout, codec or tile positions are not ones this
    reader reproduces exactly, and SlideReadError when a stored tile cannot be decoded.
    """

    name = "tiff"
    streams = True

    def __init__(
        self,
        path: str | Path,
        info: Any,
        grid: Any,
        options: TiffReaderOptions | None = None,
        *,
        selection: str | None = None,
    ):
        self.path = str(path)
        self.info = info
        self.grid = grid
        self.options = options or TiffReaderOptions()
        self.selection = selection
        _check_device(self.options.device)
        self.stats = ReaderStats()
        _check_vendor(path, info)
        self.level = _open_level(path, info, grid.level)
        self._layout = _layout_summary(self.level)
        self._x, self._y = _grid_positions(path, info, grid)
        self._decoder: StoredTileDecoder | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._gpu = None

    def __getstate__(self) -> dict[str, Any]:
        # File handle, threads and tifffile's decoder stay behind: a worker process reopens them.
        state = self.__dict__.copy()
        state.update(level=None, _decoder=None, _pool=None, _gpu=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _ensure_open(self) -> None:
        """Open the file, the threads (and the GPU decoder) in the process that reads."""
        if self.level is None:
            self.level = _open_level(self.path, self.info, self.grid.level)
        if self._decoder is None:
            self._decoder = StoredTileDecoder(self.path, self.level, self.grid.level)
            self._pool = ThreadPoolExecutor(self.options.threads(), thread_name_prefix="tiff")
        if self._gpu is None and self.options.device.startswith("cuda"):
            self._gpu = _gpu_supply(self)

    # --- public API ----------------------------------------------------------------------

    def describe(self) -> ReaderReport:
        """Provenance of this reader: decode path, codec, threads and the counters so far."""
        if self.options.device.startswith("cuda"):
            self._ensure_open()  # the GPU path knows which tiles it can take only once open
        cpu_path = f"cpu:imagecodecs-{self._layout['codec']}"
        decode_path = self._gpu.decode_path() if self._gpu else cpu_path
        details = {**self._layout, "level": int(self.grid.level), "threads": self.options.threads()}
        # asdict copies: later reads do not change the report.
        return ReaderReport(self.name, decode_path, self.selection, details, asdict(self.stats))

    def read_stored_bytes(self, tile_indices: Sequence[int]) -> list[bytes | None]:
        """Raw bytes of stored tiles of the grid's level (None where the file omits a tile),
        read by the reader's threads."""
        self._ensure_open()
        return list(self._pool.map(self._decoder.read_bytes, tile_indices))

    def read_checked_bytes(self, tile_indices: Sequence[int]) -> list[bytes | None]:
        """Raw bytes of stored tiles, each JPEG tile checked as OpenSlide would judge it (for
        decoders that do not report damage, e.g. nvJPEG), by the reader's threads. Raises
        SlideReadError for a tile OpenSlide would refuse."""
        self._ensure_open()
        return list(self._pool.map(self._read_checked, tile_indices))

    def _read_checked(self, tile_index: int) -> bytes | None:
        data = self._decoder.read_bytes(tile_index)
        if data is not None and self.level.codec == "jpeg":
            self._decoder.check_jpeg(tile_index, data)
        return data

    def decode_stored_tiles(self, tile_indices: Sequence[int]) -> list[np.ndarray | None]:
        """Stored tiles as (tile_height, tile_width, 3) uint8 (None where the file omits a
        tile), decoded on the CPU by the reader's threads. Raises SlideReadError for damage."""
        self._ensure_open()
        return list(self._pool.map(self._decoder.decode_rgb, tile_indices))

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
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 64,
        *,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Stream tiles ``indices`` (default: the whole grid) in file-tile order.

        Yields (grid indices (B,) int64, tiles (B, t, t, 3) uint8 torch tensor). Tiles are on
        the CPU (pinned when ``pin_memory``), or on the GPU with ``device="cuda"``. The tensor
        is a reused buffer: it stays valid until the next batch is requested; copy it (or move
        it to the device) before then. Raises SlideReadError on a corrupt stored tile.

        ``normalize=(mean, std)`` (per channel, for pixels scaled to [0, 1]) yields float32
        tiles ``(x / 255 - mean) / std`` instead, still (B, t, t, 3); on the CPU each tile is
        normalized by the thread that resized it.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        indices = np.arange(len(self._x)) if indices is None else np.asarray(indices, np.int64)
        pin = self.options.pin_memory
        pin = torch.cuda.is_available() if pin is None else pin
        if normalize is None:
            yield from self._iter_batches(indices, batch_size, pin)
            return
        normalizer = NormalizeTable(*normalize)
        self._ensure_open()
        if self._gpu is not None:
            for batch_indices, tiles in self._iter_batches(indices, batch_size, pin):
                yield batch_indices, normalizer.on_device(tiles)
            return
        yield from self._iter_batches(indices, batch_size, pin, normalizer)

    def _iter_batches(
        self,
        indices: np.ndarray,
        batch_size: int,
        pin: bool,
        normalizer: NormalizeTable | None = None,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        self._ensure_open()
        plan = plan_reads(self._x[indices], self._y[indices], self.grid.read_size, self.level)
        if self._gpu is not None:
            yield from self._gpu.stream(plan, indices, batch_size)
            return
        yield from self._stream_cpu(plan, indices, batch_size, pin, normalizer)

    def close(self) -> None:
        """Stop the threads and close the file; reading again reopens them."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._gpu = None

    def __enter__(self) -> TiffTileReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- CPU pipeline --------------------------------------------------------------------

    def _stream_cpu(
        self,
        plan: ReadPlan,
        indices: np.ndarray,
        batch_size: int,
        pin: bool,
        normalizer: NormalizeTable | None,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        batches = [plan.order[i : i + batch_size] for i in range(0, len(plan.order), batch_size)]
        ring = max(1, min(self.options.prefetch_batches + 1, len(batches)))
        size = min(batch_size, len(plan.order))
        dtype = torch.uint8 if normalizer is None else torch.float32
        buffers = [self._batch_buffer(size, pin, dtype) for _ in range(ring)]
        decoder = self._decoder
        cache = StoredTileCache(
            plan.uses.copy(), decoder.decode_rgbx, self.stats, decoder.spare_key
        )
        pending: deque[tuple[np.ndarray, list[Future], torch.Tensor]] = deque()
        submit = self._submit_batch
        try:
            for number in range(min(ring, len(batches))):
                pending.append(submit(plan, batches[number], buffers[number], cache, normalizer))
            for number in range(len(batches)):
                positions, jobs, buffer = pending.popleft()
                for job in jobs:
                    self._result_of(job)
                for position in positions:
                    cache.release(plan.tiles_of(position, self.level))
                self.stats.tiles_delivered += len(positions)
                yield indices[positions], buffer[: len(positions)]
                # The consumer is done with this buffer: reuse it for the batch `ring` ahead.
                if number + ring < len(batches):
                    batch = batches[number + ring]
                    pending.append(submit(plan, batch, buffer, cache, normalizer))
            # Every job is done and the last batch was handed over: the next stream (or slide)
            # may reuse the buffers. Not after an error or an early stop: jobs may still run.
            for buffer in buffers:
                SPARE_BUFFERS.give(("batch", *buffer.shape, buffer.dtype, pin), buffer)
        finally:
            for _, jobs, _ in pending:
                for job in jobs:
                    job.cancel()
            cache.clear()

    def _result_of(self, job: Future) -> None:
        """Wait for a pool job; anything it raised is this slide's SlideReadError."""
        try:
            job.result()
        except SlideError:
            raise
        except Exception as error:  # a decoder or compiled loop failed on this slide's data
            raise SlideReadError(
                self.path, f"reading tiles failed: {type(error).__name__}: {error}"
            ) from error

    def _submit_batch(
        self,
        plan: ReadPlan,
        positions: np.ndarray,
        buffer: torch.Tensor,
        cache: StoredTileCache,
        normalizer: NormalizeTable | None,
    ) -> tuple[np.ndarray, list[Future], torch.Tensor]:
        work = [
            (slot, int(position), [cache.get(t) for t in plan.tiles_of(position, self.level)])
            for slot, position in enumerate(positions)
        ]
        # A few neighbouring output tiles per job: fewer hand-offs between threads, and the
        # threads' jobs share fewer stored tiles (a job decodes what it needs and nobody has).
        step = max(1, min(_TILES_PER_JOB, -(-len(work) // self.options.threads())))
        jobs = [
            self._pool.submit(self._cut_and_resize, plan, work[i : i + step], buffer, normalizer)
            for i in range(0, len(work), step)
        ]
        return positions, jobs, buffer

    def _cut_and_resize(
        self,
        plan: ReadPlan,
        work: list[tuple[int, int, list[StoredTile]]],
        buffer: torch.Tensor,
        normalizer: NormalizeTable | None,
    ) -> None:
        """Cut, shrink (and normalize) consecutive output tiles into their ``buffer`` slots,
        in a pool thread. Cutting and shrinking are compiled calls that release the GIL, so
        the threads seldom wait for each other; one region buffer per job stays in cache
        between the cut and the shrink."""
        key = ("region", plan.read_size)
        spare = SPARE_BUFFERS.take(key)
        region = spare if spare is not None else new_region(plan.read_size)
        table = None if normalizer is None else normalizer.table
        try:
            for slot, position, tiles in work:
                # Decode first what no other thread is decoding, then wait for the rest.
                for tile in tiles:
                    tile.decode_unless_busy()
                decoded = [(tile.index, tile.value()) for tile in tiles]
                x, y = int(plan.x[position]), int(plan.y[position])
                paste_region(region, x, y, decoded, self.level)
                out = buffer[slot : slot + 1].numpy()
                shrink_rgbx(region[None], self.grid.tile_size, out, table)
        finally:
            SPARE_BUFFERS.give(key, region)

    def _batch_buffer(self, batch_size: int, pin: bool, dtype: torch.dtype) -> torch.Tensor:
        shape = (batch_size, self.grid.tile_size, self.grid.tile_size, 3)
        spare = SPARE_BUFFERS.take(("batch", *shape, dtype, pin))
        if spare is not None:
            return spare
        if pin:  # page-locked: the copy to the GPU then runs asynchronously
            return torch.empty(shape, dtype=dtype, pin_memory=True)
        return torch.from_numpy(batch_array(shape, _NUMPY_DTYPES[dtype]))


def _check_vendor(path: str | Path, info: Any) -> None:
    vendor = info.vendor
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


def _gpu_supply(reader: TiffTileReader):
    from histo_encoders.readers.gpu_decode import GpuTileSupply

    return GpuTileSupply(reader)
