"""Pooling: which vector the authors define as a tile's embedding, computed exactly.

timm's pooled output is not always that vector. Paige defines Virchow's and Virchow2's embedding
as the class token concatenated with the mean of the patch tokens (2 x 1280 = 2560-d), and a mean
over patch tokens must leave out the class and register tokens (Virchow2 has 4 registers, UNI2-h
8). So the rule is part of the record, and ``load()`` returns a module whose ``forward`` gives
exactly that vector and whose ``num_features`` is its width:

- ``timm``: the architecture's own pooled output (timm with ``num_classes=0``): global average
  pooling for a ResNet. The timm model is returned as it is.
- ``cls``: the class token of the last layer, after the final norm (timm ``global_pool='token'``;
  register tokens are never part of it). The timm model is returned with that pooling set.
- ``cls+mean``: ``[class token, mean of the patch tokens]`` from ``forward_features``, the prefix
  tokens (class and registers, ``num_prefix_tokens`` of them) left out of the mean. timm has no
  such pooling, so the timm model is wrapped in :class:`ClassTokenPatchMean`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from histo_encoders.errors import ConfigError


@dataclass(frozen=True)
class PoolingRule:
    """One way of turning a network's output into a tile embedding."""

    name: str
    description: str
    # Output width as a multiple of the network's token width (its timm ``num_features``).
    width_factor: int = 1


RULES: dict[str, PoolingRule] = {
    rule.name: rule
    for rule in (
        PoolingRule("timm", "timm's pooled output (global average pooling for a ResNet)"),
        PoolingRule("cls", "class token after the final norm (register tokens ignored)"),
        PoolingRule(
            "cls+mean",
            "class token concatenated with the mean of the patch tokens (class and register "
            "tokens left out of the mean)",
            width_factor=2,
        ),
    )
}


def get_rule(name: str) -> PoolingRule:
    """The rule called ``name``. Raises ConfigError for an unknown one."""
    try:
        return RULES[name]
    except KeyError as error:
        raise ConfigError(f"unknown pooling rule {name!r}; known rules: {sorted(RULES)}") from error


def embedding_width(trunk: nn.Module, rule: str) -> int:
    """Width of the embedding ``rule`` gives on the timm model ``trunk``."""
    return get_rule(rule).width_factor * int(trunk.num_features)


def apply_pooling(trunk: nn.Module, rule: str) -> nn.Module:
    """A module whose ``forward`` gives ``rule``'s embedding, built on the timm model ``trunk``.

    ``trunk`` keeps its weights (loaded before); only how its output is pooled changes.
    Raises ConfigError when the rule needs tokens the architecture does not have.
    """
    get_rule(rule)
    if rule == "timm":
        return trunk
    _require_normed_class_token(trunk, rule)
    if rule == "cls":
        # timm's token pooling is exactly the class token (fc_norm and head are identities).
        trunk.reset_classifier(0, global_pool="token")
        return trunk
    return ClassTokenPatchMean(trunk)


def _require_normed_class_token(trunk: nn.Module, rule: str) -> None:
    if getattr(trunk, "cls_token", None) is None or not hasattr(trunk, "num_prefix_tokens"):
        raise ConfigError(
            f"pooling rule {rule!r} needs a vision transformer with a class token; "
            f"{type(trunk).__name__} has none. Use pooling 'timm'."
        )
    # Built with global_pool 'avg' (or 'max'), a timm ViT moves its final norm after the pool
    # (fc_norm): its tokens would then come out un-normalized, and its weights are another layout.
    if getattr(trunk, "global_pool", "token") not in ("token", ""):
        raise ConfigError(
            f"pooling rule {rule!r} reads the tokens after the final norm, but the model was built "
            f"with global_pool={trunk.global_pool!r}; remove global_pool from its model_args"
        )


class ClassTokenPatchMean(nn.Module):
    """A timm vision transformer whose output is ``[class token, mean of patch tokens]``.

    ``trunk`` is the timm model itself (its state dict, ``forward_features`` and
    ``num_prefix_tokens`` unchanged); ``num_features`` is twice its token width.
    """

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_prefix_tokens = int(trunk.num_prefix_tokens)
        self.num_features = 2 * int(trunk.num_features)
        self.pretrained_cfg = getattr(trunk, "pretrained_cfg", {})
        self.default_cfg = self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, prefix + patches, D) tokens after the final norm."""
        return self.trunk.forward_features(x)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens -> (B, 2D): class token, then the mean of the patch tokens."""
        patches = tokens[:, self.num_prefix_tokens :]
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
