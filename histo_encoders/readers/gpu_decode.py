"""The TIFF reader's CUDA path: nvJPEG batch decode, crop and area resize on the GPU.

Stored JPEG tiles are read as bytes on the CPU (JPEGTables spliced in, since nvJPEG takes whole
streams), decoded a batch at a time by ``torchvision.io.decode_jpeg(device="cuda")``, and the
regions are cut and shrunk on the device with the same box weights PIL's BOX filter uses, so the
pixels agree with the CPU path within the decoders' rounding. Tiles nvJPEG refuses (progressive,
CMYK, damaged) are decoded on the CPU one by one and counted; a slide whose JPEG data nvJPEG
would misread (RGB-coded Aperio JPEG) is decoded on the CPU with the reason in ``describe()``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from histo_encoders.readers.tiff_layout import full_jpeg_stream, is_progressive_jpeg
from histo_encoders.readers.tile_plan import ReadPlan, tile_overlap

_GLASS = 255
_SELF_CHECK_TOLERANCE = 16  # grey levels: decoder rounding is 1-3, a colour-space mix-up is 50+


def box_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 weights of PIL's BOX shrink from ``in_size`` to ``out_size``.

    PIL averages, with equal weights, the input pixels whose centres fall inside an output
    pixel's footprint [i * s, (i + 1) * s), s = in_size / out_size (not fractional coverage).
    """
    scale = in_size / out_size
    centre = (np.arange(out_size)[:, None] + 0.5) * scale
    first = np.maximum(np.floor(centre - 0.5 * scale + 0.5), 0)
    stop = np.minimum(np.floor(centre + 0.5 * scale + 0.5), in_size)
    pixel = np.arange(in_size)[None, :]
    offset = (pixel - centre + 0.5) / scale
    inside = (pixel >= first) & (pixel < stop) & (offset > -0.5) & (offset <= 0.5)
    weights = inside.astype(np.float64)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_regions(regions: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, R, R) uint8 regions -> (B, size, size, 3) uint8 with PIL's BOX weights, on the
    regions' device. Like PIL, rows are shrunk first and rounded to whole grey levels before
    the columns are, so results agree with ``resize_tile`` within one grey level."""
    read_size = regions.shape[-1]
    if read_size == size:
        return regions.permute(0, 2, 3, 1).contiguous()
    weights = torch.from_numpy(box_weights(read_size, size)).to(regions.device, torch.float32)
    x = regions.float() @ weights.T  # (B, 3, R, size): each row shrunk
    x = x.add_(0.5).floor_().clamp_(0, 255)  # PIL rounds halves up
    x = weights @ x  # (B, 3, size, size)
    x = x.add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous()


def paste_regions(
    regions: torch.Tensor, plan: ReadPlan, positions: np.ndarray, tiles: dict, level: Any
) -> None:
    """Fill (B, 3, R, R) ``regions`` from decoded stored tiles (C, H, W) on the device."""
    size = regions.shape[-1]
    regions.fill_(_GLASS)
    for slot, position in enumerate(positions):
        x, y = int(plan.x[position]), int(plan.y[position])
        for tile_index in plan.tiles_of(position, level):
            tile = tiles[tile_index]
            overlap = None if tile is None else tile_overlap(level, tile_index, x, y, size)
            if overlap is not None:
                (rows, columns), (tile_rows, tile_columns) = overlap
                regions[slot, :, rows, columns] = tile[:, tile_rows, tile_columns]


class StoredTileSource(Protocol):
    """What the GPU path needs of the TIFF reader (its declared interface, nothing private)."""

    path: str
    level: Any
    grid: Any
    options: Any
    stats: Any

    def read_stored_bytes(self, tile_indices: Sequence[int]) -> list[bytes | None]: ...

    def read_checked_bytes(self, tile_indices: Sequence[int]) -> list[bytes | None]: ...

    def decode_stored_tiles(self, tile_indices: Sequence[int]) -> list[np.ndarray | None]: ...


class GpuTileSupply:
    """Streams a TIFF reader's tiles with decoding (JPEG) and cut/resize on a CUDA device."""

    def __init__(self, reader: StoredTileSource, decode_batch: Any = None) -> None:
        self._reader = reader
        self._level = reader.level
        self.device = torch.device(reader.options.device)
        self._decode_batch = decode_batch or _nvjpeg_decode
        self._cpu_reason = _cpu_decode_reason(self._level)
        self._checked = False

    def decode_path(self) -> str:
        if self._cpu_reason is None:
            return f"{self.device.type}:nvjpeg+resize"
        return f"cpu:imagecodecs-{self._level.codec}+{self.device.type}:resize ({self._cpu_reason})"

    def stream(
        self, plan: ReadPlan, indices: np.ndarray, batch_size: int
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield (grid indices, (B, t, t, 3) uint8 on the device) in file-tile order."""
        uses = plan.uses.copy()
        live: dict[int, torch.Tensor | None] = {}
        stats = self._reader.stats
        read_size, tile_size = plan.read_size, self._reader.grid.tile_size
        for start in range(0, len(plan.order), batch_size):
            positions = plan.order[start : start + batch_size]
            needed = {t for p in positions for t in plan.tiles_of(p, self._level)}
            live.update(self._decode([t for t in sorted(needed) if t not in live]))
            stats.peak_decoded_tiles = max(stats.peak_decoded_tiles, len(live))
            regions = torch.empty(
                (len(positions), 3, read_size, read_size), dtype=torch.uint8, device=self.device
            )
            paste_regions(regions, plan, positions, live, self._level)
            tiles = resize_regions(regions, tile_size)
            for position in positions:
                for tile_index in plan.tiles_of(position, self._level):
                    uses[tile_index] -= 1
                    if uses[tile_index] == 0:
                        del live[tile_index]
            stats.tiles_delivered += len(positions)
            yield indices[positions], tiles

    def _decode(self, tile_indices: list[int]) -> dict[int, torch.Tensor | None]:
        """Stored tiles as (3, H, W) uint8 on the device (None for tiles the file omits)."""
        if not tile_indices:
            return {}
        reader, stats = self._reader, self._reader.stats
        stats.stored_tiles_decoded += len(tile_indices)
        if self._cpu_reason is not None:
            return dict(zip(tile_indices, self._cpu_decode(tile_indices), strict=True))
        # Checked as OpenSlide judges tiles: nvJPEG decodes some damage to garbage silently.
        data = reader.read_checked_bytes(tile_indices)
        decoded: dict[int, torch.Tensor | None] = {}
        batch = []
        for tile_index, tile_data in zip(tile_indices, data, strict=True):
            if tile_data is None:
                decoded[tile_index] = None
            elif is_progressive_jpeg(tile_data, self._level.jpegtables):
                self._fallback(decoded, tile_index, "progressive JPEG")
            else:
                batch.append((tile_index, full_jpeg_stream(tile_data, self._level.jpegtables)))
        if not self._checked and batch:
            self._self_check(*batch[0])
            if self._cpu_reason is not None:
                return dict(zip(tile_indices, self._cpu_decode(tile_indices), strict=True))
        decoded.update(self._gpu_decode(batch))
        return decoded

    def _gpu_decode(self, batch: list[tuple[int, bytes]]) -> dict[int, torch.Tensor | None]:
        if not batch:
            return {}
        try:
            images = self._decode_batch([stream for _, stream in batch], self.device)
        except RuntimeError:
            # One bad tile fails nvJPEG's whole batch: find it by decoding one at a time.
            return self._gpu_decode_one_by_one(batch)
        self._reader.stats.gpu_decoded += len(batch)
        return {tile_index: image for (tile_index, _), image in zip(batch, images, strict=True)}

    def _gpu_decode_one_by_one(self, batch: list[tuple[int, bytes]]) -> dict[int, Any]:
        decoded: dict[int, torch.Tensor | None] = {}
        for tile_index, stream in batch:
            try:
                decoded[tile_index] = self._decode_batch([stream], self.device)[0]
                self._reader.stats.gpu_decoded += 1
            except RuntimeError as error:
                self._fallback(decoded, tile_index, f"nvJPEG refused: {str(error)[:80]}")
        return decoded

    def _fallback(self, decoded: dict, tile_index: int, reason: str) -> None:
        """Decode one tile on the CPU (a corrupt tile raises SlideReadError there), counted."""
        stats = self._reader.stats
        stats.cpu_fallback_decodes += 1
        stats.fallback_reasons[reason] = stats.fallback_reasons.get(reason, 0) + 1
        decoded[tile_index] = self._cpu_decode([tile_index])[0]

    def _cpu_decode(self, tile_indices: list[int]) -> list[torch.Tensor | None]:
        arrays = self._reader.decode_stored_tiles(tile_indices)
        return [
            None if array is None else torch.from_numpy(array).to(self.device).permute(2, 0, 1)
            for array in arrays
        ]

    def _self_check(self, tile_index: int, stream: bytes) -> None:
        """Once per slide: the GPU's first tile must match the CPU decode, else the slide is
        decoded on the CPU (reported), never silently with wrong colours."""
        try:
            image = self._decode_batch([stream], self.device)[0]
        except RuntimeError:
            return  # this tile is refused anyway (counted later); check on the next one
        self._checked = True
        reference = self._cpu_decode([tile_index])[0]
        difference = int((image.int() - reference.int()).abs().max())
        if difference > _SELF_CHECK_TOLERANCE:
            self._cpu_reason = f"nvJPEG differs from the CPU decode by {difference} grey levels"
            warnings.warn(
                f"{self._reader.path}: {self._cpu_reason}; decoding this slide on the CPU",
                RuntimeWarning,
                stacklevel=2,
            )


def _cpu_decode_reason(level: Any) -> str | None:
    """Why this level's tiles cannot go to nvJPEG at all (None: they can)."""
    if level.codec != "jpeg":
        return f"{level.codec} has no GPU decoder here"
    if level.jpeg_rgb:
        return "RGB-coded JPEG (Aperio): nvJPEG would convert it as YCbCr"
    return None


def _nvjpeg_decode(streams: list[bytes], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(stream), dtype=torch.uint8) for stream in streams]
    with warnings.catch_warnings():
        # torchvision 0.29+ warns that its image codecs are deprecated in favour of TorchCodec.
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
