"""Throughput, side by side in one run on one slide: where the time of an embedding goes.

Tile supply (no model): the TIFF reader's decode-once stream, the field's usual loader (a
CLAM-style Dataset calling OpenSlide ``read_region`` per tile, PIL resize, ToTensor/Normalize,
with 0 and 2 DataLoader workers), and the floor set by JPEG decoding alone (every level-0 stored
tile decoded once, 1 and 2 threads). All deliver normalized float batches of the same tiles.
With a model: model-only throughput on tiles already in memory versus end-to-end embedding of
the same tiles (``histo_encoders.embed.embed_tiles``), and their ratio.

Machines are shared and noisy: every measurement is repeated and the best run is reported,
with all runs kept in the result.
"""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from histo_encoders.readers.tiff_layout import RawTileSource, open_tiff_level
from histo_encoders.readers.tiff_reader import TiffReaderOptions, TiffTileReader

# The workload the throughput issue measured: an Aperio SVS at 0.2528 um/px, JPEG 256 px tiles.
BENCHMARK_SLIDE = {"width": 9000, "height": 7000, "mpp": 0.2528, "tile": 256}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BenchmarkOptions:
    """What to measure.

    Tiles of ``tile_size`` px at ``target_mpp`` over the whole slide (or the first
    ``max_tiles``), delivered in batches of ``batch_size``. ``threads``: TIFF reader threads (0:
    every CPU). ``openslide_workers``: DataLoader worker counts for the OpenSlide loop.
    ``decode_threads``: thread counts for the decode floor. ``repeats``: runs per measurement
    (best reported). ``model_tiles``: tiles used for model-only vs end-to-end.
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
    from histo_encoders.synthetic import write_synthetic_slide

    folder = Path(cache_dir or Path(tempfile.gettempdir()) / "histo-encoders-benchmark")
    folder.mkdir(parents=True, exist_ok=True)
    spec = BENCHMARK_SLIDE
    path = folder / f"synthetic-{spec['width']}x{spec['height']}-{spec['mpp']}-jpeg.svs"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.partial")  # renamed whole: never half a file
        write_synthetic_slide(
            partial,
            width=spec["width"],
            height=spec["height"],
            mpp=spec["mpp"],
            kind="svs",
            compression="jpeg",
            tile=spec["tile"],
        )
        partial.replace(path)
    return path


def run_benchmark(
    slide: str | Path | None = None,
    *,
    model: Any = None,
    options: BenchmarkOptions | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Measure tile supply (and, given ``model``, model-only vs end-to-end) on one slide.

    ``slide`` defaults to :func:`benchmark_slide`. ``model``: an encoder name, a torch module
    or a ``PreparedEncoder``. Returns a plain dict (JSON-serialisable) for :func:`format_report`.
    Raises what ``open_slide``/``plan_tiles`` raise for the slide, and ReaderNotApplicableError
    when the slide is not one the TIFF reader reads.
    """
    from histo_encoders.slide import open_slide
    from histo_encoders.tiling import plan_tiles

    options = options or BenchmarkOptions()
    path = Path(slide) if slide is not None else benchmark_slide(cache_dir)
    with open_slide(path) as opened:
        info = opened.info
    grid = plan_tiles(info, options.target_mpp, options.tile_size)
    indices = np.arange(len(grid.coords))[: options.max_tiles]
    loaders = _measure_loaders(path, info, grid, indices, options)
    result: dict[str, Any] = {
        "slide": _slide_summary(path, info, grid, len(indices)),
        "machine": _machine(options),
        "options": asdict(options),
        "loaders": loaders,
        "ratios": _ratios(loaders),
    }
    if model is not None:
        result["model"] = measure_model(path, info, grid, indices, model, options)
    return result


def _measure_loaders(path, info, grid, indices, options) -> dict[str, dict[str, Any]]:
    """Every loader once per repeat, interleaved so that load from elsewhere hits all alike."""
    with _one_torch_thread():
        return _measure_loaders_once_each(path, info, grid, indices, options)


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


