"""Open a whole-slide image (OpenSlide) or a plain image (PIL) and find its resolution.

The resolution (microns per pixel, mpp) decides where every tile is cut, so it is taken only from
what the file records, in this order: ``openslide.mpp-x/y``, vendor keys, TIFF resolution tags;
an ``mpp=`` argument overrides them. A slide without one, or with one no microscope produces, is
refused with a message saying how to give it. The exact value is kept: 0.2528 um/px is never
rounded to a nominal "40x" 0.25.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import openslide
from PIL import Image

from histo_encoders.errors import (
    ImplausibleMppError,
    MissingMppError,
    SlideOpenError,
    SlideReadError,
)

MPP_RANGE = (0.05, 20.0)  # um/px: from beyond-oil-immersion scanners to very coarse overviews
MPP_XY_TOLERANCE = 0.10  # x and y mpp may differ this much (relative) before we refuse
_HOW_TO_GIVE_MPP = (
    "Give the resolution yourself: `--slide-mpp 0.25` on the command line, or "
    "`slide_mpp=0.25` / `open_slide(path, mpp=0.25)` in Python (microns per pixel at level 0)."
)
# Vendor keys OpenSlide may expose without deriving openslide.mpp-x from them: (x key, y key).
_VENDOR_MPP_KEYS = (
    ("aperio.MPP", "aperio.MPP"),
    (
        "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_X",
        "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_Y",
    ),
)
_MICRONS_PER_UNIT = {"centimeter": 1e4, "inch": 25400.0}
_STRIP_ROWS = 256  # output rows per strip when reading a whole level scaled down...
_STRIP_PIXELS = 2**25  # ...and at most this many level pixels (128 MiB as RGBA) per strip


@dataclass(frozen=True)
class SlideInfo:
    """What a slide is: geometry of every level, resolution and where that resolution came from."""

    path: Path
    dimensions: tuple[int, int]
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float
    mpp_source: str
    vendor: str
    file_size: int
    backend: Literal["openslide", "image"]

    def level_mpp(self, level: int) -> float:
        """Microns per pixel at ``level``: level-0 mpp times the level's downsample."""
        return self.mpp * self.level_downsamples[level]


