"""How slides are tiled and embedded: one frozen record, whose defaults the command line shows."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from histo_encoders.env import usable_cpus
from histo_encoders.slides.tissue import TissueSettings

PRECISIONS = ("auto", "fp32", "bf16")
READERS = ("auto", "openslide", "tiff")
_MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Reader processes by default: one per CPU this process may use, at most 8."""
    return min(_MAX_DEFAULT_WORKERS, usable_cpus())


@dataclass(frozen=True)
class EmbedOptions:
    """How slides are tiled and embedded.

    ``tissue`` holds the tissue detection and the per-tile ``min_tissue`` fraction.
    ``mpp`` / ``tile_size`` default to what the encoder was trained on; ``slide_mpp`` overrides
    the resolution the slide records (for files without one, or with a wrong one). ``device`` is
    "auto" | "cpu" | "cuda" | "cuda:N"; ``precision`` "auto" (bf16 on GPU, fp32 on CPU) | "fp32"
    | "bf16". ``workers``: reader processes for OpenSlide (0 reads in the calling process;
    default one per CPU, at most 8). ``reader`` picks the tile reader ("auto", "openslide",
    "tiff"). ``gpu_decode``: when the model runs on CUDA and the TIFF reader applies, decode JPEG
    tiles with nvJPEG and cut/resize them on the GPU.
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.reader not in READERS:
            raise ValueError(f"reader must be one of {READERS}, got {self.reader!r}")

    def with_updates(self, **changes: Any) -> EmbedOptions:
        """A copy with ``changes`` applied; unknown names raise TypeError."""
        return replace(self, **changes)


def option_default(name: str) -> Any:
    """The default of EmbedOptions field ``name`` (what the command line shows and uses)."""
    for option in fields(EmbedOptions):
        if option.name == name:
            return option.default_factory() if callable(option.default_factory) else option.default
    raise KeyError(name)
