"""A folder of feature files read lazily: ours, CLAM's and TRIDENT's, for users' own training code.

:class:`FeatureFolder` lists the slides of a folder without opening them and reads one slide's
features (or a range of its rows) at a time; :class:`BagDataset` is a torch ``Dataset`` with one
bag per slide. The files may come from any of the field's tools:

- ``<slide>.h5`` with ``features`` (N, D) and optionally ``coords`` (N, 2): written by
  ``histo-encoders embed``, CLAM's ``extract_features_fp.py`` (``h5_files/``) or TRIDENT
  (``features_<encoder>/``);
- ``<slide>.pt`` holding the (N, D) tensor: CLAM's ``pt_files/``, slide2vec's
  ``tile_embeddings/`` (a dict with ``features`` [and ``coords``] is read too).

Pointing at CLAM's feature folder (holding ``h5_files/`` and ``pt_files/``) works as-is. Our
own files carry a completeness mark and provenance; a foreign file cannot say whether its writer
finished, so reading one warns once per folder. Only what is really broken is refused, with
:class:`~histo_encoders.errors.FeatureFileError`: unreadable files, no ``features``, features
that are not (N, D) or not finite, ``coords`` that do not match them, and our own files whose
writer did not finish.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from histo_encoders.errors import FeatureFileError
from histo_encoders.pipeline.features import COMPLETE_ATTR, FINGERPRINT_ATTR, decode_attrs

# Where the field's tools put tile features inside the folder a user points at.
SUBFOLDERS = ("h5_files", "pt_files", "tile_embeddings")
_SUFFIXES = (".h5", ".pt")


class ForeignFeaturesWarning(UserWarning):
    """Feature files not written by histo-encoders: their completeness cannot be checked."""


@dataclass(frozen=True)
class SlideFeatures:
    """One slide's tile features as read from its file.

    ``features`` (n, D) float32; ``coords`` (n, 2) int64 level-0 top-left, or None when the file
    has none (``.pt`` files); ``attrs`` the file's root attributes, and ``coords_attrs`` those of
    its ``coords`` dataset; ``foreign`` is True for a file another tool wrote.
    """

    slide_id: str
    path: Path
    features: np.ndarray
    coords: np.ndarray | None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    coords_attrs: Mapping[str, Any] = field(default_factory=dict)
    foreign: bool = False

    @property
    def n_tiles(self) -> int:
        """Rows read (tiles)."""
        return int(self.features.shape[0])


def read_slide_features(
    path: str | Path, rows: slice | None = None, *, slide_id: str | None = None
) -> SlideFeatures:
    """Read one feature file (``.h5`` or ``.pt``, see the module docstring); ``rows`` reads only
    that range of tiles (an h5 file reads nothing else from disk).

    Raises FeatureFileError for a missing or broken file.
    """
    path = Path(path)
    slide_id = slide_id or path.stem
    if not path.is_file():
        raise FeatureFileError(f"No feature file at {path}.")
    if path.suffix == ".pt":
        return _read_pt(path, rows, slide_id)
    return _read_h5(path, rows, slide_id)


def count_rows(path: str | Path) -> int:
    """Tiles in a feature file, without reading its features (``.pt``: the whole tensor)."""
    path = Path(path)
    if path.suffix == ".pt":
        return read_slide_features(path).n_tiles
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return _features_shape(path, h5)[0]
    except OSError as error:
        raise _unreadable(path, error) from error


class FeatureFolder(Mapping[str, Path]):
    """The slides of a feature folder: slide id -> file, read one at a time.

    ``folder`` holds ``<slide>.h5`` or ``<slide>.pt`` files, or the tool's own subfolders
    (``h5_files/``, ``pt_files/``, ``tile_embeddings/``); an ``.h5`` file is preferred to a
    ``.pt`` of the same slide (it has coordinates). Nothing is opened until a slide is read.
    Raises FeatureFileError when the folder does not exist.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FeatureFileError(
                f"No feature folder at {self.folder}: give the folder `histo-encoders embed "
                "--out` wrote (or CLAM's feature folder, or TRIDENT's features_<encoder>/)."
            )
        self._files = _find_files(self.folder)
        self._warned = False

    def __getitem__(self, slide_id: str) -> Path:
        try:
            return self._files[slide_id]
        except KeyError as error:
            raise KeyError(f"no feature file for slide {slide_id!r} in {self.folder}") from error

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def read(self, slide_id: str, rows: slice | None = None) -> SlideFeatures:
        """Read ``slide_id``'s features (``rows``: only that range). Raises FeatureFileError."""
        data = read_slide_features(self[slide_id], rows, slide_id=slide_id)
        if data.foreign and not self._warned:
            self._warned = True
            warnings.warn(
                f"{self.folder} holds feature files histo-encoders did not write (e.g. "
                f"{data.path.name}): their completeness cannot be checked. Files that are "
                "readable and consistent are used; make sure the tool that wrote them finished.",
                ForeignFeaturesWarning,
                stacklevel=2,
            )
        return data

    def n_tiles(self, slide_id: str) -> int:
        """Number of tiles of ``slide_id``, without reading its features."""
        return count_rows(self[slide_id])

    def slides(self) -> Iterator[SlideFeatures]:
        """Every slide's features, one slide in memory at a time, in slide id order."""
        for slide_id in self:
            yield self.read(slide_id)


