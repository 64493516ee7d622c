"""Each pooling rule on a tiny model of the timm family it is used with, against the rule
computed by hand from ``forward_features`` (random weights, the records' kwargs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.layers import GluMlp, SwiGLUPacked

import histo_encoders
from histo_encoders.encoders import pooling
from histo_encoders.encoders.load import build_model
from histo_encoders.errors import ConfigError
from tests.encoder_kit import TINY, export_tiny, seeded_state

TINY_VIT = {"embed_dim": 32, "depth": 1, "num_heads": 2}
# A record of Virchow2's kind, shrunk: layer classes named (as records must), tokens out.
VIRCHOW2_LIKE = TINY.with_updates(
    name="virchow2-like",
    architecture="vit_huge_patch14_224",
    model_args={
        "img_size": 224,
        "init_values": 1e-5,
        "mlp_ratio": 5.3375,
        "reg_tokens": 4,
        "global_pool": "",
        "dynamic_img_size": True,
        "mlp_layer": "SwiGLUPacked",
        "act_layer": "silu",
        **TINY_VIT,
    },
    pooling="cls+mean",
    num_features=64,
    tile_size=224,
)


def _vit(architecture: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(architecture, num_classes=0, **TINY_VIT, **kwargs).eval()


def _batch(size: int = 224) -> torch.Tensor:
    return torch.from_numpy(
        __import__("numpy").random.default_rng(3).normal(size=(2, 3, size, size)).astype("float32")
    )


def _virchow2_vit() -> torch.nn.Module:
    # Paige's construction (their card), shrunk: 4 registers, packed SwiGLU, tokens out.
    return _vit(
        "vit_huge_patch14_224",
        img_size=224,
        init_values=1e-5,
        mlp_ratio=5.3375,
        reg_tokens=4,
        global_pool="",
        dynamic_img_size=True,
        mlp_layer=SwiGLUPacked,
        act_layer=torch.nn.SiLU,
    )


@torch.no_grad()
def test_class_token_plus_patch_mean_leaves_registers_out_of_the_mean() -> None:
    trunk = _virchow2_vit()
    x = _batch()
    tokens = trunk.forward_features(x)
    assert tokens.shape == (2, 5 + 16 * 16, 32)  # class + 4 registers + 16 x 16 patches

    model = pooling.apply_pooling(trunk, "cls+mean")
    by_hand = torch.cat([tokens[:, 0], tokens[:, 5:].mean(dim=1)], dim=-1)
    assert model.num_features == 64
    assert torch.equal(model(x), by_hand)
    with_registers = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)
    assert not torch.allclose(model(x), with_registers)
    assert model.trunk is trunk and model.num_prefix_tokens == 5


@torch.no_grad()
def test_class_token_plus_patch_mean_without_registers() -> None:
    trunk = _vit(
        "vit_huge_patch14_224",
        mlp_ratio=5.3375,
        global_pool="",
        mlp_layer=SwiGLUPacked,
        act_layer=torch.nn.SiLU,
    )
    x = _batch()
    tokens = trunk.forward_features(x)
    model = pooling.apply_pooling(trunk, "cls+mean")
    assert torch.equal(model(x), torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1))


@torch.no_grad()
@pytest.mark.parametrize(
    ("architecture", "kwargs", "prefix"),
    [
        ("vit_large_patch16_224", {"init_values": 1e-5, "dynamic_img_size": True}, 1),
        (
            "vit_giant_patch14_224",  # UNI2-h: 8 registers, no position embedding on them
            {"reg_tokens": 8, "no_embed_class": True, "mlp_ratio": 5.33334, "init_values": 1e-5},
            9,
        ),
        ("vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5}, 5),
    ],
)
def test_class_token_is_the_first_token_after_the_final_norm(architecture, kwargs, prefix) -> None:
    trunk = _vit(architecture, **kwargs)
    x = _batch()
    tokens = trunk.forward_features(x)
    assert trunk.num_prefix_tokens == prefix
    model = pooling.apply_pooling(trunk, "cls")
    assert model is trunk and model.num_features == 32
    assert torch.equal(model(x), tokens[:, 0])


@torch.no_grad()
def test_timm_rule_keeps_the_architectures_own_pooled_output() -> None:
    trunk = build_model(TINY)
    x = torch.randn(2, 3, 32, 32)
    expected = trunk.forward_head(trunk.forward_features(x), pre_logits=True)
    model = pooling.apply_pooling(trunk, "timm")
    assert model is trunk and torch.equal(model(x), expected)
    assert model(x).shape == (2, pooling.embedding_width(trunk, "timm"))


def test_rules_that_need_a_class_token_refuse_a_resnet_and_unknown_rules() -> None:
    with pytest.raises(ConfigError, match="class token"):
        pooling.apply_pooling(build_model(TINY), "cls+mean")
    with pytest.raises(ConfigError, match="unknown pooling rule"):
        pooling.get_rule("gem")
    with pytest.raises(ConfigError, match="global_pool"):
        pooling.apply_pooling(_vit("vit_small_patch16_224", global_pool="avg"), "cls")


def test_layer_names_in_a_record_build_the_authors_network() -> None:
    # Records name SwiGLUPacked/SiLU (a config.json cannot carry classes): same network.
    ours = build_model(VIRCHOW2_LIKE)
    theirs = _virchow2_vit()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert isinstance(ours.blocks[0].mlp, GluMlp)  # SwiGLUPacked is GluMlp, gate first
    assert isinstance(ours.blocks[0].mlp.act, torch.nn.SiLU)


@torch.no_grad()
def test_pooling_round_trips_through_an_encoder_folder(tmp_path: Path) -> None:
    config = VIRCHOW2_LIKE
    folder = export_tiny(tmp_path / "v2", config=config)
    model = histo_encoders.load(folder)
    assert model.histo_config.pooling == "cls+mean" and model.num_features == 64
    assert model.histo_config.model_args["mlp_layer"] == "SwiGLUPacked"
    x = _batch()
    tokens = model.trunk.forward_features(x)
    assert torch.equal(model(x), torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1))
    # The folder's trunk loads into plain timm too, given the layer classes in code as Paige's
    # card says; plain timm then gives the tokens, and the card the rule.
    plain = timm.create_model(
        f"local-dir:{folder}", pretrained=True, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU
    ).eval()
    assert torch.equal(plain(x), tokens)
    assert torch.equal(
        seeded_state(config)["cls_token"], model.trunk.state_dict()["cls_token"]
    )  # what was exported is what loaded
