"""The table of encoders: one frozen record per set of weights, one name each.

A record says everything a pipeline needs to use the weights correctly: where they live (hub id
pinned to a commit, sha256 of the file), which timm architecture they fit, and the conditions
they were trained under (microns per pixel, tile size, normalization). Names are resolved here and
nowhere else; aliases point at a record, never at a copy of one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from histo_encoders.errors import UnknownEncoderError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Lunit's own normalization, computed on their TCGA pretraining tiles (REFERENCE.md §3). The hub
# ports' config.json carries ImageNet's instead, which is why the record, not the hub file, decides.
LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)

DEHAENE_2020 = (
    "Dehaene, O., Camara, A., Moindrot, O., de Lavergne, A., Courtiol, P. Self-Supervision Closes "
    "the Gap Between Weak and Strong Supervision in Histology. ML4H workshop, NeurIPS 2020. "
    "arXiv:2012.03583"
)
KANG_2023 = (
    "Kang, M., Song, H., Park, S., Yoo, D., Pereira, S. Benchmarking Self-Supervised Learning on "
    "Diverse Pathology Datasets. CVPR 2023. arXiv:2212.04690"
)
HE_2016 = (
    "He, K., Zhang, X., Ren, S., Sun, J. Deep Residual Learning for Image Recognition. CVPR 2016. "
    "arXiv:1512.03385"
)


@dataclass(frozen=True)
class EncoderConfig:
    """One set of encoder weights and the conditions it expects.

    ``mpp`` and ``tile_size`` are what the weights were trained on: tiles are cut at that
    resolution by default. ``mean``/``std`` are the normalization the weights expect (not always
    ImageNet's). ``revision`` pins a hub commit and ``sha256`` the weights file; where either is
    None the first download is recorded and later loads are checked against it.
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

    def __post_init__(self) -> None:
        # Frozen all the way down: a record shared by every caller must not be mutated by one.
        object.__setattr__(self, "model_args", MappingProxyType(dict(self.model_args)))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "aliases", tuple(self.aliases))

    def with_updates(self, **changes: Any) -> EncoderConfig:
        """Return a copy with ``changes`` applied (records themselves never change)."""
        return replace(self, **changes)


def _lunit(method: str, ssl_method: str, *, revision: str, sha256: str) -> EncoderConfig:
    """One of Kang et al. 2023's three ResNet-50s: they differ only in method and hub pin.

    Revisions and sha256s were read from the hub's public pages of 1aurent's timm ports.
    """
    return EncoderConfig(
        name=f"lunit-{method}",
        aliases=(f"lunit_{method}", f"resnet50.lunit_{method}"),
        architecture="resnet50",
        num_features=2048,
        tile_size=224,
        mpp=0.5,
        mean=LUNIT_MEAN,
        std=LUNIT_STD,
        license="lunit-non-commercial",
        ssl_method=ssl_method,
        training_data="19M TCGA H&E patches (Kang et al. 2023), trained with VISSL for 200 epochs",
        citation=KANG_2023,
        description=f"Lunit's {ssl_method} histology ResNet-50 (Kang et al. 2023), timm port.",
        hub_id=f"1aurent/resnet50.lunit_{method}",
        revision=revision,
        sha256=sha256,
    )


