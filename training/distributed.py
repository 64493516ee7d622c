"""Process groups, and keeping BatchNorm from leaking the positive key (MoCo's "shuffle BN").

With plain BatchNorm, a query and its key are normalised with statistics of the same batch, so
the model can find the positive through the batch statistics instead of the image content, and
the contrastive accuracy climbs while the features stay poor. The remedies, by ``model.bn_mode``:

- ``shuffle`` (reference, needs >= 2 ranks): gather the key images of every rank, permute them,
  encode this rank's slice of the permutation, gather the keys and undo the permutation. Each
  key is then normalised with statistics of a batch that holds few of the queries' images.
- ``split`` (single process, one GPU): every BatchNorm2d of both encoders normalises G groups of
  the batch separately ("ghost BN"), and keys are shuffled within the process before the key
  forward, which has the same effect as shuffling across G ranks. Running statistics are the
  average over groups, so the exported backbone is a plain timm model.
- ``sync`` (>= 2 ranks, CUDA): SyncBatchNorm over all ranks (MoCo v3 style). Statistics of the
  whole global batch dilute the leak; no shuffling.
- ``plain``: no remedy. Only for comparisons and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from histo_encoders.env import torchrun_ranks
from histo_encoders.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, and the device it owns."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU), or run as one process.

    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a single process.
    """
    ranks = torchrun_ranks()  # torchrun's variables, parsed and checked in one place
    world_size, rank, local_rank = ranks.world_size, ranks.rank, ranks.local_rank
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def gather_all(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N, ...) of every rank in rank order -> (world * N, ...), no grad."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    # Collectives want default-contiguous buffers; channels_last images are converted here.
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


def shuffle_indices(total: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation of the global batch, ``idx_shuffle`` (total,)."""
    return torch.randperm(total, generator=generator)


def rank_slice(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous share of a global index vector: (total,) -> (total / world,)."""
    return indices.view(world_size, -1)[rank]


def shuffle_batch(
    x_all: torch.Tensor, idx_shuffle: torch.Tensor, rank: int, world_size: int
) -> torch.Tensor:
    """Rows of the gathered batch (total, ...) this rank encodes after shuffling: (total/world, ...)."""
    return x_all[rank_slice(idx_shuffle, rank, world_size)]


def unshuffle_batch(
    y_all: torch.Tensor, idx_shuffle: torch.Tensor, rank: int, world_size: int
) -> torch.Tensor:
    """Undo ``shuffle_batch`` on gathered outputs (total, ...): this rank's rows in input order."""
    idx_unshuffle = torch.argsort(idx_shuffle)
    return y_all[rank_slice(idx_unshuffle, rank, world_size)]


@torch.no_grad()
def shuffled_key_encode(encoder_k: nn.Module, im_k: torch.Tensor) -> torch.Tensor:
    """Key forward with shuffle BN across ranks: gather, permute, encode, gather, un-permute."""
    rank, world = dist.get_rank(), dist.get_world_size()
    x_all = gather_all(im_k)  # (world * N, 3, H, W)
    idx_shuffle = shuffle_indices(x_all.shape[0]).to(im_k.device)
    dist.broadcast(idx_shuffle, src=0)  # every rank must use rank 0's permutation
    k_local = encoder_k(shuffle_batch(x_all, idx_shuffle, rank, world))  # (N, D)
    return unshuffle_batch(gather_all(k_local), idx_shuffle, rank, world)  # (N, D)


@torch.no_grad()
def local_shuffled_key_encode(encoder_k: nn.Module, im_k: torch.Tensor) -> torch.Tensor:
    """Single-process shuffle for split BN: keys land in other BN groups than their queries."""
    idx_shuffle = shuffle_indices(im_k.shape[0]).to(im_k.device)
    k = encoder_k(im_k[idx_shuffle])
    return k[torch.argsort(idx_shuffle)]


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises ``num_splits`` groups of the batch separately when training.

    Group g holds the samples n with n % num_splits == g (keys are shuffled first, so which
    samples share a group is random).
    Same parameters and buffers as BatchNorm2d (the state dict loads into a plain timm model);
    running statistics are the mean over groups. In eval mode it is a plain BatchNorm2d.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        g = self.num_splits
        if n % g != 0:
            raise ConfigError(
                f"Split BatchNorm needs the per-rank batch ({n}) divisible by model.bn_splits={g}."
            )
        # (N, C, H, W) -> (N/G, G*C, H, W): sample n's channels land at (n % G) * C, so each
        # group of every G-th sample gets channels of its own, hence statistics of its own.
        grouped = x.reshape(n // g, g * c, h, w)  # copies under channels_last
        mean = self.running_mean.repeat(g)
        var = self.running_var.repeat(g)
        out = F.batch_norm(
            grouped,
            mean,
            var,
            self.weight.repeat(g),
            self.bias.repeat(g),
            True,
            self.momentum if self.momentum is not None else 0.1,
            self.eps,
        )
        with torch.no_grad():
            self.running_mean.copy_(mean.view(g, c).mean(dim=0))
            self.running_var.copy_(var.view(g, c).mean(dim=0))
            self.num_batches_tracked.add_(1)
        return out.reshape(n, c, h, w)


def convert_to_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a SplitBatchNorm2d with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(
                child.num_features,
                num_splits,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            split.load_state_dict(child.state_dict())
            setattr(module, name, split.to(child.weight.device))
        else:
            convert_to_split_bn(child, num_splits)
    return module


def check_bn_mode(bn_mode: str, info: DistInfo) -> None:
    """Refuse BN modes that cannot work in this process layout, saying which one to use."""
    if bn_mode == "shuffle" and not info.distributed:
        raise ConfigError(
            "model.bn_mode=shuffle needs >= 2 ranks (torchrun --nproc-per-node N). In a single "
            "process use model.bn_mode=split (ghost BN with model.bn_splits groups)."
        )
    if bn_mode == "sync" and not (info.distributed and info.device.type == "cuda"):
        raise ConfigError(
            "model.bn_mode=sync needs >= 2 CUDA ranks (SyncBatchNorm); on CPU or a single "
            "process use model.bn_mode=shuffle (>= 2 ranks) or split."
        )
