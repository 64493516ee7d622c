"""Throughput, side by side in one run on one slide: where the time of an embedding goes.

Tile supply (no model): the path ``embed`` runs (:func:`histo_encoders.pipeline.supply.
tile_supply` over the TIFF reader, up to the tensor the model takes), against the field's usual
loader and the JPEG decode floor (:mod:`.baselines`). All deliver normalized float batches of the
same tiles. With a model: model-only throughput on tiles already in memory versus end-to-end
embedding of the same tiles (``histo_encoders.pipeline.embed.embed_tiles``), and their ratio.

Machines are shared and noisy: every measurement is repeated and the best run is reported,
with all runs kept in the result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_encoders.encoders import IMAGENET_MEAN, IMAGENET_STD
from histo_encoders.env import usable_cpus
from histo_encoders.tools import baselines
from histo_encoders.tools.benchmark_report import (
    SUPPLY,
    BenchmarkResult,
    LoaderResult,
    ModelResult,
    format_report,
)
from histo_encoders.tools.timing import Stopwatch

__all__ = [
    "BenchmarkOptions",
    "BenchmarkResult",
    "LoaderResult",
    "ModelResult",
    "benchmark_slide",
    "format_report",
    "run_benchmark",
]

# The workload the throughput issue measured: an Aperio SVS at 0.2528 um/px, JPEG 256 px tiles.
BENCHMARK_SLIDE = {"width": 9000, "height": 7000, "mpp": 0.2528, "tile": 256}
_NORMALIZE = (IMAGENET_MEAN, IMAGENET_STD)


@dataclass(frozen=True)
class BenchmarkOptions:
    """What to measure.

    Tiles of ``tile_size`` px at ``target_mpp`` over the whole slide (or the first
    ``max_tiles``), delivered in batches of ``batch_size``. ``threads``: TIFF reader threads (0:
    every CPU, as ``embed`` runs it). ``openslide_workers``: DataLoader worker counts for the
    OpenSlide loop. ``decode_threads``: thread counts for the decode floor. ``repeats``: runs per
    measurement (best reported). ``model_tiles``: tiles used for model-only vs end-to-end.
    """

    target_mpp: float = 0.5
    tile_size: int = 224
    batch_size: int = 64
    threads: int = 0
    openslide_workers: tuple[int, ...] = (0, 2)
    decode_threads: tuple[int, ...] = (1, 2)
    repeats: int = 3
    max_tiles: int | None = None
    model_tiles: int = 256
    device: str = "auto"
    precision: str = "auto"


def benchmark_slide(cache_dir: str | Path | None = None) -> Path:
    """The benchmark's synthetic SVS (9000 x 7000 px, 0.2528 um/px, JPEG 256 px tiles).

    Written once into ``cache_dir`` (default: a folder in the system temp dir) and reused.
    """
    import tempfile

    from histo_encoders.atomic import atomic_write
    from histo_encoders.tools.synthetic import write_synthetic_slide

    folder = Path(cache_dir or Path(tempfile.gettempdir()) / "histo-encoders-benchmark")
    folder.mkdir(parents=True, exist_ok=True)
    spec = BENCHMARK_SLIDE
    path = folder / f"synthetic-{spec['width']}x{spec['height']}-{spec['mpp']}-jpeg.svs"
    if not path.exists():
        size = {"width": spec["width"], "height": spec["height"], "mpp": spec["mpp"]}
        atomic_write(
            path,
            lambda temporary: write_synthetic_slide(
                temporary, **size, kind="svs", compression="jpeg", tile=spec["tile"]
            ),
        )
    return path


def run_benchmark(
    slide: str | Path | None = None,
    *,
    model: Any = None,
    options: BenchmarkOptions | None = None,
    cache_dir: str | Path | None = None,
) -> BenchmarkResult:
    """Measure tile supply (and, given ``model``, model-only vs end-to-end) on one slide.

    ``slide`` defaults to :func:`benchmark_slide`. ``model``: an encoder name, a torch module
    or a ``PreparedEncoder``. Raises what ``open_slide``/``plan_tiles`` raise for the slide, and
    ReaderNotApplicableError when the slide is not one the TIFF reader reads.
    """
    from histo_encoders.slides import open_slide, plan_tiles

    options = options or BenchmarkOptions()
    path = Path(slide) if slide is not None else benchmark_slide(cache_dir)
    with open_slide(path) as opened:
        info = opened.info
    grid = plan_tiles(info, options.target_mpp, options.tile_size)
    indices = np.arange(len(grid.coords))[: options.max_tiles]
    with _one_torch_thread():
        loaders = _measure_loaders(path, info, grid, indices, options)
    measured = None if model is None else measure_model(path, info, grid, indices, model, options)
    return BenchmarkResult(
        _slide_summary(path, info, grid, len(indices)), _machine(), options, loaders, measured
    )


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Per-tile torch ops (ToTensor, Normalize) on several intra-op threads can be 50x slower
    on a busy machine; DataLoader workers use one thread, so every loader here does too."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _measure_loaders(path, info, grid, indices, options) -> dict[str, LoaderResult]:
    """Every loader once per repeat, interleaved so that load from elsewhere hits all alike."""
    # Untimed: the first read in a process loads the reader's compiled kernels (numba's disk
    # cache, or a compile of a few seconds after an upgrade). That is start-up, not reading.
    measure_supply(path, info, grid, indices[: options.batch_size], options)
    runs: dict[str, list[LoaderResult]] = {}
    for _ in range(max(1, options.repeats)):
        runs.setdefault(SUPPLY, []).append(measure_supply(path, info, grid, indices, options))
        if torch.cuda.is_available() and options.device != "cpu":
            gpu = measure_supply(path, info, grid, indices, options, device="cuda")
            runs.setdefault(f"{SUPPLY}_gpu", []).append(gpu)
        for workers in options.openslide_workers:
            loop = measure_openslide_loop(path, grid, indices, workers, options)
            runs.setdefault(loop.name, []).append(loop)
        for threads in options.decode_threads:
            floor = measure_decode_floor(path, info, threads)
            runs.setdefault(floor.name, []).append(floor)
    return {name: _best(measured) for name, measured in runs.items()}


def measure_supply(
    path, info, grid, indices, options: BenchmarkOptions, device: str = "cpu"
) -> LoaderResult:
    """``embed``'s own tile supply over the TIFF reader, each batch made into the tensor the
    model takes (normalized float, NCHW, on the device); tiles/s.

    On the CPU the reader's threads normalize each tile as they shrink it; on CUDA the tiles
    are decoded with nvJPEG and normalized on the device, exactly as ``embed`` does."""
    from histo_encoders.pipeline.inference import model_input
    from histo_encoders.pipeline.supply import tile_supply
    from histo_encoders.readers import TiffReaderOptions, open_reader

    target = torch.device(device)
    tiff_options = TiffReaderOptions(num_threads=options.threads, device=device)
    reader = open_reader(path, info, grid, kind="tiff", tiff_options=tiff_options)
    try:
        supply = tile_supply(
            reader,
            indices,
            batch_size=options.batch_size,
            workers=0,
            device=target,
            normalize=_NORMALIZE,
        )
        with Stopwatch() as watch:
            count = 0
            for batch in supply:
                model_input(batch, target, *_NORMALIZE)
                count += len(batch)
            if target.type == "cuda":
                torch.cuda.synchronize()
        report = reader.describe()
    finally:
        reader.close()
    label = (
        f"embed supply: tiff reader, decode once ({report.details['threads']} threads)"
        if device == "cpu"
        else f"embed supply: tiff reader, {report.decode_path}"
    )
    details = {
        "threads": report.details["threads"],
        "decode_path": report.decode_path,
        "stored_tiles_decoded": report.stats["stored_tiles_decoded"],
        "peak_decoded_tiles": report.stats["peak_decoded_tiles"],
    }
    name = SUPPLY if device == "cpu" else f"{SUPPLY}_gpu"
    return LoaderResult(name, label, count, watch.seconds, watch.cores_used, details=details)


def measure_openslide_loop(
    path, grid, indices, workers: int, options: BenchmarkOptions
) -> LoaderResult:
    """The field's loader with ``workers`` DataLoader processes; tiles/s."""
    count, watch = baselines.openslide_loop(
        path, grid, indices, workers=workers, batch_size=options.batch_size, normalize=_NORMALIZE
    )
    label = f"openslide read_region loop ({workers} workers)"
    # The workers' CPU time counts once they have exited, which they have by now.
    return LoaderResult(
        f"openslide_loop_{workers}_workers",
        label,
        count,
        watch.seconds,
        watch.cores_used,
        details={"workers": workers},
    )


