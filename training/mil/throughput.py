"""``python -m training.mil.throughput``: seconds per epoch of a MIL model, against the floor.

The floor is the work no MIL model on these features can skip: its first Linear layer over every
real tile, forward (``X @ W``) and weight gradient (``X^T @ dY``; the features need no gradient).
It is timed with torch on this machine on the same tiles, right before each epoch, so the
fraction ``floor / epoch`` says how much of the machine's matrix-multiply throughput the
training loop reaches. On a shared machine the best epoch against the best floor is the figure
to quote (each is the least disturbed of its repeats). Features are random (speed does not
depend on them); nothing is asserted, figures are printed::

    python -m training.mil.throughput --model abmil --slides 100 --tiles 500 3000 --dim 2048
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Bag, iterate_batches
from .models import build_model
from .train import TrainOptions, train_epoch


@dataclass(frozen=True)
class EpochTiming:
    """One epoch against its floor, both in seconds."""

    epoch_s: float
    floor_s: float

    @property
    def fraction(self) -> float:
        return self.floor_s / self.epoch_s


def random_bags(n_slides: int, tiles: tuple[int, int], dim: int, seed: int = 0) -> list[Bag]:
    """Bags of Gaussian features, lengths uniform in ``tiles``, labels alternating."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    return [
        Bag(
            f"s{i}",
            f"s{i}",
            i % 2,
            torch.randn(int(rng.integers(tiles[0], tiles[1] + 1)), dim, generator=generator),
            np.zeros((0, 2), np.int64),
        )
        for i in range(n_slides)
    ]


def first_linear(model: nn.Module) -> nn.Linear:
    """The layer that reads the features (the first ``nn.Linear`` registered)."""
    return next(m for m in model.modules() if isinstance(m, nn.Linear))


def gemm_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Best of ``repeats`` square fp32 matrix multiplies, in GFLOP/s (the machine's peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


@torch.no_grad()
def floor_seconds(bags: Sequence[Bag], layer: nn.Linear, options: TrainOptions) -> float:
    """Time of ``X @ W^T`` and ``dY^T @ X`` over every real tile of every training batch."""
    weight = layer.weight.detach()
    total = 0.0
    for batch in iterate_batches(bags, mode="padded", batch_size=options.batch_size, seed=0):
        tiles = batch.features[batch.mask]  # (N_real, D)
        grad = torch.randn(tiles.shape[0], weight.shape[0])
        total += _timed(lambda tiles=tiles, grad=grad: (tiles @ weight.T, grad.T @ tiles))
    return total


def floor_flops(bags: Sequence[Bag], layer: nn.Linear) -> float:
    """FLOPs of the floor: 2 matrix multiplies of 2 * N * D * H each."""
    n_tiles = sum(bag.n_tiles for bag in bags)
    return 4.0 * n_tiles * layer.in_features * layer.out_features


def measure(
    bags: Sequence[Bag], options: TrainOptions, epochs: int, seed: int = 0
) -> tuple[list[EpochTiming], nn.Linear]:
    """Train ``epochs`` epochs (after one warm-up epoch), each timed right after its floor."""
    torch.manual_seed(seed)
    model = build_model(options.model, int(bags[0].features.shape[1]), 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.optimizer_settings()[0])
    train_epoch(model, optimizer, bags, options, seed)  # warm-up: allocator, kernels
    timings = []
    for epoch in range(epochs):
        floor = floor_seconds(bags, first_linear(model), options)
        spent = _timed(lambda e=epoch: train_epoch(model, optimizer, bags, options, seed + e))
        timings.append(EpochTiming(spent, floor))
    return timings, first_linear(model)


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.mil.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="abmil")
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--tiles", type=int, nargs=2, default=(500, 3000), metavar=("MIN", "MAX"))
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--gemm-size", type=int, default=4096, help="side of the peak GEMM")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the machine's GEMM throughput, then each epoch's seconds and fraction of the floor."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bags = random_bags(args.slides, tuple(args.tiles), args.dim)
    options = TrainOptions(args.model, batch_size=args.batch_size, device="cpu")
    n_tiles = sum(bag.n_tiles for bag in bags)
    print(f"{args.slides} slides, {n_tiles} tiles x {args.dim}, {torch.get_num_threads()} threads")
    print(f"square fp32 GEMM ({args.gemm_size}): {gemm_gflops(args.gemm_size):.1f} GFLOP/s")
    timings, layer = measure(bags, options, args.epochs)
    flops = floor_flops(bags, layer)
    for i, t in enumerate(timings):
        print(
            f"epoch {i + 1}: {t.epoch_s:.2f} s; floor {t.floor_s:.2f} s "
            f"({flops / t.floor_s / 1e9:.1f} GFLOP/s); fraction {t.fraction:.2f}"
        )
    best_epoch = min(t.epoch_s for t in timings)
    best_floor = min(t.floor_s for t in timings)
    print(
        f"{args.model}: median {statistics.median(t.epoch_s for t in timings):.2f} s/epoch "
        f"(best {best_epoch:.2f} s); floor best {best_floor:.2f} s = "
        f"{flops / best_floor / 1e9:.1f} GFLOP/s; best epoch reaches {best_floor / best_epoch:.0%} "
        f"of it (median of per-epoch fractions {statistics.median(t.fraction for t in timings):.0%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
