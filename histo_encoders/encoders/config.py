"""The encoder record: one frozen description of a set of weights and the conditions they expect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Lunit's own normalization, computed on their TCGA pretraining tiles (Kang et al. 2023, github.com/lunit-io/benchmark-ssl-pathology). The hub
# ports' config.json carries ImageNet's instead, which is why the record, not the hub file, decides.
LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)
# Bioptimus' normalization for H-optimus-0 (its config.json on the hub) and H-optimus-1.
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
# kaiko.ai's ViTs expect inputs scaled to [-1, 1].
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class EncoderConfig:
    """One set of encoder weights and the conditions it expects.

    ``mpp`` and ``tile_size`` are what the weights were trained on: tiles are cut at that
    resolution by default. ``mean``/``std`` are the normalization the weights expect (not always
    ImageNet's). ``revision`` pins a hub commit and ``sha256`` the weights file; where either is
    None the first download is recorded and later loads are checked against it (``pinned`` says
    which). ``weights_file`` names the file hashed and loaded: ``model.safetensors`` where the repo
    has one (as timm prefers), else ``pytorch_model.bin`` (read with ``weights_only=True``).
    ``pooling`` names the rule that turns the network's output into the tile embedding the
    authors define (see :mod:`.pooling`); ``num_features`` is that embedding's width. ``gated``
    says the hub repo grants access on request only. ``sources`` lists the public pages each
    fact was read from; ``notes`` says what a user must know that the fields cannot say.
    """

    name: str
    architecture: str
    num_features: int
    tile_size: int
    mpp: float | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    license: str
    ssl_method: str
    training_data: str
    citation: str
    description: str
    hub_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    model_args: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    published: bool = True
    datasets: tuple[str, ...] = ()  # hub dataset ids of the training data, for model cards
    pooling: str = "timm"
    weights_file: str = "model.safetensors"
    gated: bool = False
    sources: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self) -> None:
        # Frozen all the way down: a record shared by every caller must not be mutated by one.
        object.__setattr__(self, "model_args", MappingProxyType(dict(self.model_args)))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "sources", tuple(self.sources))

    @property
    def pinned(self) -> Literal["commit+sha256", "commit", "unpinned"]:
        """How far the record pins its weights: a commit and the file's sha256, a commit only
        (the file's hash is recorded at first download), or nothing (``main``, hash recorded at
        first download of each commit)."""
        if self.revision and self.sha256:
            return "commit+sha256"
        return "commit" if self.revision else "unpinned"

    def with_updates(self, **changes: Any) -> EncoderConfig:
        """Return a copy with ``changes`` applied (records themselves never change)."""
        return replace(self, **changes)