def _measure_loaders_once_each(path, info, grid, indices, options) -> dict[str, dict[str, Any]]:
    # Untimed: the first read in a process loads the reader's compiled kernels (numba's disk
    # cache, or a compile of a few seconds after an upgrade). That is start-up, not reading.
    measure_tiff_reader(path, info, grid, indices[: options.batch_size], options)
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(max(1, options.repeats)):
        _add(runs, "tiff_reader", measure_tiff_reader(path, info, grid, indices, options))
        if _gpu_wanted(options):
            gpu_run = measure_tiff_reader(path, info, grid, indices, options, device="cuda")
            _add(runs, "tiff_reader_gpu", gpu_run)
        for workers in options.openslide_workers:
            name = f"openslide_loop_{workers}_workers"
            _add(runs, name, measure_openslide_loop(path, grid, indices, workers, options))
        for threads in options.decode_threads:
            name = f"decode_floor_{threads}_threads"
            _add(runs, name, measure_decode_floor(path, info, threads))
    return {name: _best(measured) for name, measured in runs.items()}


def measure_tiff_reader(
    path, info, grid, indices, options: BenchmarkOptions, device: str = "cpu"
) -> dict[str, Any]:
    """The TIFF reader streaming ``indices`` into normalized float batches; tiles/s.

    On the CPU the reader's threads normalize each tile as they resize it (as DataLoader
    workers do in the OpenSlide loop); ``device="cuda"`` decodes with nvJPEG and normalizes
    on the GPU."""
    reader_options = TiffReaderOptions(num_threads=options.threads, device=device)
    reader = TiffTileReader(path, info, grid, reader_options)
    normalize = (_IMAGENET_MEAN, _IMAGENET_STD)
    try:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        count = 0
        for batch_indices, tiles in reader.iter_batches(
            indices, options.batch_size, normalize=normalize
        ):
            tiles.permute(0, 3, 1, 2)  # NCHW (channels_last), as the model takes them
            count += len(batch_indices)
        if device != "cpu":
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        described = reader.describe()
    finally:
        reader.close()
    stats = described["stats"]
    return {
        "tiles": count,
        "seconds": seconds,
        "tiles_per_s": count / seconds,
        "cores_used": cpu / seconds,
        "threads": described["threads"],
        "decode_path": described["decode_path"],
        "stored_tiles_decoded": stats["stored_tiles_decoded"],
        "peak_decoded_tiles": stats["peak_decoded_tiles"],
    }


def measure_openslide_loop(
    path, grid, indices, workers: int, options: BenchmarkOptions
) -> dict[str, Any]:
    """The field's loader: a Dataset of OpenSlide ``read_region`` + PIL resize + ToTensor /
    Normalize per tile, batched by a DataLoader with ``workers`` processes; tiles/s."""
    dataset = _ClamStyleTiles(
        str(path), grid.coords[indices], grid.level, grid.read_size, grid.tile_size
    )
    loader = DataLoader(dataset, batch_size=options.batch_size, num_workers=workers)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    count = sum(len(batch) for batch in loader)  # worker start-up included, as users pay it
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return {
        "tiles": count,
        "seconds": seconds,
        "tiles_per_s": count / seconds,
        "cores_used": cpu / seconds,  # the workers' time counts once they have exited
        "workers": workers,
    }


def measure_decode_floor(path, info, threads: int) -> dict[str, Any]:
    """Every level-0 stored tile decoded once (bytes read beforehand), with ``threads`` threads.

    Returns stored tiles/s; :func:`_ratios` turns it into output tiles/s using how many stored
    tiles the reader decoded per output tile.
    """
    level = open_tiff_level(path, tuple(info.level_dimensions[0]))
    source = RawTileSource(path, level)
    try:
        data = [source.read(index) for index in range(level.tile_count)]
    finally:
        source.close()

    def decode(index: int) -> None:
        if data[index] is not None:
            level.decode(data[index], index, jpegtables=level.jpegtables)

    with ThreadPoolExecutor(threads) as pool:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        for _ in pool.map(decode, range(level.tile_count)):
            pass
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return {
        "stored_tiles": level.tile_count,
        "seconds": seconds,
        "stored_tiles_per_s": level.tile_count / seconds,
        "cores_used": cpu / seconds,
        "threads": threads,
        "codec": level.codec,
    }


