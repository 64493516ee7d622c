"""MoCo v2 (He et al. 2020; Chen et al. 2020): the whole method in one module.

A query encoder (timm backbone + MLP head) is trained by SGD; a key encoder of the same shape
follows it as an exponential moving average of its parameters and receives no gradient. Keys of
past batches wait in a fixed-size queue as negatives. The loss is InfoNCE with temperature T over
one positive (the other view of the same tile) and K negatives (the queue).

Shapes below: N = per-rank batch, C = backbone width (2048 for ResNet-50), D = projection dim
(128), K = queue size (65536).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from histo_encoders.errors import ConfigError

# Encodes a batch of key images with the key encoder; distributed.py supplies the shuffled one.
KeyEncodeFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
# Gathers keys of every rank (identity in a single process); see distributed.py.
GatherFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class MocoOutput:
    """One step's loss and what the logs need."""

    loss: torch.Tensor  # () fp32
    logits: torch.Tensor  # (N, 1 + K) fp32, column 0 is the positive
    keys: torch.Tensor  # (N, D) fp32, normalised, detached


def build_backbone(arch: str, model_args: dict | None = None) -> nn.Module:
    """A timm backbone returning pooled features: its state-dict keys are timm's own names."""
    try:
        return timm.create_model(arch, pretrained=False, num_classes=0, **(model_args or {}))
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(
            f"timm cannot build {arch!r} with model_args={model_args}: {err}. "
            "Check model.arch and model.model_args (`timm.list_models()` lists architectures)."
        ) from err


class ProjectionHead(nn.Sequential):
    """MoCo v2 head: Linear(C, hidden) - ReLU - Linear(hidden, D), no BatchNorm."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
        )


class Encoder(nn.Module):
    """Backbone followed by the projection head; ``backbone`` is what gets exported."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))  # (N, 3, H, W) -> (N, C) -> (N, D)


def plain_key_encode(encoder_k: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Key forward without shuffling (single process, or SyncBN / split BN)."""
    return encoder_k(images)


def no_gather(keys: torch.Tensor) -> torch.Tensor:
    return keys


class MoCo(nn.Module):
    """Query/key encoders, the negative queue and its pointer.

    The caller may pass a wrapped query encoder (DDP) to ``forward``; the key encoder and the
    queue are never touched by autograd.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        dim: int = 128,
        hidden_dim: int | None = None,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float = 0.2,
    ) -> None:
        super().__init__()
        width = backbone.num_features
        self.encoder_q = Encoder(backbone, ProjectionHead(width, hidden_dim or width, dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad_(False)  # updated only by momentum, never by gradients
        self.momentum = momentum
        self.temperature = temperature
        # The queue is kept in fp32 whatever the autocast dtype: its dot products are the logits.
        queue = F.normalize(torch.randn(dim, queue_size), dim=0)  # (D, K)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m * key + (1 - m) * query, for parameters only (BN buffers are not averaged)."""
        params_k = list(self.encoder_k.parameters())
        params_q = [p.detach() for p in self.encoder_q.parameters()]
        torch._foreach_mul_(params_k, self.momentum)
        torch._foreach_add_(params_k, params_q, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (B_global, D), gathered from every rank, at the pointer; advance it."""
        batch = keys.shape[0]
        size = self.queue.shape[1]
        if size % batch != 0:
            raise ConfigError(
                f"model.queue_size={size} is not a multiple of the global batch {batch}: "
                "choose data.batch_size x world size dividing the queue size."
            )
        ptr = int(self.queue_ptr)
        self.queue[:, ptr : ptr + batch] = keys.detach().float().T  # (D, B_global)
        self.queue_ptr.fill_((ptr + batch) % size)

    def forward(
        self,
        im_q: torch.Tensor,
        im_k: torch.Tensor,
        *,
        query_encoder: nn.Module | None = None,
        key_encode: KeyEncodeFn = plain_key_encode,
        gather: GatherFn = no_gather,
    ) -> MocoOutput:
        """Loss for views ``im_q``, ``im_k`` (N, 3, H, W); updates the key encoder and queue.

        ``query_encoder`` is ``encoder_q`` itself or a wrapper of it (DDP); ``key_encode`` runs
        the key encoder (shuffled across ranks or not); ``gather`` collects every rank's keys
        for the queue.
        """
        encode_q = self.encoder_q if query_encoder is None else query_encoder
        q = F.normalize(encode_q(im_q).float(), dim=1)  # (N, D) fp32
        with torch.no_grad():
            self.momentum_update()  # before the key forward, as in the reference
            k = F.normalize(key_encode(self.encoder_k, im_k).float(), dim=1)  # (N, D)
        logits = self.logits(q, k)  # (N, 1 + K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, labels)
        self.enqueue(gather(k))
        return MocoOutput(loss=loss, logits=logits.detach(), keys=k)

    def logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """InfoNCE logits in fp32: positive first, then the queue's negatives, over T."""
        with torch.autocast(device_type=q.device.type, enabled=False):
            l_pos = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
            l_neg = q @ self.queue.clone().detach()  # (N, K); clone: enqueue follows in-place
            return torch.cat([l_pos, l_neg], dim=1) / self.temperature


def contrastive_accuracy(logits: torch.Tensor) -> float:
    """Fraction of queries whose positive key beats every negative (top-1 of the logits)."""
    return float((logits.argmax(dim=1) == 0).float().mean())


def build_moco(
    arch: str,
    model_args: dict | None,
    *,
    dim: int,
    hidden_dim: int | None,
    queue_size: int,
    momentum: float,
    temperature: float,
) -> MoCo:
    """MoCo v2 around a fresh timm backbone ``arch`` (random init, pooled features)."""
    return MoCo(
        build_backbone(arch, model_args),
        dim=dim,
        hidden_dim=hidden_dim,
        queue_size=queue_size,
        momentum=momentum,
        temperature=temperature,
    )
