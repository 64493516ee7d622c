"""Bags for MIL: a labels CSV, one feature file per slide, cached in memory, and batching.

A bag is one slide: its tile features ``(N, D)`` and level-0 ``coords`` ``(N, 2)``. Feature files
are read with the library's :class:`histo_encoders.pipeline.FeatureFolder`, so a folder written
by ``histo-encoders embed``, CLAM (``h5_files/`` or ``pt_files/``) or TRIDENT benchmarks as it
is (foreign files warn once that their completeness cannot be checked). Features are read once
and kept in memory (optionally as float16, half the RAM) so an epoch over hundreds of slides
costs only the model's arithmetic.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from histo_encoders.errors import FeatureFileError
from histo_encoders.pipeline import FeatureFolder, read_slide_features

from .errors import EmptyBagError, MilDataError

BagMode = Literal["padded", "one", "sample"]
SPLIT_NAMES = ("train", "test")


@dataclass(frozen=True)
class SlideLabel:
    """One row of the labels CSV. ``patient_id`` defaults to the slide id (one slide each)."""

    slide_id: str
    label: int
    patient_id: str
    split: str | None = None


@dataclass(frozen=True)
class LabelTable:
    """The labels CSV: rows in file order and the class names (index = class number)."""

    rows: tuple[SlideLabel, ...]
    class_names: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_split(self) -> bool:
        return all(row.split is not None for row in self.rows)


@dataclass(frozen=True)
class FeatureFile:
    """What a feature file holds: tile features, level-0 coordinates and provenance attrs."""

    features: np.ndarray  # (N, D) float32
    coords: np.ndarray | None  # (N, 2) int64, level-0 top-left (x, y); None if not recorded
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Bag:
    """One slide ready for a model; ``features`` stay on the host (float32 or float16)."""

    slide_id: str
    patient_id: str
    label: int
    features: torch.Tensor  # (N, D)
    coords: np.ndarray | None  # (N, 2); None when the feature file has none (.pt files)
    split: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)  # the feature file's provenance

    @property
    def n_tiles(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class Batch:
    """Bags padded to the longest: ``mask`` is True on real tiles, False on padding."""

    features: torch.Tensor  # (B, N_max, D) float32
    mask: torch.Tensor  # (B, N_max) bool
    labels: torch.Tensor  # (B,) int64
    slide_ids: tuple[str, ...]


def read_labels(path: str | Path, class_names: Sequence[str] | None = None) -> LabelTable:
    """Read a labels CSV with columns ``slide_id, label`` and optional ``patient_id, split``.

    Labels may be words (``normal``/``tumor``) or integers; classes are numbered in sorted order
    unless ``class_names`` gives the order (for a binary task the second class is the positive one).
    ``split`` values must be ``train`` or ``test``.

    Raises:
        FileNotFoundError: the CSV does not exist.
        MilDataError: a required column is missing, a slide id repeats, or a label is unknown.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    _check_columns(path, records)
    names = tuple(class_names) if class_names else _sorted_class_names(records)
    return LabelTable(tuple(_parse_row(path, rec, names) for rec in records), names)


def _check_columns(path: Path, records: list[dict[str, str]]) -> None:
    if not records:
        raise MilDataError(f"{path} has no rows: add one line per slide (slide_id,label,...).")
    missing = {"slide_id", "label"} - set(records[0])
    if missing:
        raise MilDataError(
            f"{path} lacks column(s) {sorted(missing)}; the header must include slide_id and label "
            "(optional: patient_id, split)."
        )
    seen: set[str] = set()
    for rec in records:
        if rec["slide_id"] in seen:
            raise MilDataError(f"{path}: slide_id {rec['slide_id']!r} appears twice; keep one row.")
        seen.add(rec["slide_id"])