def measure_model(path, info, grid, indices, model, options: BenchmarkOptions) -> dict[str, Any]:
    """Model-only tiles/s (tiles already in memory) vs end-to-end ``embed_tiles`` on the same
    tiles, and end-to-end as a fraction of model-only."""
    from histo_encoders.embed import EmbedOptions, embed_tiles, prepare_encoder

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
    _, reader_attrs = embed_tiles(path, info, grid, prepared, embed_options, indices=subset)
    end_to_end_seconds = time.perf_counter() - start
    model_rate = len(subset) / model_seconds
    end_to_end_rate = len(subset) / end_to_end_seconds
    return {
        "encoder": prepared.spec.name,
        "device": str(prepared.device),
        "precision": prepared.precision,
        "tiles": len(subset),
        "model_only_tiles_per_s": model_rate,
        "end_to_end_tiles_per_s": end_to_end_rate,
        "end_to_end_fraction": end_to_end_rate / model_rate,
        "reader": reader_attrs.get("reader"),
    }


def format_report(result: dict[str, Any]) -> str:
    """A printable side-by-side table of :func:`run_benchmark`'s result."""
    slide, machine, loaders = result["slide"], result["machine"], result["loaders"]
    ratios = result["ratios"]
    lines = [
        f"Slide: {slide['path']} ({slide['width']}x{slide['height']} px, {slide['mpp']:g} um/px,"
        f" vendor {slide['vendor']})",
        f"Work: {slide['tiles']} tiles, {slide['read_size']} px regions at level {slide['level']}"
        f" -> {slide['tile_size']} px at {slide['target_mpp']:g} um/px, normalized float batches",
        f"Machine: {machine['cpus']} CPUs, torch {machine['torch']} (1 intra-op thread while"
        f" timing loaders), device {machine['device']}",
        "",
        f"{'loader':<44}{'tiles/s':>10}{'vs openslide':>14}{'cores used':>12}",
    ]
    reference = ratios.get("reference_loader")
    for name, measured in loaders.items():
        rate = measured.get("tiles_per_s", ratios.get(f"{name}_output_tiles_per_s"))
        if rate is None:
            continue
        versus = f"{rate / loaders[reference]['tiles_per_s']:.1f}x" if reference else "-"
        cores = f"{measured['cores_used']:.2f}" if "cores_used" in measured else "-"
        lines.append(f"{_label(name, measured):<44}{rate:>10.1f}{versus:>14}{cores:>12}")
    lines.append("")
    for name, measured in loaders.items():
        if "stored_tiles_per_s" in measured:
            lines.append(
                f"{_label(name, measured)}: {measured['stored_tiles_per_s']:.0f} stored tiles/s"
                f" ({measured['stored_tiles']} {measured['codec']} tiles)"
            )
    for key, value in ratios.items():
        if key.startswith("tiff_reader_vs_"):
            lines.append(f"tiff reader / {key.removeprefix('tiff_reader_vs_')}: {value:.2f}x")
    if "model" in result:
        m = result["model"]
        lines += [
            "",
            f"Model {m['encoder']} on {m['device']} ({m['precision']}), {m['tiles']} tiles:",
            f"  model only   {m['model_only_tiles_per_s']:10.1f} tiles/s",
            f"  end to end   {m['end_to_end_tiles_per_s']:10.1f} tiles/s  (reader {m['reader']})",
            f"  end to end / model only: {m['end_to_end_fraction']:.0%}",
        ]
    return "\n".join(lines)