def measure_decode_floor(path, info, threads: int) -> LoaderResult:
    """Every level-0 stored tile decoded once with ``threads`` threads; stored tiles/s."""
    count, codec, watch = baselines.decode_floor(path, info, threads)
    return LoaderResult(
        f"decode_floor_{threads}_threads",
        f"JPEG decode floor, {threads} threads (as output tiles)",
        count,
        watch.seconds,
        watch.cores_used,
        stored=True,
        details={"threads": threads, "codec": codec},
    )


def measure_model(path, info, grid, indices, model, options: BenchmarkOptions) -> ModelResult:
    """Model-only tiles/s (tiles already in memory) vs end-to-end ``embed_tiles`` on the same
    tiles."""
    from histo_encoders.pipeline.embed import embed_tiles, prepare_encoder
    from histo_encoders.pipeline.options import EmbedOptions

    embed_options = EmbedOptions(
        batch_size=options.batch_size,
        device=options.device,
        precision=options.precision,
        workers=0,
        reader="auto",
    )
    prepared = prepare_encoder(model, embed_options)
    subset = indices[: options.model_tiles]
    tiles = _read_all(path, info, grid, subset)
    _run_model(prepared, tiles[: options.batch_size], options.batch_size)  # warm-up
    start = time.perf_counter()
    _run_model(prepared, tiles, options.batch_size)
    model_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _, report = embed_tiles(path, info, grid, prepared, embed_options, indices=subset)
    end_to_end_seconds = time.perf_counter() - start
    return ModelResult(
        encoder=prepared.spec.name,
        device=str(prepared.device),
        precision=prepared.precision,
        tiles=len(subset),
        model_only_tiles_per_s=len(subset) / model_seconds,
        end_to_end_tiles_per_s=len(subset) / end_to_end_seconds,
        reader=report.reader,
    )


