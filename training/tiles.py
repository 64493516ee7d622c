"""Training tiles: sampled from whole slides (the library's own tiling), or read from a folder.

Slides are planned ONCE: for each slide the library's tissue detection and ``plan_tiles`` give
the level-0 coordinates of every tissue tile at the target mpp; the result is cached as an
``.npz`` index in the run folder and reused on resume. Each epoch then draws tile indices from
that index; DataLoader workers read just those tiles with the library's reader. No slide is
scanned again.

The sampler hands the dataset ``(epoch, position, tile_index)`` triples; the position in the
epoch seeds the augmentation of that sample (see augment.py), which keeps runs reproducible
whatever the number of workers and wherever a run was resumed.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from histo_encoders.atomic import atomic_write
from histo_encoders.errors import ConfigError, SlideError
from training.augment import TwoViews, sample_generator

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_MAX_OPEN_READERS = 32  # per worker; Camelyon16 has 270 slides and each handle holds a cache
Sample = tuple[int, int, int]  # (epoch, position in the epoch, tile index)


@dataclass(frozen=True)
class TileIndexOptions:
    """What decides which tiles a slide contributes (part of the cache key)."""

    mpp: float
    tile_size: int
    min_tissue: float
    max_tiles_per_slide: int
    slide_mpp: float | None
    seed: int


@dataclass(frozen=True)
class TileIndex:
    """Every training tile of every slide: (slide id, level-0 coords), plus each slide's grid."""

    slide_paths: tuple[str, ...]
    slide_ids: np.ndarray  # (M,) int32
    coords: np.ndarray  # (M, 2) int64 level-0 (x, y), rows of one slide contiguous
    grids: tuple[dict[str, Any], ...]  # per slide: TileGrid fields except coords
    skipped: tuple[str, ...] = ()  # "path: reason" of slides that gave no tile

    def __len__(self) -> int:
        return int(self.slide_ids.shape[0])


def list_slides(spec: str) -> list[Path]:
    """Slides named by ``spec``: a folder (its slide files), a glob, or a text file of paths."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES)
    elif path.is_file() and path.suffix.lower() in (".txt", ".lst"):
        lines = [line.strip() for line in path.read_text().splitlines()]
        found = [Path(line) for line in lines if line and not line.startswith("#")]
    else:
        found = sorted(Path(p) for p in glob.glob(spec))
    if not found:
        raise ConfigError(
            f"data.slides={spec!r} names no slide: give a folder of slides, a glob such as "
            "'/data/camelyon16/train/*.tif', or a .txt file with one slide path per line."
        )
    return found


def load_or_build_index(
    slide_paths: Sequence[Path], options: TileIndexOptions, cache_path: Path
) -> TileIndex:
    """The tile index from ``cache_path`` if it was built with the same slides and options,
    else plan every slide now and write the cache (atomically)."""
    key = _cache_key(slide_paths, options)
    if cache_path.exists():
        with np.load(cache_path, allow_pickle=False) as cached:
            if str(cached["key"]) == key:
                return _index_from_npz(cached)
    index = build_index(slide_paths, options)
    _save_index(index, key, cache_path)
    return index


def build_index(slide_paths: Sequence[Path], options: TileIndexOptions) -> TileIndex:
    """Plan the tile grid of each slide with the library's tissue detection and tiling."""
    rng = np.random.default_rng(options.seed)
    ids, coords, grids, kept, skipped = [], [], [], [], []
    for path in slide_paths:
        try:
            grid = _plan_slide(path, options)
        except SlideError as err:  # one unreadable slide must not stop a 270-slide run
            skipped.append(f"{path}: {err}")
            print(f"[tiles] skipping {err}", file=sys.stderr)
            continue
        slide_coords = _subsample(np.asarray(grid.coords), options.max_tiles_per_slide, rng)
        if len(slide_coords) == 0:
            skipped.append(f"{path}: no tile with >= {options.min_tissue:.0%} tissue")
            continue
        ids.append(np.full(len(slide_coords), len(kept), dtype=np.int32))
        coords.append(slide_coords.astype(np.int64))
        grids.append(_grid_fields(grid))
        kept.append(str(path))
    if not kept:
        raise ConfigError(
            f"No tissue tile in any of {len(slide_paths)} slides ({skipped[:3]}...). Check "
            "data.slides, data.mpp, data.min_tissue, or give data.slide_mpp."
        )
    return TileIndex(
        slide_paths=tuple(kept),
        slide_ids=np.concatenate(ids),
        coords=np.concatenate(coords),
        grids=tuple(grids),
        skipped=tuple(skipped),
    )


def _plan_slide(path: Path, options: TileIndexOptions) -> Any:
    # The library's own planning, so pretraining tiles a slide exactly as `embed` does.
    from histo_encoders.slides import TissueSettings, plan_slide

    tissue = TissueSettings(min_tissue=options.min_tissue)
    plan = plan_slide(
        path, options.mpp, options.tile_size, tissue=tissue, slide_mpp=options.slide_mpp
    )
    return plan.grid


def _subsample(coords: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if limit <= 0 or len(coords) <= limit:
        return coords
    keep = np.sort(rng.choice(len(coords), size=limit, replace=False))
    return coords[keep]


def _grid_fields(grid: Any) -> dict[str, Any]:
    fields = dataclasses.asdict(grid) if dataclasses.is_dataclass(grid) else dict(vars(grid))
    fields.pop("coords")
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in fields.items()}