class Slide:
    """An open slide. Use as a context manager, or call :meth:`close`.

    Reading after an OpenSlide error needs :meth:`reopen`: the library keeps a failed handle
    broken, so every later call on it would fail too.
    """

    def __init__(self, path: Path, info: SlideInfo, handle: openslide.OpenSlide | None) -> None:
        self.info = info
        self._path = path
        self._handle = handle
        self._image: np.ndarray | None = None
        if handle is None:
            self._image = _load_plain_image(path)

    @classmethod
    def from_info(cls, info: SlideInfo) -> Slide:
        """Open the slide ``info`` describes, keeping its mpp (e.g. one given by the user).

        For worker processes that receive a SlideInfo and must not re-run the mpp checks.
        Raises SlideOpenError if the file cannot be opened.
        """
        handle = _open_openslide(info.path) if info.backend == "openslide" else None
        return cls(info.path, info, handle)

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file handle (and a plain image's pixels)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._image = None

    def reopen(self) -> None:
        """Close and open the file again, e.g. after a failed read left the handle broken."""
        self.close()
        if self.info.backend == "openslide":
            self._handle = _open_openslide(self._path)
        else:
            self._image = _load_plain_image(self._path)

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Return (h, w, 3) uint8 RGB pixels of ``level`` whose top-left is level-0 ``location``.

        ``size`` is (width, height) in pixels of ``level``. Pixels outside the slide or
        transparent in it come back white (glass). Raises SlideReadError if decoding fails.
        """
        if level < 0 or level >= self.info.level_count:
            raise ValueError(f"level {level} does not exist (slide has {self.info.level_count})")
        if self.info.backend == "image":
            return self._read_plain(location, size)
        return self._read_openslide(location, level, size)

    @property
    def properties(self) -> Mapping[str, str]:
        """The file's metadata as OpenSlide reports it (empty for plain images)."""
        return dict(self._handle.properties) if self._handle is not None else {}

    def read_level(self, level: int) -> np.ndarray:
        """The whole of ``level`` as (h, w, 3) uint8; mind the memory on fine levels."""
        width, height = self.info.level_dimensions[level]
        return self.read_region((0, 0), level, (width, height))

    def read_scaled(self, downsample: float) -> np.ndarray:
        """Return the whole slide at ``downsample`` level-0 px per output px, (h, w, 3) uint8.

        Reads the coarsest level at least as fine as asked and area-averages it down, a strip at
        a time so memory stays bounded by the output size. Output size is
        ``max(1, round(dimensions / downsample))``.
        """
        level = self.best_level_for(downsample)
        level_w, level_h = self.info.level_dimensions[level]
        out_w, out_h = (max(1, round(d / downsample)) for d in self.info.dimensions)
        rows_per_out = level_h / out_h
        # Bound each strip's pixels so a huge single-level slide never lands in memory whole.
        strip_rows = max(1, min(_STRIP_ROWS, int(_STRIP_PIXELS / (level_w * rows_per_out))))
        strips = []
        for first in range(0, out_h, strip_rows):
            last = min(out_h, first + strip_rows)
            top = round(first * rows_per_out)
            bottom = max(top + 1, round(last * rows_per_out))
            y0 = round(top * self.info.level_downsamples[level])
            region = self.read_region((0, y0), level, (level_w, bottom - top))
            strips.append(_shrink(region, out_w, last - first))
        return np.concatenate(strips, axis=0)

    def thumbnail(self, max_size: int = 1024) -> tuple[np.ndarray, float]:
        """Return (pixels, downsample): the slide scaled so its longer side is <= ``max_size``."""
        downsample = max(1.0, max(self.info.dimensions) / max_size)
        return self.read_scaled(downsample), downsample

    def best_level_for(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (1% slack)."""
        fitting = [
            level
            for level, level_ds in enumerate(self.info.level_downsamples)
            if level_ds <= downsample * 1.01
        ]
        return max(fitting, default=0)

    def _read_openslide(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        if self._handle is None:
            raise SlideReadError(self._path, "the slide is closed; reopen() it before reading")
        try:
            rgba = self._handle.read_region(tuple(map(int, location)), level, tuple(map(int, size)))
        except openslide.OpenSlideError as error:
            raise SlideReadError(
                self._path,
                f"could not decode the region at level-0 {tuple(location)}, level {level}, "
                f"size {tuple(size)}: {error}. The file is probably corrupt there; re-export or "
                "re-scan the slide, or leave it out of the run.",
            ) from error
        return _flatten_on_white(rgba)

    def _read_plain(self, location: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        if self._image is None:
            raise SlideReadError(self._path, "the image is closed; reopen() it before reading")
        x, y = (int(v) for v in location)
        width, height = (int(v) for v in size)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        img_h, img_w = self._image.shape[:2]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, img_w), min(y + height, img_h)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._image[y0:y1, x0:x1]
        return out


def open_slide(path: str | Path, *, mpp: float | None = None) -> Slide:
    """Open a slide (any format OpenSlide reads) or a plain PNG/JPEG/TIFF image.

    ``mpp`` (microns per pixel at level 0) overrides what the file records; plain images usually
    need it. Returns a :class:`Slide` (a context manager).

    Raises SlideOpenError (missing or undecodable file), MissingMppError (no resolution recorded
    and none given), ImplausibleMppError (recorded or given resolution outside 0.05..20 um/px,
    or x and y disagreeing by more than 10%).
    """
    path = Path(path)
    if not path.exists():
        raise SlideOpenError(path, "no such file. Check the path.")
    handle = _try_openslide(path)
    if handle is None:
        info = _plain_image_info(path, mpp)
    else:
        try:
            info = _openslide_info(path, handle, mpp)
        except Exception:
            handle.close()
            raise
    return Slide(path, info, handle)


def openslide_target(path: Path) -> Path:
    """The file OpenSlide opens for ``path``: a DICOM-WSI series folder opens through any of its
    ``.dcm`` files (OpenSlide finds the rest of the series beside it)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
        if not files:
            raise SlideOpenError(path, "a folder, but not a DICOM-WSI series (no .dcm files).")
        return files[0]
    return path


def slide_file_size(path: str | Path) -> int:
    """Bytes of a slide: its file, or every file of a DICOM series folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size


def _open_openslide(path: Path) -> openslide.OpenSlide:
    try:
        return openslide.OpenSlide(str(openslide_target(path)))
    except openslide.OpenSlideError as error:
        raise _cannot_open(path, error) from error


def _try_openslide(path: Path) -> openslide.OpenSlide | None:
    """OpenSlide's handle, or None when the format is not a slide (then try it as an image)."""
    try:
        return openslide.OpenSlide(str(openslide_target(path)))
    except openslide.OpenSlideUnsupportedFormatError:
        return None
    except openslide.OpenSlideError as error:
        # A format OpenSlide recognises but cannot decode: reading it as an image would hide that.
        raise _cannot_open(path, error) from error


def _cannot_open(path: Path, error: Exception) -> SlideOpenError:
    return SlideOpenError(
        path,
        f"OpenSlide cannot open it: {error}. The file is corrupt or uses a compression "
        "OpenSlide does not support; convert it to a tiled TIFF or leave it out of the run.",
    )


def _openslide_info(path: Path, handle: openslide.OpenSlide, mpp: float | None) -> SlideInfo:
    mpp_value, source = _resolve_mpp(path, mpp, handle.properties)
    return SlideInfo(
        path=path,
        dimensions=tuple(handle.dimensions),
        level_count=handle.level_count,
        level_dimensions=tuple(tuple(d) for d in handle.level_dimensions),
        level_downsamples=tuple(float(d) for d in handle.level_downsamples),
        mpp=mpp_value,
        mpp_source=source,
        vendor=handle.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
        file_size=slide_file_size(path),
        backend="openslide",
    )


def _plain_image_info(path: Path, mpp: float | None) -> SlideInfo:
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format = (image.format or "image").lower()
            recorded = _mpp_from_dpi(image.info.get("dpi"))
    except (OSError, Image.DecompressionBombError) as error:
        raise SlideOpenError(
            path,
            f"neither OpenSlide nor PIL can open it ({error}). Give a slide OpenSlide reads "
            "(SVS, tiled TIFF, NDPI, MRXS, ...) or a PNG/JPEG/TIFF image.",
        ) from error
    if mpp is None and recorded is not None:
        mpp_value, source = _checked(path, recorded, recorded, "image dpi")
    else:
        mpp_value, source = _resolve_mpp(path, mpp, {})
    return SlideInfo(
        path=path,
        dimensions=(width, height),
        level_count=1,
        level_dimensions=((width, height),),
        level_downsamples=(1.0,),
        mpp=mpp_value,
        mpp_source=source,
        vendor=image_format,
        file_size=path.stat().st_size,
        backend="image",
    )


def _load_plain_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(_rgb_on_white(image))
    except (OSError, Image.DecompressionBombError) as error:
        raise SlideOpenError(path, f"PIL cannot decode the image: {error}") from error


def _resolve_mpp(
    path: Path, override: float | None, properties: Mapping[str, str]
) -> tuple[float, str]:
    """(mpp, source) from the override or the first source the file records."""
    if override is not None:
        return _checked(path, float(override), float(override), "given")
    mpp_x = properties.get(openslide.PROPERTY_NAME_MPP_X)
    mpp_y = properties.get(openslide.PROPERTY_NAME_MPP_Y)
    if mpp_x is not None and mpp_y is not None:
        return _checked(path, float(mpp_x), float(mpp_y), "openslide.mpp-x/y")
    for key_x, key_y in _VENDOR_MPP_KEYS:
        if key_x in properties and key_y in properties:
            return _checked(path, float(properties[key_x]), float(properties[key_y]), key_x)
    from_tags = _mpp_from_tiff_tags(properties)
    if from_tags is not None:
        return _checked(path, *from_tags, "tiff resolution tags")
    raise MissingMppError(
        path, f"the file records no resolution (microns per pixel). {_HOW_TO_GIVE_MPP}"
    )


def _mpp_from_tiff_tags(properties: Mapping[str, str]) -> tuple[float, float] | None:
    unit = properties.get("tiff.ResolutionUnit", "").lower()
    x_res, y_res = properties.get("tiff.XResolution"), properties.get("tiff.YResolution")
    if unit not in _MICRONS_PER_UNIT or x_res is None or y_res is None:
        return None
    microns = _MICRONS_PER_UNIT[unit]
    return microns / float(x_res), microns / float(y_res)


def _mpp_from_dpi(dpi: object) -> float | None:
    if not isinstance(dpi, tuple) or len(dpi) != 2 or not all(float(v) > 0 for v in dpi):
        return None
    return 25400.0 / ((float(dpi[0]) + float(dpi[1])) / 2)


def _checked(path: Path, mpp_x: float, mpp_y: float, source: str) -> tuple[float, str]:
    """Refuse resolutions no microscope produces; otherwise the mean of x and y, unrounded."""
    low, high = MPP_RANGE
    for value in (mpp_x, mpp_y):
        if not (math.isfinite(value) and low <= value <= high):
            raise ImplausibleMppError(
                path,
                f"its resolution from {source} is {value:g} um/px, outside the plausible "
                f"{low:g}..{high:g} um/px (files with only screen DPI tags look like this). "
                f"{_HOW_TO_GIVE_MPP}",
            )
    if abs(mpp_x - mpp_y) > MPP_XY_TOLERANCE * min(mpp_x, mpp_y):
        raise ImplausibleMppError(
            path,
            f"its resolution from {source} differs between x ({mpp_x:g}) and y ({mpp_y:g}) by "
            f"more than {MPP_XY_TOLERANCE:.0%}; square tiles cannot be cut from it. "
            f"{_HOW_TO_GIVE_MPP}",
        )
    return (mpp_x + mpp_y) / 2, source


def _flatten_on_white(rgba: Image.Image) -> np.ndarray:
    """RGBA -> RGB with transparent pixels (no scanned data) shown as white glass."""
    # PIL's C paths: the fully opaque case (almost every tile) costs a third of numpy's.
    if rgba.getchannel("A").getextrema()[0] == 255:
        return np.array(rgba.convert("RGB"))  # writable, like every other path here
    pixels = np.asarray(rgba)
    rgb, alpha = pixels[..., :3].astype(np.uint16), pixels[..., 3:].astype(np.uint16)
    blended = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)


def _rgb_on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _shrink(region: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average ``region`` to (height, width) (PIL's BOX filter, as resize_tile uses)."""
    if region.shape[:2] == (height, width):
        return region
    image = Image.fromarray(np.ascontiguousarray(region))
    return np.asarray(image.resize((width, height), Image.Resampling.BOX))
