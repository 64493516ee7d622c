"""Embed a whole slide: tissue -> tile grid -> reader workers -> device normalization -> model.

Tiles arrive as uint8 and are normalized on the device (``inference.PreparedEncoder``). Two tile
supplies overlap reading with the model: a reader that streams in file order (the TIFF reader,
``iter_batches``) decodes ahead in its own threads in this process; any other (OpenSlide) is read
by ``workers`` DataLoader processes whose items are whole batches, each worker opening its own
handle (OpenSlide handles must not cross a fork). Either way only a few batches wait in memory
(``workers * 2``, or the reader's prefetch), whatever the size of the slide. A region that cannot be decoded even after the reader's reopen-and-retry fails the
slide with SlideReadError; features that are not finite fail it with NonFiniteFeaturesError.
Nothing here ever writes NaN features.
"""

from __future__ import annotations

import importlib.metadata
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from histo_encoders.errors import ConfigError, NonFiniteFeaturesError, SlideError
from histo_encoders.features_io import FORMAT_VERSION, settings_fingerprint
from histo_encoders.inference import (
    PreparedEncoder,
    resolve_device,
    resolve_precision,
    to_numpy_features,
    weights_fingerprint,
)
from histo_encoders.tissue import TissueSettings

if TYPE_CHECKING:
    from histo_encoders.slide import SlideInfo
    from histo_encoders.tiling import TileGrid

DEFAULT_ENCODER = "moco-camelyon"
_PREFETCH_BATCHES = 2  # per worker: enough to hide decode jitter, small enough to bound memory


def default_workers() -> int:
    """Reader processes by default: one per CPU this process may use, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cpus or 1))


@dataclass(frozen=True)
class EmbedOptions:
    """How slides are tiled and embedded.

    ``tissue`` holds the tissue detection and the per-tile ``min_tissue`` fraction.
    ``mpp`` / ``tile_size`` default to what the encoder was trained on; ``slide_mpp`` overrides
    the resolution the slide records (for files without one, or with a wrong one). ``device`` is
    "auto" | "cpu" | "cuda" | "cuda:N"; ``precision`` "auto" (bf16 on GPU, fp32 on CPU) | "fp32"
    | "bf16". ``workers`` reader processes for OpenSlide (0 reads in the calling process; default
    one per CPU, at most 8). ``reader`` picks the
    tile reader ("auto", "openslide", "tiff"). ``gpu_decode``: when the model runs on CUDA and
    the TIFF reader applies, decode JPEG tiles with nvJPEG and cut/resize them on the GPU.
    """

    mpp: float | None = None
    tile_size: int | None = None
    slide_mpp: float | None = None
    batch_size: int = 64
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    tissue: TissueSettings = field(default_factory=TissueSettings)
    reader: str = "auto"
    gpu_decode: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        for name in ("mpp", "slide_mpp"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive microns per pixel, got {value}")

    def with_updates(self, **changes: Any) -> EmbedOptions:
        """A copy with ``changes`` applied; unknown names raise TypeError."""
        return replace(self, **changes)


@dataclass(frozen=True)
class SlideEmbedding:
    """Features of one slide: ``features`` (N, D) float32, ``coords`` (N, 2) int64 level-0 x, y
    of each tile's top-left corner, and ``attrs`` (provenance, as written to the HDF5 file)."""

    features: np.ndarray
    coords: np.ndarray
    attrs: Mapping[str, Any]

    @property
    def n_tiles(self) -> int:
        """Number of tiles (rows of ``features``)."""
        return int(self.features.shape[0])


def embed_slide(
    path: str | Path,
    encoder: str | torch.nn.Module | PreparedEncoder = DEFAULT_ENCODER,
    *,
    options: EmbedOptions | None = None,
    **overrides: Any,
) -> SlideEmbedding:
    """Embed every tissue tile of the slide at ``path``.

    ``encoder`` is a registered name, hub id or local folder (loaded with
    ``histo_encoders.load``), an already loaded model, or a :class:`PreparedEncoder`.
    ``overrides`` replace fields of ``options``, e.g. ``embed_slide(p, device="cuda")``.
    A slide without tissue gives (0, D) features and a ``note`` attribute.

    Raises SlideOpenError, MissingMppError, ImplausibleMppError, TargetResolutionError,
    SlideReadError or NonFiniteFeaturesError for this slide; ConfigError or the loading errors
    of ``histo_encoders.load`` for the encoder; DeviceUnavailableError for a missing device.
    """
    options = (options or EmbedOptions()).with_updates(**overrides)
    prepared = prepare_encoder(encoder, options)
    return embed_prepared(path, prepared, options)


