"""What produced a feature file, as frozen records that write themselves to HDF5 attributes.

:class:`RunSettings` holds everything that changes a slide's features (and nothing that does
not: batch size, workers, device); its fingerprint together with the slide's identity decides
whether a finished file may be reused. :class:`SlideProvenance` is everything recorded with one
slide's features: the encoder and its weights, the slide, the grid, the reader, the software.
This module is the one home of both.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_encoders.pipeline.features import FORMAT_VERSION
from histo_encoders.pipeline.inference import EncoderSpec
from histo_encoders.readers import ReaderReport
from histo_encoders.slides import SlideInfo, TileGrid, TissueSettings


def fingerprint_of(values: Mapping[str, Any]) -> str:
    """sha256 hex digest of JSON-able ``values``, independent of key order."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SlideIdentity:
    """Which slide file features belong to, by content.

    ``content_sha256`` hashes the file's metadata and tile index (see
    :mod:`histo_encoders.pipeline.fingerprint`), so a slide edited in place to another
    resolution, at the same size, is a different slide; with ``mtime_ns`` any rewrite is.
    ``path`` (absolute) is where it was read: recorded with the features and used to tell a
    slide from another one with the same file name, but not part of the fingerprint, so a
    moved folder of slides is still resumed.
    """

    name: str
    file_size: int
    mtime_ns: int = 0
    content_sha256: str = ""
    path: str = ""

    @classmethod
    def of(cls, path: str | Path) -> SlideIdentity:
        """The identity of the file at ``path``. Raises OSError when it cannot be read."""
        path = Path(path)
        return cls(path.name, *_identity(path))

    def same_file_as(self, recorded: Mapping[str, Any]) -> bool:
        """Whether feature attributes ``recorded`` (see :meth:`as_attrs`) describe this same
        slide: the same path, or the same size and content wherever it is now."""
        if recorded.get("slide_path") == self.path:
            return True
        return (
            recorded.get("slide_file_size") == self.file_size
            and recorded.get("slide_content_sha256") == self.content_sha256
        )

    def as_attrs(self) -> dict[str, Any]:
        """The attributes written with the features."""
        return {
            "slide_name": self.name,
            "slide_path": self.path,
            "slide_file_size": int(self.file_size),
            "slide_mtime_ns": int(self.mtime_ns),
            "slide_content_sha256": self.content_sha256,
        }