def _sorted_class_names(records: list[dict[str, str]]) -> tuple[str, ...]:
    values = {rec["label"].strip() for rec in records}
    # Integers sort numerically so "10" comes after "9"; words sort alphabetically.
    if all(v.lstrip("-").isdigit() for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def _parse_row(path: Path, rec: dict[str, str], names: tuple[str, ...]) -> SlideLabel:
    label = rec["label"].strip()
    if label not in names:
        raise MilDataError(f"{path}: label {label!r} of {rec['slide_id']!r} is not in {names}.")
    split = (rec.get("split") or "").strip().lower() or None
    if split is not None and split not in SPLIT_NAMES:
        raise MilDataError(
            f"{path}: split {split!r} of {rec['slide_id']!r} must be one of {SPLIT_NAMES} "
            "(the validation set is drawn from train)."
        )
    patient = (rec.get("patient_id") or "").strip() or rec["slide_id"]
    return SlideLabel(rec["slide_id"], names.index(label), patient, split)


def read_feature_file(path: str | Path) -> FeatureFile:
    """Read one slide's feature file (``.h5`` with ``features`` [+ ``coords``], or ``.pt``).

    The single place the benchmark reads a feature file (through the library's reader). The
    attrs are the file's root attributes, with its ``coords`` attributes (CLAM's and TRIDENT's
    tile geometry) under them where the root does not say.

    Raises:
        FeatureFileError: missing, unreadable, inconsistent or incompletely written file.
    """
    data = read_slide_features(path)
    return FeatureFile(data.features, data.coords, {**data.coords_attrs, **data.attrs})


def load_bags(
    features_dir: str | Path,
    labels: LabelTable,
    *,
    half: bool = False,
) -> list[Bag]:
    """Read every labelled slide's features from ``features_dir`` into memory.

    ``features_dir`` holds ``<slide_id>.h5`` (or ``.pt``) files, or CLAM's ``h5_files/`` and
    ``pt_files/``. ``half`` keeps features as float16 (half the RAM; batches are cast back to
    float32).

    Raises:
        FeatureFileError: some labelled slides have no feature file (all are listed), or one
            is broken.
        EmptyBagError: a slide has zero tiles.
        MilDataError: feature dimensions differ between slides.
    """
    folder = FeatureFolder(features_dir)
    _check_all_present(folder, labels)
    bags = [_load_bag(folder, row, half) for row in labels.rows]
    dims = {bag.features.shape[1] for bag in bags}
    if len(dims) > 1:
        raise MilDataError(
            f"Feature files in {features_dir} have different widths {sorted(dims)}: they come "
            "from different encoders. Put each encoder's files in its own folder."
        )
    return bags


def _check_all_present(folder: FeatureFolder, labels: LabelTable) -> None:
    missing = [r.slide_id for r in labels.rows if r.slide_id not in folder]
    if missing:
        raise FeatureFileError(
            f"{len(missing)} labelled slide(s) have no feature file in {folder.folder} "
            f"(e.g. {missing[:5]}): embed them, or drop their rows from the labels CSV."
        )


def _load_bag(folder: FeatureFolder, row: SlideLabel, half: bool) -> Bag:
    data = folder.read(row.slide_id)
    if data.n_tiles == 0:
        raise EmptyBagError(row.slide_id)
    features = torch.from_numpy(data.features)
    if half:
        features = features.half()
    attrs = {**data.coords_attrs, **data.attrs}
    return Bag(row.slide_id, row.patient_id, row.label, features, data.coords, row.split, attrs)


def collate(
    bags: Sequence[Bag],
    *,
    max_tiles: int | None = None,
    generator: torch.Generator | None = None,
) -> Batch:
    """Pad bags into one batch; with ``max_tiles`` keep a random sample of at most that many tiles.

    Raises:
        EmptyBagError: a bag has no tiles.
    """
    picked = [_sample_tiles(bag, max_tiles, generator) for bag in bags]
    longest = max(t.shape[0] for t in picked)
    dim = picked[0].shape[1]
    # Only the padded rows are zeroed: filling the whole batch first costs as much memory
    # traffic as the copy itself, ~15% of an ABMIL epoch on a CPU.
    features = torch.empty(len(picked), longest, dim, dtype=torch.float32)
    mask = torch.zeros(len(picked), longest, dtype=torch.bool)
    for i, tiles in enumerate(picked):
        features[i, : tiles.shape[0]] = tiles
        features[i, tiles.shape[0] :] = 0.0
        mask[i, : tiles.shape[0]] = True
    labels = torch.tensor([bag.label for bag in bags], dtype=torch.int64)
    return Batch(features, mask, labels, tuple(bag.slide_id for bag in bags))


def _sample_tiles(
    bag: Bag, max_tiles: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    if bag.n_tiles == 0:
        raise EmptyBagError(bag.slide_id)
    if max_tiles is None or bag.n_tiles <= max_tiles:
        return bag.features
    keep = torch.randperm(bag.n_tiles, generator=generator)[:max_tiles]
    return bag.features[keep]


def iterate_batches(
    bags: Sequence[Bag],
    *,
    mode: BagMode = "padded",
    batch_size: int = 8,
    sample_tiles: int = 512,
    shuffle: bool = False,
    seed: int = 0,
) -> Iterator[Batch]:
    """Yield batches over ``bags``.

    ``padded``: ``batch_size`` slides padded to the longest; ``one``: one slide per batch;
    ``sample``: ``batch_size`` slides, each a fresh random sample of ``sample_tiles`` tiles
    (used for training only; evaluation should see every tile).
    """
    generator = torch.Generator().manual_seed(seed)
    size = 1 if mode == "one" else batch_size
    max_tiles = sample_tiles if mode == "sample" else None
    for positions in _batch_positions(bags, size, shuffle, mode == "padded", generator):
        chunk = [bags[int(i)] for i in positions]
        yield collate(chunk, max_tiles=max_tiles, generator=generator)


def _batch_positions(
    bags: Sequence[Bag], size: int, shuffle: bool, bucket: bool, generator: torch.Generator
) -> list[torch.Tensor]:
    """Positions of each batch. Shuffled padded batches are drawn from windows of 16 batches
    sorted by length, so a batch holds bags of similar length (little padding) and batch order
    stays random."""
    n = len(bags)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if not (shuffle and bucket and size > 1):
        return list(order.split(size))
    lengths = torch.tensor([bag.n_tiles for bag in bags])
    batches: list[torch.Tensor] = []
    for window in order.split(16 * size):
        batches += list(window[lengths[window].argsort(stable=True)].split(size))
    return [batches[int(i)] for i in torch.randperm(len(batches), generator=generator)]