def prepare_encoder(
    encoder: str | torch.nn.Module | PreparedEncoder,
    options: EmbedOptions,
    *,
    local_rank: int = 0,
) -> PreparedEncoder:
    """Load (if named) and place the encoder on the device with the options' precision."""
    if isinstance(encoder, PreparedEncoder):
        return encoder
    device = resolve_device(options.device, local_rank=local_rank)
    if isinstance(encoder, str | Path):
        from histo_encoders.build import load  # deferred: keeps `import embed` light

        encoder = load(str(encoder))
    return PreparedEncoder(
        encoder,
        device=device,
        precision=resolve_precision(options.precision, device),
        channels_last=options.channels_last,
        compile=options.compile,
        pad_to=options.batch_size,
    )


def target_geometry(prepared: PreparedEncoder, options: EmbedOptions) -> tuple[float, int]:
    """(target mpp, tile size): the options' if given, else the encoder's training conditions."""
    spec = prepared.spec
    mpp = options.mpp if options.mpp is not None else spec.mpp
    tile_size = options.tile_size if options.tile_size is not None else spec.tile_size
    if mpp is None:
        raise ConfigError(
            f"Encoder {spec.name!r} does not record the resolution it was trained at: give the "
            "target resolution with --mpp (Python: mpp=0.5), in microns per pixel."
        )
    if tile_size is None:
        raise ConfigError(
            f"Encoder {spec.name!r} does not record its tile size: give --tile-size "
            "(Python: tile_size=224)."
        )
    return float(mpp), int(tile_size)


def run_settings(prepared: PreparedEncoder, options: EmbedOptions) -> dict[str, Any]:
    """Everything that changes the features of a slide (not batch size, workers or device)."""
    spec = prepared.spec
    mpp, tile_size = target_geometry(prepared, options)
    weights = spec.weights_sha256 or f"in-memory:{weights_fingerprint(prepared.model)}"
    return {
        "format_version": FORMAT_VERSION,
        "encoder": spec.name,
        "hub_id": spec.hub_id,
        "revision": spec.revision,
        "weights": weights,
        "target_mpp": mpp,
        "tile_size": tile_size,
        "slide_mpp_override": options.slide_mpp,
        "tissue": asdict(options.tissue),
        "precision": prepared.precision,
        "reader": options.reader,
    }


def slide_fingerprint(path: str | Path, settings: Mapping[str, Any]) -> str:
    """Fingerprint of the run settings plus the slide file's name and size.

    The size is included so that a different file under the same name is embedded again.
    """
    path = Path(path)
    size = path.stat().st_size if path.exists() else -1
    return settings_fingerprint({**settings, "slide_name": path.name, "slide_file_size": size})