@functools.lru_cache(maxsize=64)
def _cached_identity(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> tuple:
    from histo_encoders.pipeline.fingerprint import content_digest

    return (size, mtime_ns, content_digest(path), str(Path(path).resolve()))


def _identity(path: Path) -> tuple:
    if path.is_dir():
        # A DICOM-WSI series: one slide in many files, identified by all of them.
        files = sorted(p for p in path.iterdir() if p.is_file())
        parts = [_identity(file) for file in files]
        size = sum(part[0] for part in parts)
        mtime_ns = max((part[1] for part in parts), default=0)
        digest = fingerprint_of(
            {file.name: part[2] for file, part in zip(files, parts, strict=True)}
        )
        return (size, mtime_ns, digest, str(path.resolve()))
    stat = path.stat()
    # Taken twice per slide (resume check, provenance): hashed once while the file is unchanged.
    # Keyed on the change time too: any write changes it, and no tool can set it back.
    return _cached_identity(
        str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino
    )


# How tiles become model input, named so that a change to it invalidates finished files: area
# (BOX) resize of uint8 RGB at the grid's read size, then (x / 255 - mean) / std per channel.
TILE_PREPROCESSING = "uint8-rgb/box-resize/scale-255/mean-std/v1"


@dataclass(frozen=True)
class RunSettings:
    """Everything that changes the features of a slide (not batch size, workers or device):
    the weights, the normalization and the rest of the preprocessing, the tile geometry, the
    tissue settings, the precision and the reader."""

    encoder: str
    hub_id: str | None
    revision: str | None
    weights: str
    target_mpp: float
    tile_size: int
    slide_mpp_override: float | None
    tissue: TissueSettings
    precision: str
    reader: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    architecture: str = ""
    model_args: dict[str, Any] = field(default_factory=dict)
    pooling: str = "timm"
    preprocessing: str = TILE_PREPROCESSING
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON and the ``run_settings`` attribute."""
        values = asdict(self)
        values.update(mean=list(self.mean), std=list(self.std))
        return values

    def fingerprint(self, slide: SlideIdentity) -> str:
        """The ``settings_fingerprint`` of ``slide``'s features under these settings: equal only
        for the same settings and the same slide content (its path does not count)."""
        identity = {
            "slide_name": slide.name,
            "slide_file_size": slide.file_size,
            "slide_mtime_ns": slide.mtime_ns,
            "slide_content_sha256": slide.content_sha256,
        }
        return fingerprint_of({**self.as_dict(), **identity})


@dataclass(frozen=True, eq=False)
class SlideProvenance:
    """Everything recorded with one slide's features (the HDF5 root attributes)."""

    settings: RunSettings
    slide: SlideIdentity
    encoder: EncoderSpec
    info: SlideInfo
    grid: TileGrid
    device: str
    channels_last: bool
    compiled: bool
    batch_size: int
    n_tiles: int = 0
    reader: ReaderReport | None = None
    note: str | None = None
    created_utc: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def to_attrs(self) -> dict[str, Any]:
        """The attributes written with the features (plain values; JSON-able where nested)."""
        attrs = {
            **self._encoder_attrs(),
            **software_versions(),
            **self._slide_attrs(),
            "tissue_settings": asdict(self.settings.tissue),
            "min_tissue": self.settings.tissue.min_tissue,
            "reader_requested": self.settings.reader,
            "device": self.device,
            "precision": self.settings.precision,
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            "batch_size": self.batch_size,
            "created_utc": self.created_utc,
            "run_settings": self.settings.as_dict(),
            "settings_fingerprint": self.settings.fingerprint(self.slide),
            "n_tiles": self.n_tiles,
        }
        if self.reader is not None:
            attrs["reader"] = self.reader.reader
            attrs["reader_details"] = self.reader.as_dict()
        if self.note is not None:
            attrs["note"] = self.note
        return attrs

    def _encoder_attrs(self) -> dict[str, Any]:
        spec = self.encoder
        return {
            "encoder": spec.name,
            "hub_id": spec.hub_id,
            "revision": spec.revision,
            "weights_sha256": spec.weights_sha256,
            "encoder_provenance": spec.provenance.as_dict() if spec.provenance else {},
            "mean": list(spec.mean),
            "std": list(spec.std),
            "num_features": spec.num_features,
        }

    def _slide_attrs(self) -> dict[str, Any]:
        grid, info = self.grid, self.info
        return {
            "target_mpp": float(grid.target_mpp),
            "patch_size": int(grid.tile_size),
            "tile_size": int(grid.tile_size),
            # TRIDENT's readers need an int; the exact side is tile_size_level0.
            "patch_size_level0": round(grid.tile_size_level0),
            "tile_size_level0": float(grid.tile_size_level0),
            "level": int(grid.level),
            "read_size": int(grid.read_size),
            "level_mpp": float(grid.level_mpp),
            "level_downsample": float(info.level_downsamples[grid.level]),
            "level_dimensions": list(info.level_dimensions[grid.level]),
            "slide_mpp": float(info.mpp),
            "slide_mpp_source": str(info.mpp_source),
            **self.slide.as_attrs(),
            "slide_dimensions": list(info.dimensions),
            "slide_vendor": str(info.vendor),
            "slide_backend": str(info.backend),
        }


def software_versions() -> dict[str, str]:
    """Versions of the software that produced features (recorded in every file)."""
    import openslide
    import timm

    from histo_encoders import __version__

    return {
        "histo_encoders_version": __version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "openslide_version": str(openslide.__library_version__),
        "openslide_python_version": str(openslide.__version__),
        "numpy_version": np.__version__,
    }
