"""One HDF5 feature file per slide: atomic write, provenance attributes, completeness check, read.

Layout (the names CLAM- and TRIDENT-style readers expect):

- dataset ``features``: (N, D) float32, one row per tile;
- dataset ``coords``: (N, 2) int64, level-0 (x, y) top-left pixel of each tile; its attributes
  are the ones CLAM's and TRIDENT's readers look up, under their names and types
  (:func:`interop_coords_attrs`);
- root attributes: provenance (encoder, weights, versions, resolution, tissue settings, reader,
  slide file), the ``settings_fingerprint`` a resumed run compares, and ``complete=True`` last.

A file is written under a temporary name unique to its writer (:mod:`histo_encoders.atomic`),
flushed, fsync'd and renamed, so a run killed part-way never leaves a file that looks finished;
resume trusts only a file that is complete *and* was written with the same settings (the
fingerprint comes from :mod:`.provenance`).

``coords`` attributes, so that other tools read the same regions we read:

- CLAM (``Whole_Slide_Bag_FP``) reads ``read_region(coord, patch_level, (patch_size,
  patch_size))``: ``patch_level`` (int) is the pyramid level we read and ``patch_size`` (int) the
  side of the region read there, in pixels of that level; also ``downsample``, ``level_dim``,
  ``downsampled_level_dim`` and ``name`` as CLAM writes them.
- TRIDENT's coords readers take ``patch_size`` at ``target_magnification`` and scale by
  ``level0_magnification / target_magnification`` to level 0. Both magnifications are written
  as ``10 / mpp`` (its convention: 40x = 0.25 um/px), the target one for the pixels
  ``patch_size`` counts, so its patcher cuts the same level-0 square; ``patch_size_level0``
  (int) is that square's side, as its slide encoders and overlays read it; ``overlap`` = 0.
- Ours, beside them: ``tile_size`` (side of the tile the encoder saw), ``tile_size_level0`` (the
  exact, unrounded level-0 side), ``target_mpp`` and ``slide_mpp``.

``write_pt`` writes CLAM's training layout, ``pt_files/<slide>.pt`` holding the (N, D) tensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from histo_encoders.atomic import atomic_write
from histo_encoders.errors import FeatureFileError, OutputNotWritableError

FORMAT_VERSION = 2  # bumped when the layout or the meaning of the attributes changes
FINGERPRINT_ATTR = "settings_fingerprint"
COMPLETE_ATTR = "complete"
# Attributes HDF5 cannot hold natively (None, dicts, lists) are stored as JSON text; this
# attribute lists their names so read_features() gives back the original values.
_JSON_KEYS_ATTR = "json_attrs"
_RESERVED = (COMPLETE_ATTR, _JSON_KEYS_ATTR, "format_version")


def write_features(
    path: str | Path,
    features: np.ndarray,
    coords: np.ndarray,
    attrs: Mapping[str, Any],
) -> Path:
    """Write ``features`` (N, D) and ``coords`` (N, 2) with ``attrs`` to ``path`` atomically.

    ``attrs`` must hold ``settings_fingerprint``; ``complete=True`` is added last. The file only
    appears under its final name once fully written and synced. Returns the final path.

    Raises ValueError for inconsistent shapes or non-finite features, OutputNotWritableError
    when the file cannot be written (disk full, read-only or missing folder: the temporary file
    is removed and nothing appears under ``path``).
    """
    path = Path(path)
    features, coords = _checked_arrays(features, coords)
    if FINGERPRINT_ATTR not in attrs:
        raise ValueError(f"attrs must include {FINGERPRINT_ATTR!r} so that resume can trust it")
    try:
        atomic_write(path, lambda temporary: _write_h5(temporary, features, coords, attrs))
    except OSError as error:  # h5py reports a full disk as a plain OSError, errno or not
        raise OutputNotWritableError(
            str(path), f"writing the feature file failed ({error})"
        ) from error
    return path


def read_features(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Return ``(features (N, D) float32, coords (N, 2) int64, attrs)`` from a complete file.

    Raises FeatureFileError if the file is missing, unreadable or was not completely written.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(f"No feature file at {path}: run `histo-encoders embed` first.")
    try:
        with h5py.File(path, "r") as h5:
            attrs = decode_attrs(h5.attrs)
            features = np.asarray(h5["features"][...], dtype=np.float32)
            coords = np.asarray(h5["coords"][...], dtype=np.int64)
    except (OSError, KeyError) as error:
        raise FeatureFileError(
            f"Cannot read feature file {path}: {error}. Delete it and embed the slide again."
        ) from error
    if not attrs.get(COMPLETE_ATTR, False):
        raise FeatureFileError(
            f"Feature file {path} was not completely written. Delete it and embed the slide again."
        )
    return features, coords, attrs


def is_complete(path: str | Path, fingerprint: str) -> bool:
    """True only for a finished, readable file written with settings of ``fingerprint``."""
    found = complete_attrs(path)
    return found is not None and found[0].get(FINGERPRINT_ATTR) == fingerprint


def complete_attrs(path: str | Path) -> tuple[dict[str, Any], int] | None:
    """``(attrs, number of tiles)`` of a finished, readable feature file; None for anything else
    (missing, truncated, unfinished, foreign, or with features and coords of unequal length)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as h5:
            if not bool(h5.attrs.get(COMPLETE_ATTR, False)):
                return None
            n_features = h5["features"].shape[0]
            if n_features != h5["coords"].shape[0]:
                return None
            return decode_attrs(h5.attrs), int(n_features)
    except (OSError, KeyError, ValueError):
        # A truncated or foreign file is simply not complete: the run embeds the slide again.
        return None