def embed_prepared(
    path: str | Path,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    *,
    settings: Mapping[str, Any] | None = None,
    preview_path: str | Path | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SlideEmbedding:
    """Embed one slide with an encoder already on its device (what batch runs call per slide).

    ``preview_path`` also writes the thumbnail / tissue / grid PNG there; ``on_batch`` is called
    with the number of tiles of each finished batch (for progress bars).
    """
    path = Path(path)
    settings = dict(settings or run_settings(prepared, options))
    info, grid = plan_slide(path, prepared, options, preview_path=preview_path)
    attrs = provenance_attrs(path, info, grid, prepared, options, settings)
    num_features = prepared.spec.num_features
    if len(grid.coords) == 0:
        attrs["note"] = (
            "no tissue tiles: no tile reached min_tissue "
            f"{options.tissue.min_tissue} with the tissue settings recorded here"
        )
        attrs["n_tiles"] = 0
        return SlideEmbedding(np.zeros((0, num_features), np.float32), grid.coords, attrs)
    features, reader_details = embed_tiles(path, info, grid, prepared, options, on_batch=on_batch)
    attrs.update(reader_details)
    attrs["n_tiles"] = len(features)
    return SlideEmbedding(features, np.asarray(grid.coords, dtype=np.int64), attrs)


def plan_slide(
    path: Path,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    *,
    preview_path: str | Path | None = None,
) -> tuple[SlideInfo, TileGrid]:
    """Open the slide, find tissue, plan the tile grid (and write the preview). -> (info, grid)."""
    from histo_encoders.slide import open_slide
    from histo_encoders.tiling import plan_tiles
    from histo_encoders.tissue import detect_tissue

    target_mpp, tile_size = target_geometry(prepared, options)
    with open_slide(path, mpp=options.slide_mpp) as slide:
        mask = detect_tissue(slide, options.tissue)
        grid = plan_tiles(
            slide.info,
            target_mpp,
            tile_size,
            tissue_mask=mask,
            min_tissue=options.tissue.min_tissue,
        )
        if preview_path is not None:
            from histo_encoders.preview import write_preview

            write_preview(slide, mask, grid, preview_path)
        return slide.info, grid


def embed_tiles(
    path: str | Path,
    info: SlideInfo,
    grid: TileGrid,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed the tiles ``indices`` (default: all) of ``grid``, reading overlapped with the model.
    Returns ``(features (n, D) float32, reader attrs)``, rows in the order of ``indices``.

    A reader that streams in file order (``iter_batches``, the TIFF reader) runs in this process
    with its own decode threads; others (OpenSlide) are read by ``options.workers`` processes.
    This is the end-to-end path the benchmark times. Raises SlideReadError (after the reader's
    retry) or NonFiniteFeaturesError.
    """
    from histo_encoders.readers import open_reader

    indices = np.arange(len(grid.coords)) if indices is None else np.asarray(indices, np.int64)
    coords = np.asarray(grid.coords)[indices]
    features = np.empty((len(indices), prepared.spec.num_features), dtype=np.float32)
    reader = open_reader(
        str(path), info, grid, kind=options.reader, tiff_options=_tiff_options(prepared, options)
    )
    try:
        reader_attrs = _reader_attrs(reader)
        if hasattr(reader, "iter_batches"):
            supply = _streamed(reader, indices, options.batch_size)
        else:
            # Closed before the workers fork: each opens its own handle on its first read.
            reader.close()
            supply = _loaded(reader, indices, options, prepared.device)
        for rows, batch in _feature_batches(supply, prepared):
            _check_finite(path, batch, coords[rows])
            features[rows] = batch
            if on_batch is not None:
                on_batch(len(rows))
    finally:
        reader.close()
    return features, reader_attrs


def _tiff_options(prepared: PreparedEncoder, options: EmbedOptions) -> Any:
    from histo_encoders.readers.tiff_reader import TiffReaderOptions

    on_gpu = prepared.device.type == "cuda" and options.gpu_decode
    return TiffReaderOptions(device=str(prepared.device)) if on_gpu else None


TileSupply = Iterator[tuple[np.ndarray, torch.Tensor]]  # (rows of the output, uint8 tiles)


def _streamed(reader: Any, indices: np.ndarray, batch_size: int) -> TileSupply:
    """Batches in the reader's own order, mapped back to output rows."""
    row_of = {int(index): row for row, index in enumerate(indices)}
    for batch_indices, tiles in reader.iter_batches(indices, batch_size):
        yield np.fromiter((row_of[int(i)] for i in batch_indices), np.int64), tiles


def _loaded(
    reader: Any, indices: np.ndarray, options: EmbedOptions, device: torch.device
) -> TileSupply:
    """Batches read by DataLoader worker processes, in order."""
    size = options.batch_size
    batches = [indices[i : i + size] for i in range(0, len(indices), size)]
    loader = DataLoader(
        _TileBatches(reader, batches),
        batch_size=None,  # items are already whole batches
        shuffle=False,
        num_workers=options.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=_PREFETCH_BATCHES if options.workers > 0 else None,
        persistent_workers=False,
    )
    start = 0
    for item in loader:
        tiles = _unwrap(item)
        yield np.arange(start, start + len(tiles)), tiles
        start += len(tiles)


def _feature_batches(
    supply: TileSupply, prepared: PreparedEncoder
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (rows, host features) per batch; the host copy of batch i is taken after batch i+1
    is queued on the device, so a GPU is not left waiting for the transfer."""
    pending: tuple[np.ndarray, torch.Tensor] | None = None
    for rows, tiles in supply:
        device_features = prepared(tiles)
        if pending is not None:
            yield pending[0], to_numpy_features(pending[1])
        pending = (rows, device_features)
    if pending is not None:
        yield pending[0], to_numpy_features(pending[1])


@dataclass(frozen=True)
class _ReadFailure:
    """A per-slide error raised in a worker, carried back as data.

    The DataLoader would re-raise a worker's SlideError as a RuntimeError (it cannot rebuild an
    exception whose constructor takes several arguments), losing the type callers catch; so the
    error's type, message and fields travel as plain data and are rebuilt here.
    """

    error_type: type[SlideError]
    args: tuple[Any, ...]
    fields: dict[str, Any]
    worker_traceback: str

    @classmethod
    def capture(cls, error: SlideError) -> _ReadFailure:
        trace = "".join(traceback.format_exception(error))
        return cls(type(error), error.args, dict(vars(error)), trace)

    def reraise(self) -> None:
        error = self.error_type.__new__(self.error_type)
        Exception.__init__(error, *self.args)
        vars(error).update(self.fields)
        raise error from _WorkerTraceback(self.worker_traceback)


class _WorkerTraceback(Exception):
    """Stands in as the cause of a re-raised worker error: its text is the worker's traceback."""


class _TileBatches(Dataset):
    """Item i is batch i of tiles as a (B, t, t, 3) uint8 tensor, read by whichever process
    asks (readers open their file lazily, in that process)."""

    def __init__(self, reader: Any, batches: list[np.ndarray]) -> None:
        self._reader = reader
        self._batches = batches

    def __len__(self) -> int:
        return len(self._batches)

    def __getitem__(self, index: int) -> torch.Tensor | _ReadFailure:
        try:
            tiles = self._reader.read_tiles(self._batches[index])
        except SlideError as error:
            return _ReadFailure.capture(error)
        return torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.uint8))