def _cache_key(slide_paths: Sequence[Path], options: TileIndexOptions) -> str:
    # Size and mtime stand in for content: re-scanned slides get a new index.
    files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in slide_paths]
    body = json.dumps({"options": dataclasses.asdict(options), "files": files}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _save_index(index: TileIndex, key: str, cache_path: Path) -> None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:  # a handle: np.savez would add ".npz" to a path
            np.savez(
                handle,
                key=np.array(key),
                slide_paths=np.array(index.slide_paths),
                slide_ids=index.slide_ids,
                coords=index.coords,
                grids=np.array(json.dumps(index.grids)),
                skipped=np.array(json.dumps(index.skipped)),
            )

    atomic_write(cache_path, write)


def _index_from_npz(cached: Any) -> TileIndex:
    return TileIndex(
        slide_paths=tuple(str(p) for p in cached["slide_paths"]),
        slide_ids=cached["slide_ids"],
        coords=cached["coords"],
        grids=tuple(json.loads(str(cached["grids"]))),
        skipped=tuple(json.loads(str(cached["skipped"]))),
    )


class SlideTileDataset(Dataset):
    """Two augmented views of indexed slide tiles, read on demand in the worker processes."""

    def __init__(
        self, index: TileIndex, views: TwoViews, seed: int, slide_mpp: float | None
    ) -> None:
        self.index = index
        self.views = views
        self.seed = seed
        self.slide_mpp = slide_mpp
        self._starts = np.searchsorted(index.slide_ids, np.arange(len(index.slide_paths)))
        self._readers: OrderedDict[int, Any] = OrderedDict()  # per worker, opened lazily

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position, tile_index = sample
        tile = self.read_tile(tile_index)
        return self.views(tile, sample_generator(self.seed, epoch, position))

    def read_tile(self, tile_index: int) -> np.ndarray:
        """Tile ``tile_index`` of the index as (tile_size, tile_size, 3) uint8."""
        slide_id = int(self.index.slide_ids[tile_index])
        reader = self._reader(slide_id)
        return reader.read_tiles([tile_index - int(self._starts[slide_id])])[0]

    def _reader(self, slide_id: int) -> Any:
        if slide_id in self._readers:
            self._readers.move_to_end(slide_id)
            return self._readers[slide_id]
        if len(self._readers) >= _MAX_OPEN_READERS:
            _, oldest = self._readers.popitem(last=False)
            oldest.close()
        reader = _open_reader(self.index, slide_id, self._starts, self.slide_mpp)
        self._readers[slide_id] = reader
        return reader

    def __getstate__(self) -> dict[str, Any]:
        # Open slide handles do not cross process boundaries: each worker opens its own.
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()
        return state


def _open_reader(index: TileIndex, slide_id: int, starts: np.ndarray, slide_mpp: float | None):
    from histo_encoders.readers import OpenSlideReader
    from histo_encoders.slides import TileGrid, open_slide

    path = index.slide_paths[slide_id]
    end = starts[slide_id + 1] if slide_id + 1 < len(starts) else len(index)
    grid = TileGrid(coords=index.coords[starts[slide_id] : end], **index.grids[slide_id])
    with open_slide(path, mpp=slide_mpp) as slide:
        info = slide.info
    return OpenSlideReader(path, info, grid)


class TileFolderDataset(Dataset):
    """Two augmented views of tile images in a folder (searched recursively)."""

    def __init__(self, root: str | Path, views: TwoViews, seed: int) -> None:
        self.paths = list_images(root)
        self.views = views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position, tile_index = sample
        tile = load_image(self.paths[tile_index])
        return self.views(tile, sample_generator(self.seed, epoch, position))


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root``, sorted; ConfigError if there is none."""
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ConfigError(f"No tile image ({', '.join(IMAGE_SUFFIXES)}) under {root}.")
    return paths


def load_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy needs one


class EpochSampler(Sampler[Sample]):
    """Draws ``samples_per_epoch`` tile indices per epoch and deals them out to ranks.

    The global order of an epoch depends only on (seed, epoch). Global batch b holds positions
    [b * B * W, (b + 1) * B * W); rank r takes its contiguous share of B. ``set_state`` moves to
    any (epoch, step), which is how a resumed run continues mid-epoch.
    """

    def __init__(
        self,
        num_tiles: int,
        samples_per_epoch: int,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        self.num_tiles = num_tiles
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        global_batch = batch_size * world_size
        wanted = samples_per_epoch or num_tiles
        self.steps_per_epoch = wanted // global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"An epoch of {wanted} tiles is smaller than the global batch {global_batch}: "
                "raise data.samples_per_epoch or lower data.batch_size."
            )
        self.epoch = 0
        self.start_step = 0

    def set_state(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global tile order of ``epoch`` (steps_per_epoch * global batch,)."""
        total = self.steps_per_epoch * self.batch_size * self.world_size
        rng = np.random.default_rng([self.seed, epoch])
        repeats = math.ceil(total / self.num_tiles)
        order = np.concatenate([rng.permutation(self.num_tiles) for _ in range(repeats)])
        return order[:total]

    def __iter__(self) -> Iterator[Sample]:
        order = self.epoch_order(self.epoch)
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps_per_epoch):
            first = step * global_batch + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                yield (self.epoch, position, int(order[position]))

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.batch_size