class BagDataset(Dataset):
    """A torch ``Dataset``: item ``i`` is one slide's bag, read from disk when asked for.

    Each item is a dict: ``slide_id``, ``features`` (n, D) float32 tensor, ``coords`` (n, 2)
    int64 tensor (empty (0, 2) when the file has none) and, when ``labels`` maps slide ids to
    integers, ``label``. ``slide_ids`` picks and orders the slides (default: all, sorted, or
    those in ``labels``); ``max_tiles`` keeps a random subset of that many tiles per bag, drawn
    from ``generator``. Use with ``DataLoader(dataset, batch_size=1)``; bags differ in length.
    """

    def __init__(
        self,
        folder: str | Path | FeatureFolder,
        slide_ids: list[str] | None = None,
        *,
        labels: Mapping[str, int] | None = None,
        max_tiles: int | None = None,
        generator: Any = None,
    ) -> None:
        self.folder = folder if isinstance(folder, FeatureFolder) else FeatureFolder(folder)
        chosen = list(slide_ids) if slide_ids is not None else None
        if chosen is None:
            chosen = list(labels) if labels is not None else list(self.folder)
        missing = [s for s in chosen if s not in self.folder]
        if missing:
            raise FeatureFileError(
                f"{len(missing)} slide(s) have no feature file in {self.folder.folder} "
                f"(e.g. {missing[:5]})."
            )
        self.slide_ids = chosen
        self.labels = dict(labels) if labels is not None else None
        self.max_tiles = max_tiles
        self.generator = generator

    def __len__(self) -> int:
        return len(self.slide_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        slide_id = self.slide_ids[index]
        data = self.folder.read(slide_id)
        features = torch.from_numpy(data.features)
        coords = torch.from_numpy(
            data.coords if data.coords is not None else np.zeros((0, 2), np.int64)
        )
        if self.max_tiles is not None and data.n_tiles > self.max_tiles:
            keep = torch.randperm(data.n_tiles, generator=self.generator)[: self.max_tiles]
            features = features[keep]
            coords = coords[keep] if len(coords) else coords
        item: dict[str, Any] = {"slide_id": slide_id, "features": features, "coords": coords}
        if self.labels is not None:
            item["label"] = int(self.labels[slide_id])
        return item


def _find_files(folder: Path) -> dict[str, Path]:
    places = [folder, *(folder / sub for sub in SUBFOLDERS if (folder / sub).is_dir())]
    found: dict[str, Path] = {}
    for suffix in _SUFFIXES:  # .h5 first: it wins over a .pt of the same slide
        for place in places:
            for path in sorted(place.glob(f"*{suffix}")):
                if path.name.startswith(".") or not path.is_file():
                    continue  # hidden, or a writer's temporary file
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def _read_h5(path: Path, rows: slice | None, slide_id: str) -> SlideFeatures:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = decode_attrs(h5.attrs)
            shape = _features_shape(path, h5)
            if shape[1]:
                features = np.asarray(h5["features"][rows or slice(None)])
            else:
                features = np.zeros((0, 0), np.float32)
            coords, coords_attrs = _read_coords(path, h5, shape[0], rows)
    except OSError as error:
        raise _unreadable(path, error) from error
    ours = FINGERPRINT_ATTR in attrs or "format_version" in attrs
    if ours and not attrs.get(COMPLETE_ATTR, False):
        raise FeatureFileError(
            f"Feature file {path} was not completely written. Delete it and embed the slide again."
        )
    features = _checked_features(path, features)
    return SlideFeatures(slide_id, path, features, coords, attrs, coords_attrs, foreign=not ours)


def _features_shape(path: Path, h5: Any) -> tuple[int, int]:
    if "features" not in h5:
        raise FeatureFileError(
            f"{path} has no `features` dataset (it holds {sorted(h5)}): it is not a tile "
            "feature file. A coordinates-only (patches) file must be embedded first."
        )
    shape = tuple(h5["features"].shape)
    if len(shape) == 1 and shape[0] == 0:
        return 0, 0  # TRIDENT writes an empty slide as a (0,) array
    if len(shape) != 2:
        raise FeatureFileError(
            f"{path}: `features` has shape {shape}, not (tiles, dim). A 1-D vector is a "
            "slide-level embedding, not a bag of tile features."
        )
    return int(shape[0]), int(shape[1])


def _read_coords(
    path: Path, h5: Any, n_rows: int, rows: slice | None
) -> tuple[np.ndarray | None, dict[str, Any]]:
    if "coords" not in h5:
        return None, {}
    dataset = h5["coords"]
    if dataset.ndim != 2 or dataset.shape[1] != 2 or dataset.shape[0] != n_rows:
        raise FeatureFileError(
            f"{path}: `coords` has shape {dataset.shape} but `features` has {n_rows} rows; "
            "the file is inconsistent. Extract its features again."
        )
    coords = np.asarray(dataset[rows or slice(None)]).round().astype(np.int64)
    return coords, decode_attrs(dataset.attrs)


def _read_pt(path: Path, rows: slice | None, slide_id: str) -> SlideFeatures:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise _unreadable(path, error) from error
    coords = None
    if isinstance(payload, Mapping):
        if "features" not in payload:
            raise FeatureFileError(f"{path} holds a dict without `features`: {sorted(payload)}")
        coords = payload.get("coords")
        payload = payload["features"]
    if not isinstance(payload, torch.Tensor):
        raise FeatureFileError(f"{path} holds a {type(payload).__name__}, not a feature tensor")
    if payload.ndim != 2:
        raise FeatureFileError(f"{path}: the tensor has shape {tuple(payload.shape)}, not (N, D)")
    features = payload.float().numpy()
    if coords is not None:
        coords = np.asarray(coords).round().astype(np.int64)
        if coords.shape != (len(features), 2):
            raise FeatureFileError(
                f"{path}: coords {coords.shape} do not match {len(features)} feature rows"
            )
        coords = coords[rows or slice(None)]
    features = _checked_features(path, features[rows or slice(None)])
    return SlideFeatures(slide_id, path, features, coords, foreign=True)


def _checked_features(path: Path, features: np.ndarray) -> np.ndarray:
    features = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise FeatureFileError(
            f"{path}: features contain NaN or infinite values. Extract them again."
        )
    return features


def _unreadable(path: Path, error: BaseException) -> FeatureFileError:
    return FeatureFileError(
        f"Cannot read feature file {path}: {error}. It is truncated or not a feature file; "
        "extract its features again."
    )