def _unwrap(item: torch.Tensor | _ReadFailure) -> torch.Tensor:
    if isinstance(item, _ReadFailure):
        item.reraise()
    return item  # type: ignore[return-value]


def _check_finite(path: str | Path, features: np.ndarray, coords: np.ndarray) -> None:
    finite = np.isfinite(features).all(axis=1)
    if finite.all():
        return
    bad = coords[~finite][:3].tolist()
    raise NonFiniteFeaturesError(
        str(path),
        f"the encoder produced NaN/inf features for {int((~finite).sum())} tile(s), e.g. at "
        f"level-0 (x, y) {bad}; nothing was written. Try --precision fp32; if it persists, "
        "the tiles there may be corrupt.",
    )


def _reader_attrs(reader: Any) -> dict[str, Any]:
    """Which reader cut the tiles and how (decode path), for the provenance attributes."""
    from histo_encoders.readers import describe_reader

    details = describe_reader(reader)
    # Counters taken before any read would record zeros that look like measurements.
    details.pop("stats", None)
    return {"reader": reader.name, "reader_details": details}


def provenance_attrs(
    path: Path,
    info: SlideInfo,
    grid: TileGrid,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The provenance attributes written with a slide's features (HDF5 root attributes)."""
    spec = prepared.spec
    return {
        "encoder": spec.name,
        "hub_id": spec.hub_id,
        "revision": spec.revision,
        "weights_sha256": spec.weights_sha256,
        "encoder_provenance": dict(spec.provenance),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "num_features": spec.num_features,
        **versions(),
        "target_mpp": float(grid.target_mpp),
        "patch_size": int(grid.tile_size),
        "patch_size_level0": float(grid.tile_size_level0),
        "level": int(grid.level),
        "read_size": int(grid.read_size),
        "level_mpp": float(grid.level_mpp),
        "slide_mpp": float(info.mpp),
        "slide_mpp_source": str(info.mpp_source),
        "slide_name": path.name,
        "slide_file_size": int(info.file_size),
        "slide_dimensions": list(info.dimensions),
        "slide_vendor": str(info.vendor),
        "slide_backend": str(info.backend),
        "tissue_settings": asdict(options.tissue),
        "min_tissue": options.tissue.min_tissue,
        "reader_requested": options.reader,
        "device": str(prepared.device),
        "precision": prepared.precision,
        "channels_last": prepared.channels_last,
        "compiled": prepared.compiled,
        "batch_size": options.batch_size,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_settings": dict(settings),
        "settings_fingerprint": slide_fingerprint(path, settings),
    }


def versions() -> dict[str, str]:
    """Versions of the software that produced features (recorded in every file)."""
    import openslide
    import timm

    return {
        "histo_encoders_version": _package_version(),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "openslide_version": str(openslide.__library_version__),
        "openslide_python_version": str(openslide.__version__),
        "numpy_version": np.__version__,
    }


def _package_version() -> str:
    try:
        return importlib.metadata.version("histo-encoders")
    except importlib.metadata.PackageNotFoundError:
        # Running from a source checkout that was never installed: say so rather than invent one.
        return "unknown (not installed)"
