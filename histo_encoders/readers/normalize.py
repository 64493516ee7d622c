"""Normalization inside the readers: uint8 RGB -> float32 ``(x / 255 - mean) / std``.

Done as ``x * scale + offset`` per channel; on the CPU the shrink writes normalized values itself
by lookup in a (3, 256) table (the same float32 ``offset + v * scale`` for every grey level v),
which costs less than converting and scaling afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class NormalizeTable:
    """Per-channel scale and offset for ``(mean, std)`` given for pixels scaled to [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean_t = torch.tensor([float(v) for v in mean])
        std_t = torch.tensor([float(v) for v in std])
        if mean_t.shape != (3,) or std_t.shape != (3,):
            raise ValueError(f"normalize needs 3 means and 3 stds, got {mean!r} and {std!r}")
        self._scale = 1.0 / (std_t * 255.0)
        self._offset = -mean_t * 255.0 * self._scale
        levels = torch.arange(256, dtype=torch.float32)
        self.table = torch.addcmul(
            self._offset[:, None], levels[None, :], self._scale[:, None]
        ).numpy()
        self._device_buffer: torch.Tensor | None = None

    def on_device(self, tiles: torch.Tensor) -> torch.Tensor:
        """Normalize a (B, t, t, 3) uint8 batch where it lies (one reused float buffer)."""
        buffer = self._device_buffer
        if (
            buffer is None
            or buffer.device != tiles.device
            or buffer.shape[0] < len(tiles)
            or buffer.shape[1:] != tiles.shape[1:]
        ):
            self._device_buffer = torch.empty(tiles.shape, dtype=torch.float32, device=tiles.device)
            self._scale = self._scale.to(tiles.device)
            self._offset = self._offset.to(tiles.device)
        out = self._device_buffer[: len(tiles)]
        out.copy_(tiles)
        torch.addcmul(self._offset, out, self._scale, out=out)
        return out