def count_tiles(path: str | Path) -> int:
    """Number of rows (tiles) in a feature file, without reading the features."""
    with h5py.File(path, "r") as h5:
        return int(h5["features"].shape[0])


def interop_coords_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``coords`` attributes CLAM and TRIDENT read, from our root ``attrs`` (see the module
    docstring); what ``attrs`` cannot tell is left out."""
    out: dict[str, Any] = {}
    if "slide_name" in attrs:
        out["name"] = Path(str(attrs["slide_name"])).stem
    if "level" in attrs:
        out["patch_level"] = int(attrs["level"])
    if "read_size" in attrs:
        out["patch_size"] = int(attrs["read_size"])
    elif "patch_size" in attrs:
        out["patch_size"] = int(attrs["patch_size"])
    exact = attrs.get("tile_size_level0", attrs.get("patch_size_level0"))
    if exact is not None:
        out["patch_size_level0"] = round(float(exact))
        out["tile_size_level0"] = float(exact)
    if "level_downsample" in attrs:
        downsample = float(attrs["level_downsample"])
        out["downsample"] = np.array([downsample, downsample], dtype=np.float64)
    if "level_dimensions" in attrs:
        out["level_dim"] = np.asarray(attrs["level_dimensions"], dtype=np.int64)
        out["downsampled_level_dim"] = out["level_dim"]
    if "slide_dimensions" in attrs:
        out["level0_width"], out["level0_height"] = (int(v) for v in attrs["slide_dimensions"])
    if "slide_mpp" in attrs:
        out["level0_magnification"] = 10.0 / float(attrs["slide_mpp"])
        if "read_size" in attrs and exact is not None:
            # The magnification of the pixels patch_size counts: patch_size * level0 / target
            # is then exactly our level-0 side.
            scale = float(attrs["read_size"]) / float(exact)
            out["target_magnification"] = out["level0_magnification"] * scale
    out["overlap"] = 0
    for key in ("tile_size", "target_mpp", "slide_mpp"):
        if key in attrs:
            out[key] = attrs[key]
    return out


def pt_path(out_dir: str | Path, slide: str | Path) -> Path:
    """Where CLAM's training layout keeps a slide's tensor: ``<out_dir>/pt_files/<stem>.pt``."""
    return Path(out_dir) / "pt_files" / f"{Path(slide).stem}.pt"


def write_pt(path: str | Path, features: np.ndarray) -> Path:
    """Save ``features`` (N, D) as a float32 torch tensor at ``path`` (``torch.load`` reads it),
    atomically. Returns the path. Raises FeatureFileError when it cannot be written."""
    import torch

    path = Path(path)
    tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: torch.save(tensor, temporary))
    except OSError as error:
        raise FeatureFileError(f"Could not write {path}: {error}") from error
    return path


def _checked_arrays(features: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.int64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(features):
        raise ValueError(
            f"coords must be (N, 2) with N = {len(features)} rows, got shape {coords.shape}"
        )
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values: refusing to write them")
    return features, coords


def _write_h5(
    path: Path, features: np.ndarray, coords: np.ndarray, attrs: Mapping[str, Any]
) -> None:
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=features)
        coords_ds = h5.create_dataset("coords", data=coords)
        for key, value in interop_coords_attrs(attrs).items():
            coords_ds.attrs[key] = value
        h5.attrs["format_version"] = FORMAT_VERSION
        json_keys = []
        for key, value in attrs.items():
            if key in _RESERVED:
                continue
            native = _native_attr(value)
            if native is None:
                json_keys.append(key)
                native = json.dumps(value, sort_keys=True, default=str)
            h5.attrs[key] = native
        h5.attrs[_JSON_KEYS_ATTR] = json.dumps(json_keys)
        h5.flush()
        # Written last: a reader that sees it knows everything before it is in place.
        h5.attrs[COMPLETE_ATTR] = True
        h5.flush()


def _native_attr(value: Any) -> Any:
    """The value as HDF5 stores it natively, or None when it must go through JSON."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    # numpy scalars (np.str_ included) become Python ones: h5py cannot store '<U' strings.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return None


def decode_attrs(raw: h5py.AttributeManager) -> dict[str, Any]:
    """HDF5 attributes as Python values (JSON-encoded ones decoded, bytes as str)."""
    json_keys = set(json.loads(_as_str(raw.get(_JSON_KEYS_ATTR, "[]"))))
    attrs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == _JSON_KEYS_ATTR:
            continue
        value = _as_str(value)
        attrs[key] = json.loads(value) if key in json_keys else _plain(value)
    return attrs


def _as_str(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars, so attrs compare and serialise like ordinary values."""
    return value.item() if isinstance(value, np.generic) else value