_RECORDS: tuple[EncoderConfig, ...] = (
    EncoderConfig(
        name="moco-camelyon",
        aliases=("moco_camelyon", "resnet50.moco_camelyon"),
        architecture="resnet50",
        num_features=2048,
        tile_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        license="apache-2.0",
        ssl_method="MoCo v2",
        training_data="Camelyon16 training slides (270 WSIs), tissue tiles at 0.5 um/px, 224 px",
        citation=DEHAENE_2020,
        description=(
            "ResNet-50 pretrained with MoCo v2 on Camelyon16 tiles: the extractor of Dehaene et al. "
            "2020, reproduced by training/ in this repository. Weights not yet published."
        ),
        hub_id="histo-encoders/resnet50.moco_camelyon",
        published=False,
    ),
    EncoderConfig(
        name="imagenet",
        aliases=("resnet50.tv_in1k", "imagenet-resnet50"),
        architecture="resnet50",
        num_features=2048,
        tile_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        license="bsd-3-clause",
        ssl_method="supervised (ImageNet-1k classification)",
        training_data="ImageNet-1k (natural images; no histology)",
        citation=HE_2016,
        description=(
            "torchvision's original ImageNet ResNet-50 (timm resnet50.tv_in1k): the baseline "
            "encoder the paper replaces. mpp is the paper's tiling, not a training condition."
        ),
        hub_id="timm/resnet50.tv_in1k",
        # Pinned from the hub's public pages (commit "transformers tag"; weights unchanged since
        # aa6c2d3 "Add model"): see model_cards/imagenet.md for the sources.
        revision="78f3ecfdb38e06d9b8397f662e7ab8fee96026fa",
        sha256="5d061a3c593d795bfe682d9b152bafbcf550579873492def3515b46db1189888",
        interpolation="bilinear",
    ),
    _lunit(
        "mocov2",
        "MoCo v2",
        revision="296eea9131d9a2ff5ceff4e0947d48c773753b47",
        sha256="55b959de1606718f693fcd027a742b0bc505aea77262bc1cc404acf0c4543285",
    ),
    _lunit(
        "bt",
        "Barlow Twins",
        revision="3994bae53df7f7d3797ef1d50faba0c433888aab",
        sha256="e58a0d36af4a326b0ddcc11c5e9384cac8b1b98432d8e73ce027df81317b0955",
    ),
    _lunit(
        "swav",
        "SwAV",
        revision="349af8b1e3a750860698d428de28896fdc1d764a",
        sha256="da30e2503d14ee337537b0ee1c304de2b7bb3319bc66ecc0c28a25ec64df732c",
    ),
)

_TABLE: dict[str, EncoderConfig] = {}
_ALIASES: dict[str, str] = {}


def register_encoder(config: EncoderConfig, *, overwrite: bool = False) -> EncoderConfig:
    """Add ``config`` to the table (e.g. a private encoder) and return it.

    Raises ValueError if the name or an alias is taken, unless ``overwrite``.
    """
    taken = [n for n in (config.name, *config.aliases) if n in _TABLE or n in _ALIASES]
    if taken and not overwrite:
        raise ValueError(f"encoder name(s) {taken} already registered; pass overwrite=True")
    if overwrite:
        unregister_encoder(config.name, missing_ok=True)
    _TABLE[config.name] = config
    for alias in config.aliases:
        _ALIASES[alias] = config.name
    return config


def unregister_encoder(name: str, *, missing_ok: bool = False) -> None:
    """Remove a record and its aliases from the table."""
    config = _TABLE.pop(name, None)
    if config is None:
        if missing_ok:
            return
        raise UnknownEncoderError(name, suggest(name))
    for alias in config.aliases:
        _ALIASES.pop(alias, None)


def is_registered(name: str) -> bool:
    """True for a registered name or alias."""
    return name in _TABLE or name in _ALIASES


def get_config(name: str) -> EncoderConfig:
    """Return the record of a registered encoder, by name or alias.

    Raises UnknownEncoderError (a KeyError) with close matches when there is none.
    """
    canonical = _ALIASES.get(name, name)
    try:
        return _TABLE[canonical]
    except KeyError as error:
        raise UnknownEncoderError(name, suggest(name)) from error


def list_encoders() -> dict[str, str]:
    """Every registered encoder name mapped to its one-line description, in table order."""
    return {name: config.description for name, config in _TABLE.items()}


def suggest(name: str, limit: int = 3) -> list[str]:
    """Registered names and aliases close to ``name``."""
    candidates = [*_TABLE, *_ALIASES]
    return difflib.get_close_matches(name, candidates, n=limit, cutoff=0.5)


for _record in _RECORDS:
    register_encoder(_record)