# --- helpers -----------------------------------------------------------------------------------


class _ClamStyleTiles(Dataset):
    """What CLAM-style pipelines do per tile; opens OpenSlide lazily in each worker."""

    def __init__(self, path: str, coords: np.ndarray, level: int, read_size: int, tile_size: int):
        from torchvision import transforms

        self.path = path
        self.coords = np.asarray(coords)
        self.level = level
        self.read_size = read_size
        self.tile_size = tile_size
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)]
        )
        self._slide: openslide.OpenSlide | None = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._slide is None:
            self._slide = openslide.OpenSlide(self.path)
        x, y = (int(v) for v in self.coords[index])
        size = (self.read_size, self.read_size)
        image = self._slide.read_region((x, y), self.level, size).convert("RGB")
        if self.read_size != self.tile_size:
            image = image.resize((self.tile_size, self.tile_size), Image.Resampling.BOX)
        return self.transform(image)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_slide": None}


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process's threads and its exited children (DataLoader
    workers): divided by wall time, how many cores a loader kept busy."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _read_all(path, info, grid, indices: np.ndarray) -> torch.Tensor:
    from histo_encoders.readers import open_reader

    reader = open_reader(path, info, grid)
    try:
        return torch.from_numpy(reader.read_tiles(indices))
    finally:
        reader.close()


def _run_model(prepared: Callable, tiles: torch.Tensor, batch_size: int) -> None:
    from histo_encoders.inference import to_numpy_features

    for batch in _chunks(tiles, batch_size):
        to_numpy_features(prepared(batch))  # the host copy waits for the device to finish


def _chunks(tiles: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(tiles), size):
        yield tiles[start : start + size]


def _add(runs: dict[str, list], name: str, measured: dict[str, Any]) -> None:
    runs.setdefault(name, []).append(measured)


def _best(measured: list[dict[str, Any]]) -> dict[str, Any]:
    key = "tiles_per_s" if "tiles_per_s" in measured[0] else "stored_tiles_per_s"
    best = dict(max(measured, key=lambda run: run[key]))
    best["runs"] = [round(run[key], 1) for run in measured]
    return best


def _ratios(loaders: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """tiff reader vs each loader; decode floors as output tiles/s (stored per output tile)."""
    tiff = loaders["tiff_reader"]
    stored_per_output = tiff["stored_tiles_decoded"] / max(1, tiff["tiles"])
    ratios: dict[str, Any] = {"stored_tiles_per_output_tile": stored_per_output}
    for name, measured in loaders.items():
        if "stored_tiles_per_s" in measured:
            ratios[f"{name}_output_tiles_per_s"] = (
                measured["stored_tiles_per_s"] / stored_per_output
            )
    openslide_names = [name for name in loaders if name.startswith("openslide_loop")]
    ratios["reference_loader"] = openslide_names[0] if openslide_names else None
    for name in loaders:
        if name == "tiff_reader":
            continue
        rate = loaders[name].get("tiles_per_s", ratios.get(f"{name}_output_tiles_per_s"))
        ratios[f"tiff_reader_vs_{name}"] = tiff["tiles_per_s"] / rate
    return ratios


def _label(name: str, measured: dict[str, Any]) -> str:
    if name == "tiff_reader":
        return f"tiff reader, decode once ({measured['threads']} threads)"
    if name == "tiff_reader_gpu":
        return f"tiff reader, {measured['decode_path']}"
    if name.startswith("openslide_loop"):
        return f"openslide read_region loop ({measured['workers']} workers)"
    return f"JPEG decode floor, {measured['threads']} threads (as output tiles)"


def _gpu_wanted(options: BenchmarkOptions) -> bool:
    return torch.cuda.is_available() and options.device != "cpu"


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


def _machine(options: BenchmarkOptions) -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"cpus": cpus, "torch": torch.__version__, "device": device}
