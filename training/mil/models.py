"""MIL models over a padded batch of bags.

Every model maps ``features (B, N, D)`` and ``mask (B, N)`` (True on real tiles) to logits
``(B, n_out)``: one logit for a binary task, one per class otherwise. Padding never changes the
output of a bag, and none of these models looks at tile order. ``tile_scores`` returns one number
per tile (a score or an attention weight) for heatmaps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import EmptyBagError


def n_outputs(n_classes: int) -> int:
    """Binary tasks use one logit (sigmoid), multi-class tasks one per class (softmax)."""
    return 1 if n_classes == 2 else n_classes


def _check_not_empty(mask: torch.Tensor) -> None:
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise EmptyBagError(None, position=int(empty[0]))


class _LinearScorePool(nn.Module):
    """A linear score per tile; subclasses say how the bag pools."""

    def __init__(self, in_dim: int, n_out: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(in_dim, n_out)

    def tile_scores(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score(self.dropout(features))[..., 0]


class MeanPool(_LinearScorePool):
    """Baseline: linear tile scores averaged over the bag (= a linear model on the mean feature)."""

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_not_empty(mask)
        weights = mask.unsqueeze(-1).to(features.dtype)
        # Divide by the true length, not the padded one, so padding cannot dilute the mean.
        mean = (features * weights).sum(1) / weights.sum(1)
        return self.score(self.dropout(mean))


class MaxPool(_LinearScorePool):
    """Baseline: a linear score per tile, the bag takes its highest tile (instance max-pooling).

    The score layer starts at zero. Max pooling sends gradient only to each bag's top tile, so
    from a random start pointing away from the witnesses it gets no signal towards them and
    stays at chance; from zero every tile ties, the tie shares the gradient over the bag
    (as mean pooling would), and the first step points the score at what separates positive
    from negative bags.
    """

    def __init__(self, in_dim: int, n_out: int = 1, dropout: float = 0.0) -> None:
        super().__init__(in_dim, n_out, dropout)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_not_empty(mask)
        scores = self.score(self.dropout(features))  # (B, N, n_out)
        scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        return scores.amax(dim=1)


class Chowder(nn.Module):
    """Chowder (Courtiol et al. 2018, arXiv:1802.02212): a linear score per tile, the R highest
    and R lowest scores, then an MLP 2R-200-100-1 with sigmoid activations and dropout.

    Defaults are the paper's Camelyon16 setting: R=5 and an L2 penalty of 0.5 on the weights of
    the tile-score layer (:meth:`penalty`, added to the loss by the training loop). The paper's
    ensemble of E=50 such models is the protocol's ``ensemble`` option, not part of one model.
    For a multi-class task each class has its own tile score and the same MLP reads each class's
    2R extremes. A bag with fewer than R tiles fills its missing top entries with its lowest score
    and its missing bottom entries with its highest, so any bag length gives 2R inputs.
    """

    def __init__(
        self,
        in_dim: int,
        n_out: int = 1,
        n_extreme: int = 5,
        hidden: tuple[int, int] = (200, 100),
        dropout: float = 0.5,
        score_l2: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_extreme = n_extreme
        self.score_l2 = score_l2
        self.score = nn.Linear(in_dim, n_out)
        self.mlp = nn.Sequential(
            nn.Linear(2 * n_extreme, hidden[0]),
            nn.Sigmoid(),
            nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]),
            nn.Sigmoid(),
            nn.Dropout(dropout),
            nn.Linear(hidden[1], 1),
        )

    def penalty(self) -> torch.Tensor:
        """``score_l2 * ||w||^2`` of the tile-score weights (a Keras-style ``l2(0.5)`` term).

        The paper regularises only this layer: it keeps the tile scores, and so the choice of
        extreme tiles, from being driven by a few feature dimensions of a small training set.
        """
        return self.score_l2 * self.score.weight.square().sum()

    def tile_scores(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score(features)[..., 0]

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_not_empty(mask)
        scores = self.score(features).transpose(1, 2)  # (B, n_out, N)
        extremes = self.extremes(scores, mask.unsqueeze(1).expand_as(scores))
        return self.mlp(extremes)[..., 0]  # (B, n_out)

    def extremes(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(..., N)`` scores -> ``(..., 2R)``: R highest (desc.) then R lowest (asc.)."""
        r = self.n_extreme
        if scores.shape[-1] < r:  # pad so top-k of size R always exists
            pad = r - scores.shape[-1]
            scores = F.pad(scores, (0, pad))
            mask = F.pad(mask, (0, pad), value=False)
        top = scores.masked_fill(~mask, float("-inf")).topk(r, dim=-1).values
        bottom = scores.masked_fill(~mask, float("inf")).topk(r, dim=-1, largest=False).values
        # Entries past the bag's length are +-inf; replace them by the bag's own extremes.
        lowest, highest = bottom[..., :1], top[..., :1]
        top = torch.where(torch.isfinite(top), top, lowest)
        bottom = torch.where(torch.isfinite(bottom), bottom, highest)
        return torch.cat([top, bottom], dim=-1)


