"""The published encoders: one record per set of weights, each pinned and described.

Records only: resolution of names, aliases and registration live in :mod:`.registry`.

Every value comes from a public page named in the record's ``sources``. Where a hub commit or a
weights hash could not be read (the gated repos do not show their files to the public), the
record leaves ``revision``/``sha256`` as None: it is *unpinned*, loads ``main``, and the file's
hash is recorded at its first download and enforced from then on. Never fill one in by guess.
"""

from __future__ import annotations

from histo_encoders.encoders.config import (
    HALF,
    HOPTIMUS_MEAN,
    HOPTIMUS_STD,
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


# The paper's encoders: its own MoCo v2 ResNet-50, the ImageNet baseline it replaces, and Lunit's.
_PAPER_RECORDS: tuple[EncoderConfig, ...] = (
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


# --- the field's tile encoders (loaded through timm; issue 14) ------------------------------

CHEN_2024 = (
    "Chen, R.J., Ding, T., Lu, M.Y., Williamson, D.F.K., et al. Towards a general-purpose "
    "foundation model for computational pathology. Nature Medicine 30, 850-862 (2024). "
    "doi:10.1038/s41591-024-02857-3"
)
VORONTSOV_2024 = (
    "Vorontsov, E., Bozkurt, A., Casson, A., et al. A foundation model for clinical-grade "
    "computational pathology and rare cancers detection. Nature Medicine (2024). "
    "doi:10.1038/s41591-024-03141-0. arXiv:2309.07778"
)
ZIMMERMANN_2024 = (
    "Zimmermann, E., Vorontsov, E., Viret, J., Casson, A., Zelechowski, M., Shaikovski, G., "
    "Tenenholtz, N., Hall, J., Klimstra, D., Yousfi, R., Fuchs, T., Fusi, N., Liu, S., Severson, K. "
    "Virchow2: Scaling Self-Supervised Mixed Magnification Models in Pathology. "
    "arXiv:2408.00738 (2024)"
)
SAILLARD_2024 = (
    "Saillard, C., Jenatton, R., Llinares-Lopez, F., Mariet, Z., Cahane, D., Durand, E., "
    "Vert, J.-P. H-optimus-0. Software (2024). "
    "https://github.com/bioptimus/releases/tree/main/models/h-optimus/v0"
)
BIOPTIMUS_2025 = (
    "Bioptimus. H-optimus-1. Model weights (2025). https://huggingface.co/bioptimus/H-optimus-1"
)
XU_2024 = (
    "Xu, H., Usuyama, N., Bagga, J., Zhang, S., Rao, R., Naumann, T., Wong, C., Gero, Z., "
    "Gonzalez, J., Gu, Y., Xu, Y., Wei, M., Wang, W., Ma, S., Wei, F., Yang, J., Li, C., Gao, J., "
    "Rosemon, J., Bower, T., Lee, S., Weerasinghe, R., Wright, B.J., Robicsek, A., Piening, B., "
    "Bifulco, C., Wang, S., Poon, H. A whole-slide foundation model for digital pathology from "
    "real-world data. Nature (2024). doi:10.1038/s41586-024-07441-w"
)
FILIOT_2023 = (
    "Filiot, A., Ghermi, R., Olivier, A., Jacob, P., Fidon, L., Camara, A., Mac Kain, A., "
    "Saillard, C., Schiratti, J.-B. Scaling Self-Supervised Learning for Histopathology with "
    "Masked Image Modeling. medRxiv (2023). doi:10.1101/2023.07.21.23292757"
)
KAIKO_2024 = (
    "kaiko.ai, Aben, N., de Jong, E.D., Gatopoulos, I., Kanzig, N., Karasikov, M., Lagre, A., "
    "Moser, R., van Doorn, J., Tang, F. Towards Large-Scale Training of Pathology Foundation "
    "Models. arXiv:2404.15217 (2024)"
)

# Virchow's and UNI2-h's MLP is a packed SwiGLU: a config.json cannot carry the classes, so the
# authors pass them in code (and so do we, by name: see load.timm_model_args).
_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "silu"}
# H-optimus-0 and -1: one network, tiling and normalization. img_size: the config.json's
# input_size 224 with fixed_input_size (timm's default for this architecture is 518);
# init_values and dynamic_img_size as the authors pass them.
_HOPTIMUS_NETWORK = {
    "architecture": "vit_giant_patch14_reg4_dinov2",
    "model_args": {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
    "num_features": 1536,
    "pooling": "cls",
    "tile_size": 224,
    "mpp": 0.5,
    "mean": HOPTIMUS_MEAN,
    "std": HOPTIMUS_STD,
}
_UNI_TERMS = (
    "Gated: request access on the hub page and accept the CC-BY-NC-ND 4.0 terms (non-commercial, "
    "academic research, no redistribution of the weights)."
)


def _kaiko(size: str, patch: int, width: int, *, revision: str | None) -> EncoderConfig:
    """kaiko.ai's ViT-``size``/``patch`` (Aben et al. 2024) as ported to timm by 1aurent.

    The weights and config.json were last changed by each repo's "Add model" commit, so that
    commit or any later README-only commit pins the same file; no file hash was readable.
    """
    arch = f"vit_{ {'S': 'small', 'B': 'base'}[size] }_patch{patch}_224"
    name = f"kaiko-vit{size.lower()}{patch}"
    tree = f"https://huggingface.co/1aurent/{arch}.kaiko_ai_towards_large_pathology_fms/tree"
    return EncoderConfig(
        name=name,
        aliases=(name.replace("-", "_"), f"{arch}.kaiko_ai_towards_large_pathology_fms"),
        architecture=arch,
        model_args={"dynamic_img_size": True},
        num_features=width,
        pooling="cls",
        tile_size=224,
        # Trained on TCGA at several magnifications (online patching): 0.5 um/px is our tiling
        # default, not the single resolution of training.
        mpp=0.5,
        mean=HALF,
        std=HALF,
        interpolation="bilinear",
        license="kaiko-non-commercial",
        ssl_method="DINO-family self-supervision (Aben et al. 2024 compare DINO and DINOv2)",
        training_data="TCGA H&E slides, tiles sampled online at several magnifications",
        citation=KAIKO_2024,
        description=(
            f"kaiko.ai's ViT-{size}/{patch} (Aben et al. 2024), timm port by 1aurent; "
            "class-token embedding."
        ),
        notes=(
            "Mixed-magnification training: 0.5 um/px is the default tiling, not the only "
            "resolution the weights saw. The timm port's fidelity to kaiko.ai's release "
            "(GitHub, torch.hub) is the porter's claim."
        ),
        hub_id=f"1aurent/{arch}.kaiko_ai_towards_large_pathology_fms",
        revision=revision,
        sources=(
            "https://github.com/kaiko-ai/towards_large_pathology_fms (hubconf.py, README: mean/std "
            "0.5, dynamic_img_size, CLS output)",
            "arXiv:2404.15217",
            f"{tree}/{revision or 'main'} (files at the pinned commit)",
        ),
    )


_FIELD_RECORDS: tuple[EncoderConfig, ...] = (
    EncoderConfig(
        name="uni",
        aliases=("uni_v1", "uni-v1"),
        architecture="vit_large_patch16_224",
        model_args={
            "img_size": 224,
            "patch_size": 16,
            "init_values": 1e-5,
            "dynamic_img_size": True,
        },
        num_features=1024,
        pooling="cls",
        tile_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        license="cc-by-nc-nd-4.0",
        ssl_method="DINOv2",
        training_data="Mass-100K: 100M tiles from 100K H&E WSIs (neoplastic, infectious, "
        "inflammatory and normal tissue)",
        citation=CHEN_2024,
        description="MahmoodLab's UNI, ViT-L/16 (Chen et al. 2024); class-token embedding.",
        notes=_UNI_TERMS,
        hub_id="MahmoodLab/UNI",
        weights_file="pytorch_model.bin",
        gated=True,
        sources=(
            "https://github.com/mahmoodlab/UNI (README, uni/get_encoder/get_encoder.py: kwargs, "
            "ImageNet normalization, CLS embedding, pytorch_model.bin, licence)",
            "https://huggingface.co/MahmoodLab/UNI (gate text)",
            "TRIDENT README (20x, 0.5 um/px tiling)",
        ),
    ),
    EncoderConfig(
        name="uni2-h",
        aliases=("uni2_h", "uni_v2", "uni2"),
        architecture="vit_giant_patch14_224",
        model_args={
            "img_size": 224,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "init_values": 1e-5,
            "embed_dim": 1536,
            "mlp_ratio": 5.33334,  # the README's 2.66667 * 2
            "no_embed_class": True,
            "reg_tokens": 8,
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        num_features=1536,
        pooling="cls",
        tile_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bilinear",
        license="cc-by-nc-nd-4.0",
        ssl_method="DINOv2",
        training_data="over 200M H&E and IHC tiles sampled from over 350K WSIs",
        citation=CHEN_2024,
        description="MahmoodLab's UNI2-h, ViT-H/14 with 8 registers (2025); class-token embedding.",
        notes=_UNI_TERMS,
        hub_id="MahmoodLab/UNI2-h",
        weights_file="pytorch_model.bin",
        gated=True,
        sources=(
            "https://github.com/mahmoodlab/UNI (README: UNI2-h timm kwargs, `model(image)` is "
            "the [1, 1536] embedding, training data, licence)",
            "https://huggingface.co/MahmoodLab/UNI2-h",
        ),
    ),
    EncoderConfig(
        name="virchow",
        aliases=("virchow1", "virchow_v1"),
        architecture="vit_huge_patch14_224",
        model_args={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        num_features=2560,
        pooling="cls+mean",
        tile_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        license="apache-2.0",
        ssl_method="DINOv2",
        training_data="Paige's H&E WSIs at 20x (Vorontsov et al. 2024)",
        citation=VORONTSOV_2024,
        description=(
            "Paige's Virchow, ViT-H/14 (Vorontsov et al. 2024); embedding = class token + mean "
            "of patch tokens (2560-d)."
        ),
        notes=(
            "Gated: request access on the hub page; the Apache-2.0 licence comes with Paige's "
            "additional terms (institutional email, attribution)."
        ),
        hub_id="paige-ai/Virchow",
        gated=True,
        sources=(
            "https://huggingface.co/paige-ai/Virchow (front matter: apache-2.0, timm, safetensors)",
            "config.json of paige-ai/Virchow as quoted in public GitHub code (model_args, "
            "ImageNet mean/std, bicubic)",
            "TRIDENT / slide2vec Virchow encoders (SwiGLUPacked + SiLU, CLS + mean(tokens[1:]), "
            "20x / 0.5 um/px)",
        ),
    ),
    EncoderConfig(
        name="virchow2",
        aliases=("virchow_v2",),
        architecture="vit_huge_patch14_224",
        model_args={
            "img_size": 224,
            "init_values": 1e-5,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "global_pool": "",
            "dynamic_img_size": True,
            **_SWIGLU,
        },
        num_features=2560,
        pooling="cls+mean",
        tile_size=224,
        # Trained at 5x, 10x, 20x and 40x: 0.5 um/px (20x) is our tiling default.
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        license="cc-by-nc-nd-4.0",
        ssl_method="DINOv2 (mixed magnification)",
        training_data="Paige's H&E and IHC WSIs at 5x, 10x, 20x and 40x (Zimmermann et al. 2024)",
        citation=ZIMMERMANN_2024,
        description=(
            "Paige's Virchow2, ViT-H/14 with 4 registers (Zimmermann et al. 2024); embedding = "
            "class token + mean of patch tokens, registers excluded (2560-d)."
        ),
        notes=(
            "Gated (CC-BY-NC-ND 4.0): request access on the hub page. Mixed-magnification "
            "training: 0.5 um/px is the default tiling, not the only resolution the weights saw."
        ),
        hub_id="paige-ai/Virchow2",
        gated=True,
        sources=(
            "https://huggingface.co/paige-ai/Virchow2 (licence, arXiv, timm, safetensors; card: "
            "`output[:, 5:]` skips the 4 registers, class token + patch mean = 1 x 2560)",
            "config.json of paige-ai/Virchow2 as quoted in public GitHub code (model_args)",
            "https://arxiv.org/abs/2408.00738",
        ),
    ),
    EncoderConfig(
        name="h-optimus-0",
        aliases=("h_optimus_0", "hoptimus0"),
        **_HOPTIMUS_NETWORK,
        license="apache-2.0",
        ssl_method="DINOv2/iBOT-style self-supervision",
        training_data="more than 500,000 proprietary H&E WSIs, several hundred million tiles",
        citation=SAILLARD_2024,
        description="Bioptimus' H-optimus-0, ViT-g/14 with 4 registers; class-token embedding.",
        notes=(
            "Expects 224 x 224 tiles at 0.5 um/px exactly (fixed input size). The hub repo has no "
            "model.safetensors: pytorch_model.bin is hashed, then read with weights_only=True."
        ),
        hub_id="bioptimus/H-optimus-0",
        # Pinned from the hub's public pages: main at "Fix task name for discoverability (#1)";
        # pytorch_model.bin (4,539,305,018 bytes) last changed by d7e1f88 "Add model".
        revision="7bb31657b49434acc78732d9e2f393b846619393",
        sha256="bf47b8467403079798661601b6ab06533be789da48d3f8b510aaefe2fbc55cd3",
        weights_file="pytorch_model.bin",
        sources=(
            "https://huggingface.co/bioptimus/H-optimus-0/commit/d7e1f8884c292f1ff581e4b5de73a2cf9f904967 "
            "(config.json, pytorch_model.bin LFS sha256 and size)",
            "https://huggingface.co/bioptimus/H-optimus-0/commits/main (7bb3165 is main)",
            "https://huggingface.co/bioptimus/H-optimus-0 (card: 224 x 224 at 0.5 um/px, "
            "init_values=1e-5, dynamic_img_size=False, CLS output)",
            "https://github.com/bioptimus/releases/tree/main/models/h-optimus/v0 (data, citation)",
        ),
    ),
    EncoderConfig(
        name="h-optimus-1",
        aliases=("h_optimus_1", "hoptimus1"),
        **_HOPTIMUS_NETWORK,
        license="cc-by-nc-nd-4.0",
        ssl_method="self-supervised (Bioptimus; see the hub card)",
        training_data="Bioptimus' proprietary H&E WSIs (see the hub card)",
        citation=BIOPTIMUS_2025,
        description="Bioptimus' H-optimus-1, ViT-g/14 with 4 registers; class-token embedding.",
        notes=(
            "Gated (CC-BY-NC-ND 4.0): request access on the hub page. Same architecture and "
            "normalization as H-optimus-0 per TRIDENT and slide2vec; the card itself is behind "
            "the gate and was not read."
        ),
        hub_id="bioptimus/H-optimus-1",
        weights_file="pytorch_model.bin",
        gated=True,
        sources=(
            "https://huggingface.co/bioptimus/H-optimus-1 (gate text: licence)",
            "TRIDENT HOptimus1InferenceEncoder (kwargs, pytorch_model.bin, 224 at 20x, mean/std)",
            "slide2vec HOptimus1 (0.5 um/px, mean/std, 1536 CLS)",
        ),
    ),
    EncoderConfig(
        name="prov-gigapath",
        aliases=("gigapath", "prov_gigapath"),
        architecture="vit_giant_patch14_dinov2",
        # Patch size 16 despite the patch14 architecture name: the repo's config.json says so.
        model_args={
            "img_size": 224,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "init_values": 1e-5,
            "mlp_ratio": 5.33334,
        },
        num_features=1536,
        pooling="cls",
        # The authors resize 256 px tiles at 0.5 um/px and centre-crop 224: the model sees
        # 224 px at 0.5 um/px, which is what cutting 224 px tiles at 0.5 um/px gives directly.
        tile_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        license="apache-2.0",
        ssl_method="DINOv2 (tile encoder)",
        training_data="Prov-Path: Providence real-world H&E and IHC slides (Xu et al. 2024)",
        citation=XU_2024,
        description="Prov-GigaPath's tile encoder, ViT-g with 16 px patches (Xu et al. 2024); "
        "class-token embedding.",
        notes=(
            "Gated: request access on the hub page (contact information shared with the "
            "authors); research use. The authors tile 256 px and centre-crop 224; we cut 224 px "
            "at the same 0.5 um/px (same scale, no border discarded)."
        ),
        hub_id="prov-gigapath/prov-gigapath",
        weights_file="pytorch_model.bin",
        gated=True,
        sources=(
            "https://github.com/prov-gigapath/prov-gigapath (README: timm>=1.0.3, transform, "
            "0.5 mpp, citation, Apache-2.0)",
            "config.json of prov-gigapath/prov-gigapath as quoted in public GitHub code "
            "(model_args)",
            "TRIDENT GigaPathInferenceEncoder (pytorch_model.bin)",
        ),
    ),
    EncoderConfig(
        name="phikon",
        aliases=("phikon-v1", "vit_base_patch16_224.owkin_pancancer"),
        architecture="vit_base_patch16_224",
        num_features=768,
        pooling="cls",
        tile_size=224,
        mpp=0.5,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        license="owkin-non-commercial",
        ssl_method="iBOT",
        training_data="40M tiles from 6K TCGA WSIs",
        citation=FILIOT_2023,
        description="Owkin's Phikon, ViT-B/16 (Filiot et al. 2023), timm port by 1aurent; "
        "class-token embedding.",
        notes=(
            "The original owkin/phikon is a transformers ViTModel; this is 1aurent's timm port "
            "(teacher weights since 'switch weights to teacher'). Its fidelity to Owkin's "
            "weights is the porter's claim."
        ),
        hub_id="1aurent/vit_base_patch16_224.owkin_pancancer",
        # main at "Update README.md" (Nov 15 2023), after the switch to the teacher's weights.
        revision="3fc9281f2bc722315154278e600a2dc437454c82",
        sources=(
            "https://huggingface.co/1aurent/vit_base_patch16_224.owkin_pancancer/commits/main",
            "https://huggingface.co/1aurent/vit_base_patch16_224.owkin_pancancer/blame/"
            "2f5fb947db8b14746b5bfc6456b2a69c3e68ea76/config.json (architecture, token pool, "
            "ImageNet mean/std)",
            "TRIDENT PhikonInferenceEncoder (CLS, ImageNet, 20x)",
        ),
    ),
    EncoderConfig(
        name="lunit-dino-vits8",
        aliases=("lunit_dino_vits8", "lunit-vits8", "vit_small_patch8_224.lunit_dino"),
        architecture="vit_small_patch8_224",
        num_features=384,
        pooling="cls",
        tile_size=224,
        mpp=0.5,
        mean=LUNIT_MEAN,
        std=LUNIT_STD,
        license="lunit-non-commercial",
        ssl_method="DINO",
        training_data="19M TCGA H&E patches (Kang et al. 2023)",
        citation=KANG_2023,
        description="Lunit's DINO ViT-S/8 (Kang et al. 2023), timm port by 1aurent; "
        "class-token embedding.",
        notes="Lunit's own normalization (the record decides, not the port's config.json).",
        hub_id="1aurent/vit_small_patch8_224.lunit_dino",
        # Pinned from the hub's public pages: main at "Update config.json"; model.safetensors
        # last changed by 422e95d "Add model".
        revision="c23bc01cfbe022bc1f2a8a9306125a07818e4eb4",
        sha256="0b7e0236ce430064b31485bbb6f85e661dc5eca0cde709e8f04d59f1c2b23e0b",
        sources=(
            "https://huggingface.co/1aurent/vit_small_patch8_224.lunit_dino/blob/main/"
            "model.safetensors (LFS sha256)",
            "https://huggingface.co/1aurent/vit_small_patch8_224.lunit_dino/commits/main",
            "kaiko-ai/eva lunit.py (Lunit mean/std for the ViT-S models)",
        ),
    ),
    _kaiko("S", 16, 384, revision=None),  # main is e397514: its full commit id was not readable
    _kaiko("S", 8, 384, revision="003775444da0119f90ca63e2b86e454fd06ba797"),  # main
    _kaiko("B", 16, 768, revision="797c524a94c7fdae8ea33064d0ac6966ed8956bb"),  # "Add model"
    _kaiko("B", 8, 768, revision="a4eb74de76274a5f3fe8260841a1b07a90930f43"),  # main
)

RECORDS: tuple[EncoderConfig, ...] = (*_PAPER_RECORDS, *_FIELD_RECORDS)
