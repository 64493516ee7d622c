"""Embed a whole slide: plan (tissue -> tile grid) -> tile supply -> model, reading overlapped
with the model.

Tiles come from :func:`histo_encoders.pipeline.supply.tile_supply` (the TIFF reader's threads,
or OpenSlide worker processes) and go through :class:`~.inference.PreparedEncoder`. A region that
cannot be decoded even after the reader's reopen-and-retry fails the slide with SlideReadError;
features that are not finite fail it with NonFiniteFeaturesError. Nothing here ever writes NaN
features.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_encoders.errors import ConfigError, NonFiniteFeaturesError
from histo_encoders.pipeline.inference import (
    PreparedEncoder,
    TileBatch,
    resolve_device,
    resolve_precision,
    to_numpy_features,
    weights_fingerprint,
)
from histo_encoders.pipeline.options import EmbedOptions
from histo_encoders.pipeline.provenance import RunSettings, SlideIdentity, SlideProvenance
from histo_encoders.pipeline.supply import tile_supply
from histo_encoders.readers import ReaderReport, TiffReaderOptions, open_reader
from histo_encoders.slides import SlideInfo, TileGrid, plan_slide

DEFAULT_ENCODER = "moco-camelyon"


@dataclass(frozen=True)
class SlideEmbedding:
    """Features of one slide: ``features`` (N, D) float32, ``coords`` (N, 2) int64 level-0 x, y
    of each tile's top-left corner, and ``attrs`` (provenance, as written to the HDF5 file;
    ``provenance`` is the same as a typed record)."""

    features: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any]
    provenance: SlideProvenance | None = None

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
        from histo_encoders.encoders import load

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
        from histo_encoders.encoders.folder import HOW_TO_ADD_METADATA

        raise ConfigError(
            f"Encoder {spec.name!r} does not record the resolution (microns per pixel) its "
            "tiles should have, e.g. a folder written by timm's save_for_hf: give --mpp "
            f"(Python: mpp=0.5), or {HOW_TO_ADD_METADATA}."
        )
    if tile_size is None:
        raise ConfigError(
            f"Encoder {spec.name!r} does not record its tile size: give --tile-size "
            "(Python: tile_size=224)."
        )
    return float(mpp), int(tile_size)


def run_settings(prepared: PreparedEncoder, options: EmbedOptions) -> RunSettings:
    """Everything that changes the features of a slide (not batch size, workers or device)."""
    spec = prepared.spec
    mpp, tile_size = target_geometry(prepared, options)
    weights = spec.weights_sha256 or f"in-memory:{weights_fingerprint(prepared.model)}"
    return RunSettings(
        encoder=spec.name,
        hub_id=spec.hub_id,
        revision=spec.revision,
        weights=weights,
        target_mpp=mpp,
        tile_size=tile_size,
        slide_mpp_override=options.slide_mpp,
        tissue=options.tissue,
        precision=prepared.precision,
        reader=options.reader,
        # The same weights give other features with another normalization, architecture or
        # pooling rule.
        mean=tuple(float(v) for v in spec.mean),
        std=tuple(float(v) for v in spec.std),
        architecture=spec.architecture,
        model_args=dict(spec.model_args),
        pooling=spec.pooling,
    )


def embed_prepared(
    path: str | Path,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    *,
    settings: RunSettings | None = None,
    preview_path: str | Path | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> SlideEmbedding:
    """Embed one slide with an encoder already on its device (what batch runs call per slide).

    ``preview_path`` also writes the thumbnail / tissue / grid PNG there; ``on_plan`` is called
    with the slide's number of tiles once it is planned and ``on_batch`` with the number of
    tiles of each finished batch (for progress bars).
    """
    path = Path(path)
    settings = settings or run_settings(prepared, options)
    plan = plan_slide(
        path,
        settings.target_mpp,
        settings.tile_size,
        tissue=options.tissue,
        slide_mpp=options.slide_mpp,
        preview_path=preview_path,
    )
    provenance = SlideProvenance(
        settings=settings,
        slide=SlideIdentity.of(path),
        encoder=prepared.spec,
        info=plan.info,
        grid=plan.grid,
        device=str(prepared.device),
        channels_last=prepared.channels_last,
        compiled=prepared.compiled,
        batch_size=options.batch_size,
    )
    coords = np.asarray(plan.grid.coords, dtype=np.int64)
    if on_plan is not None:
        on_plan(len(coords))
    if len(coords) == 0:
        note = (
            "no tissue tiles: no tile reached min_tissue "
            f"{options.tissue.min_tissue} with the tissue settings recorded here"
        )
        provenance = replace(provenance, note=note)
        empty = np.zeros((0, prepared.spec.num_features), np.float32)
        return SlideEmbedding(empty, coords, provenance.to_attrs(), provenance)
    features, report = embed_tiles(path, plan.info, plan.grid, prepared, options, on_batch=on_batch)
    provenance = replace(provenance, reader=report, n_tiles=len(features))
    return SlideEmbedding(features, coords, provenance.to_attrs(), provenance)


def embed_tiles(
    path: str | Path,
    info: SlideInfo,
    grid: TileGrid,
    prepared: PreparedEncoder,
    options: EmbedOptions,
    *,
    indices: Sequence[int] | np.ndarray | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, ReaderReport]:
    """Embed the tiles ``indices`` (default: all) of ``grid``, reading overlapped with the model.

    Returns ``(features (n, D) float32, the reader's report taken after reading)``, rows in the
    order of ``indices``. This is the end-to-end path the benchmark times. Raises SlideReadError
    (after the reader's retry) or NonFiniteFeaturesError.
    """
    indices = np.arange(len(grid.coords)) if indices is None else np.asarray(indices, np.int64)
    coords = np.asarray(grid.coords)[indices]
    features = np.empty((len(indices), prepared.spec.num_features), dtype=np.float32)
    reader = open_reader(
        str(path), info, grid, kind=options.reader, tiff_options=_tiff_options(prepared, options)
    )
    try:
        supply = tile_supply(
            reader,
            indices,
            batch_size=options.batch_size,
            workers=options.workers,
            device=prepared.device,
            normalize=(prepared.spec.mean, prepared.spec.std),
        )
        for rows, batch in _feature_batches(supply, prepared):
            _check_finite(path, batch, coords[rows])
            features[rows] = batch
            if on_batch is not None:
                on_batch(len(rows))
        # After reading: the counters (decodes, GPU->CPU fallbacks) are the run's own.
        report = reader.describe()
    finally:
        reader.close()
    return features, report


def _tiff_options(prepared: PreparedEncoder, options: EmbedOptions) -> TiffReaderOptions | None:
    on_gpu = prepared.device.type == "cuda" and options.gpu_decode
    return TiffReaderOptions(device=str(prepared.device)) if on_gpu else None


def _feature_batches(
    supply: Iterator[TileBatch], prepared: PreparedEncoder
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (rows, host features) per batch; the host copy of batch i is taken after batch i+1
    is queued on the device, so a GPU is not left waiting for the transfer."""
    pending: tuple[np.ndarray, torch.Tensor] | None = None
    for batch in supply:
        device_features = prepared.features(batch)
        if pending is not None:
            yield pending[0], to_numpy_features(pending[1])
        pending = (batch.rows, device_features)
    if pending is not None:
        yield pending[0], to_numpy_features(pending[1])


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