def _read_all(path, info, grid, indices: np.ndarray) -> torch.Tensor:
    from histo_encoders.readers import open_reader

    reader = open_reader(path, info, grid)
    try:
        return torch.from_numpy(reader.read_tiles(indices))
    finally:
        reader.close()


def _run_model(prepared: Callable, tiles: torch.Tensor, batch_size: int) -> None:
    from histo_encoders.pipeline.inference import to_numpy_features

    for start in range(0, len(tiles), batch_size):
        # The host copy waits for the device to finish.
        to_numpy_features(prepared(tiles[start : start + batch_size]))


def _best(measured: list[LoaderResult]) -> LoaderResult:
    best = max(measured, key=lambda run: run.rate)
    return LoaderResult(
        best.name,
        best.label,
        best.count,
        best.seconds,
        best.cores_used,
        best.stored,
        tuple(round(run.rate, 1) for run in measured),
        best.details,
    )


def _slide_summary(path: Path, info: Any, grid: Any, tiles: int) -> dict[str, Any]:
    return {
        "path": str(path),
        "width": int(info.dimensions[0]),
        "height": int(info.dimensions[1]),
        "mpp": float(info.mpp),
        "vendor": info.vendor,
        "level": int(grid.level),
        "read_size": int(grid.read_size),
        "tile_size": int(grid.tile_size),
        "target_mpp": float(grid.target_mpp),
        "tiles": tiles,
    }


def _machine() -> dict[str, Any]:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"cpus": usable_cpus(), "torch": torch.__version__, "device": device}
