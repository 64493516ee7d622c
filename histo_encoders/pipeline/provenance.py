"""What produced a feature file, as frozen records that write themselves to HDF5 attributes.

:class:`RunSettings` holds everything that changes a slide's features (and nothing that does
not: batch size, workers, device); its fingerprint together with the slide's identity decides
whether a finished file may be reused. :class:`SlideProvenance` is everything recorded with one
slide's features: the encoder and its weights, the slide, the grid, the reader, the software.
This module is the one home of both.
"""

from __future__ import annotations

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
from histo_encoders.slides import SlideInfo, TileGrid, TissueSettings, slide_file_size


def fingerprint_of(values: Mapping[str, Any]) -> str:
    """sha256 hex digest of JSON-able ``values``, independent of key order."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SlideIdentity:
    """Which slide file features belong to: name and size (a different file under the same
    name is embedded again)."""

    name: str
    file_size: int

    @classmethod
    def of(cls, path: str | Path) -> SlideIdentity:
        """The identity of the file at ``path`` (size -1 when it does not exist)."""
        path = Path(path)
        return cls(path.name, slide_file_size(path) if path.exists() else -1)


@dataclass(frozen=True)
class RunSettings:
    """Everything that changes the features of a slide (not batch size, workers or device)."""

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
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON and the ``run_settings`` attribute."""
        return asdict(self)

    def fingerprint(self, slide: SlideIdentity) -> str:
        """The ``settings_fingerprint`` of ``slide``'s features under these settings."""
        identity = {"slide_name": slide.name, "slide_file_size": slide.file_size}
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
            "slide_name": self.slide.name,
            "slide_file_size": int(info.file_size),
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