class GatedAttention(nn.Module):
    """Gated attention (Ilse et al. 2018): tanh and sigmoid branches, one weight per tile."""

    def __init__(self, dim: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
        self.sigmoid_branch = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid())
        self.weight = nn.Linear(hidden, 1)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` -> attention ``(B, N)`` summing to 1 over each bag's real tiles."""
        logits = self.weight(self.tanh_branch(embeddings) * self.sigmoid_branch(embeddings))[..., 0]
        return logits.masked_fill(~mask, float("-inf")).softmax(dim=1)


class DeepMIL(nn.Module):
    """DeepMIL / gated ABMIL (Ilse et al. 2018) with the sizes of Dehaene et al. 2020, supp. table 3.

    Linear(D->128) per tile, gated attention 128->128->1, attention-weighted sum, then the
    classifier 128->128->ReLU->64->ReLU->n_out.

    The tile embedding is linear, with no ReLU, as in Owkin's FLamby ``fed_camelyon16`` model,
    whose code states it follows that supplementary table (Ilse et al.'s image models end their
    feature extractor with a ReLU instead). We follow FLamby because it is the paper authors' own
    code for this table; the gated attention right after it supplies the non-linearity.
    """

    def __init__(self, in_dim: int, n_out: int = 1, dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, dim), nn.Dropout(dropout))
        self.attention = GatedAttention(dim, 128)
        self.classifier = nn.Sequential(
            nn.Linear(dim, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(64, n_out),
        )

    def tile_scores(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attention(self.embed(features), mask)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_not_empty(mask)
        embeddings = self.embed(features)
        attention = self.attention(embeddings, mask)
        # Pads have weight exactly 0; masked_fill also clears any NaN a pad's features could carry.
        pooled = torch.einsum("bn,bnd->bd", attention, embeddings.masked_fill(~mask[..., None], 0))
        return self.classifier(pooled)


class TransformerMIL(nn.Module):
    """Small transformer MIL: tiles projected to ``dim``, a class token, pre-norm encoder blocks.

    No positional encoding, so the output does not depend on tile order; padded tiles are masked
    out of every attention.
    """

    def __init__(
        self,
        in_dim: int,
        n_out: int = 1,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_out)

    def _encode(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens = self.project(features)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        keep = F.pad(mask, (1, 0), value=True)  # the class token is always real
        attention = None
        for block in self.blocks:
            tokens, attention = block(tokens, keep)
        return self.norm(tokens[:, 0]), attention

    def tile_scores(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last block's class-token attention over the tiles, averaged over heads."""
        _, attention = self._encode(features, mask)
        return attention[:, 1:]

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _check_not_empty(mask)
        pooled, _ = self._encode(features, mask)
        return self.head(pooled)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, n, d = tokens.shape
        q, k, v = self.qkv(self.norm1(tokens)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = keep[:, None, None, :]  # (B, 1, 1, N): every query ignores padded keys
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        tokens = tokens + self.dropout(self.out(mixed.transpose(1, 2).reshape(b, n, d)))
        tokens = tokens + self.dropout(self.mlp(self.norm2(tokens)))
        # Class-token attention (for heatmaps) is recomputed cheaply from q and k: one row.
        cls_logits = (q[:, :, :1] @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
        cls_attention = cls_logits.masked_fill(~attn_mask, float("-inf")).softmax(-1)
        return tokens, cls_attention.mean(1)[:, 0]


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mean-pool": MeanPool,
    "max-pool": MaxPool,
    "chowder": Chowder,
    "abmil": DeepMIL,
    "transformer": TransformerMIL,
}
ALIASES = {"deepmil": "abmil", "gated-abmil": "abmil", "mean": "mean-pool", "max": "max-pool"}


def build_model(name: str, in_dim: int, n_classes: int, **options: float | int) -> nn.Module:
    """Build a MIL model by name (see ``MODELS``; ``deepmil`` is an alias of ``abmil``).

    ``options`` go to the model's constructor (e.g. ``n_extreme=10`` for Chowder).

    Raises:
        KeyError: an unknown model name (the message lists the known ones).
    """
    key = ALIASES.get(name, name)
    if key not in MODELS:
        raise KeyError(f"Unknown MIL model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[key](in_dim, n_outputs(n_classes), **options)


def canonical_name(name: str) -> str:
    """The table name of a model (aliases resolved)."""
    return ALIASES.get(name, name)
