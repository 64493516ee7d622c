"""A MoCo small enough for exact arithmetic checks, shared by the MoCo tests."""

from __future__ import annotations

import torch
from torch import nn

from training.moco import MoCo


class StubBackbone(nn.Module):
    """Conv + BN + pooled features: small enough for exact arithmetic checks."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def stub_moco(queue_size: int = 8, momentum: float = 0.9) -> MoCo:
    """A seeded MoCo over :class:`StubBackbone` (dim 4, hidden 5)."""
    torch.manual_seed(0)
    return MoCo(StubBackbone(), dim=4, hidden_dim=5, queue_size=queue_size, momentum=momentum)
