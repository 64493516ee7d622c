"""The published encoders: one record per set of weights, each pinned and described.

Records only: resolution of names, aliases and registration live in :mod:`.registry`.
"""

from __future__ import annotations

from histo_encoders.encoders.config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LUNIT_MEAN,
    LUNIT_STD,
    EncoderConfig,
)

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


RECORDS: tuple[EncoderConfig, ...] = (
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
        datasets=("ILSVRC/imagenet-1k",),
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
