"""Unit tests of the MoCo v2 method and its parts (training/): fast, CPU, no slides."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from histo_encoders.errors import CheckpointLayoutError, ConfigError
from tests.training._moco_stub import stub_moco
from training.augment import TwoViews, gaussian_blur, hed_jitter, sample_generator
from training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from training.config import AugmentConfig, load_config
from training.distributed import (
    SplitBatchNorm2d,
    convert_to_split_bn,
    shuffle_batch,
    shuffle_indices,
    unshuffle_batch,
)
from training.export import query_backbone_state_dict
from training.moco import build_moco, contrastive_accuracy
from training.tiles import EpochSampler

TINY_ARGS = {"layers": [1, 1, 1, 1]}


def test_enqueue_writes_at_pointer_and_wraps_around() -> None:
    moco = stub_moco(queue_size=8)
    first, second, third = (torch.full((4, 4), float(v)) for v in (1, 2, 3))
    moco.enqueue(first)
    assert int(moco.queue_ptr) == 4
    moco.enqueue(second)
    assert int(moco.queue_ptr) == 0  # wrapped
    assert torch.equal(moco.queue[:, :4], first.T) and torch.equal(moco.queue[:, 4:], second.T)
    moco.enqueue(third)  # overwrites the oldest keys, not the newest
    assert torch.equal(moco.queue[:, :4], third.T) and torch.equal(moco.queue[:, 4:], second.T)
    assert int(moco.queue_ptr) == 4


def test_queue_not_multiple_of_batch_is_refused() -> None:
    moco = stub_moco(queue_size=8)
    with pytest.raises(ConfigError, match="multiple of the global batch"):
        moco.enqueue(torch.zeros(3, 4))


def test_momentum_update_moves_parameters_only() -> None:
    moco = stub_moco(momentum=0.9)
    with torch.no_grad():
        for param in moco.encoder_q.parameters():
            param.add_(1.0)
        moco.encoder_k.backbone.bn.running_mean.fill_(7.0)
    before_k = [p.clone() for p in moco.encoder_k.parameters()]
    moco.momentum_update()
    pairs = zip(moco.encoder_k.parameters(), before_k, moco.encoder_q.parameters(), strict=True)
    for p_k, old_k, p_q in pairs:
        torch.testing.assert_close(p_k, 0.9 * old_k + 0.1 * p_q)
    # BN running statistics of the key encoder are its own, never averaged from the query.
    assert torch.equal(moco.encoder_k.backbone.bn.running_mean, torch.full((6,), 7.0))


def test_no_gradient_reaches_the_key_encoder() -> None:
    moco = stub_moco()
    images = torch.rand(4, 3, 8, 8)
    output = moco(images, images.flip(-1))
    output.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in moco.encoder_k.parameters())
    assert all(p.grad is not None for p in moco.encoder_q.parameters())
    assert output.logits.shape == (4, 1 + 8)


def test_forward_enqueues_this_steps_keys() -> None:
    moco = stub_moco(queue_size=8)
    output = moco(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))
    assert torch.equal(moco.queue[:, :4], output.keys.T)
    torch.testing.assert_close(output.keys.norm(dim=1), torch.ones(4))


def test_logits_loss_and_queue_stay_fp32_under_bf16_autocast() -> None:
    moco = stub_moco()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = moco(torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8))
    assert output.logits.dtype == torch.float32
    assert output.loss.dtype == torch.float32
    assert moco.queue.dtype == torch.float32


def test_contrastive_accuracy_counts_positive_first() -> None:
    logits = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    assert contrastive_accuracy(logits) == 0.5


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_shuffle_then_unshuffle_is_exact_inverse(world_size: int) -> None:
    per_rank = 3
    x_all = torch.arange(world_size * per_rank * 2, dtype=torch.float32).view(-1, 2)
    idx = shuffle_indices(len(x_all), torch.Generator().manual_seed(world_size))
    # Every rank encodes its shuffled slice (identity encoder), then keys are gathered back.
    encoded = torch.cat([shuffle_batch(x_all, idx, r, world_size) for r in range(world_size)])
    for rank in range(world_size):
        mine = unshuffle_batch(encoded, idx, rank, world_size)
        assert torch.equal(mine, x_all[rank * per_rank : (rank + 1) * per_rank])
    if world_size > 1:
        assert not torch.equal(encoded, x_all)  # it did shuffle


def test_split_bn_normalises_each_group_and_loads_into_plain_bn() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3)
    split = SplitBatchNorm2d(3, num_splits=2)
    x = torch.randn(4, 3, 5, 5)
    x[1::2] += 10.0  # group 1 (odd samples) has another mean: plain BN would not centre each
    out = split(x)
    torch.testing.assert_close(out[0::2].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1::2].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    plain.load_state_dict(split.state_dict())  # same keys: exports stay plain timm models


def test_split_bn_conversion_keeps_timm_keys() -> None:
    model = timm.create_model("resnet18", num_classes=0, **TINY_ARGS)
    keys = set(model.state_dict())
    convert_to_split_bn(model, 2)
    assert isinstance(model.bn1, SplitBatchNorm2d)
    assert set(model.state_dict()) == keys


def test_export_keeps_exact_timm_keys_and_refuses_unknown_ones() -> None:
    moco = build_moco(
        "resnet18", TINY_ARGS, dim=8, hidden_dim=16, queue_size=8, momentum=0.9, temperature=0.2
    )
    state = moco.state_dict()
    backbone = query_backbone_state_dict(state)
    reference = timm.create_model("resnet18", num_classes=0, **TINY_ARGS)
    assert set(backbone) == set(reference.state_dict())
    reference.load_state_dict(backbone, strict=True)
    with pytest.raises(CheckpointLayoutError, match="not expected"):
        query_backbone_state_dict({**state, "encoder_q.extra.weight": torch.zeros(1)})
    without_head = {k: v for k, v in state.items() if k != "encoder_q.head.2.bias"}
    with pytest.raises(CheckpointLayoutError, match="missing"):
        query_backbone_state_dict(without_head)


def test_views_are_reproducible_per_sample_and_differ_between_q_and_k() -> None:
    tile = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    views = TwoViews(AugmentConfig(vflip=True, rot90=True, hed_jitter=0.05), 32)
    q1, k1 = views(tile, sample_generator(0, 3, 17))
    q2, k2 = views(tile, sample_generator(0, 3, 17))
    q3, _ = views(tile, sample_generator(0, 3, 18))
    assert q1.shape == (3, 32, 32) and q1.dtype == torch.uint8
    assert torch.equal(q1, q2) and torch.equal(k1, k2)
    assert not torch.equal(q1, k1) and not torch.equal(q1, q3)


def test_hed_jitter_zero_strength_keeps_colours() -> None:
    image = torch.rand(3, 8, 8) * 0.8 + 0.1
    out = hed_jitter(image, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, image, atol=1e-4, rtol=0)


def test_separable_blur_matches_torchvision_gaussian_blur() -> None:
    import torchvision.transforms.v2.functional as TF

    image = torch.rand(3, 64, 64)
    blurred = gaussian_blur(image, (1.5, 1.5), torch.Generator().manual_seed(0))
    reference = TF.gaussian_blur(image, kernel_size=[7, 7], sigma=[1.5, 1.5])  # 10% of 64 px
    torch.testing.assert_close(blurred, reference, atol=1e-5, rtol=0)


def test_config_overrides_are_typed_and_typos_refused() -> None:
    config = load_config(
        None, ["data.mpp=0.25", "model.model_args={layers: [1, 1, 1, 1]}", "optim.epochs=3"]
    )
    assert config.data.mpp == 0.25 and config.optim.epochs == 3
    assert dict(config.model.model_args) == TINY_ARGS
    with pytest.raises(ConfigError, match="Unknown config key"):
        load_config(None, ["data.mmp=0.5"])
    with pytest.raises(ConfigError, match="must be of type int"):
        load_config(None, ["optim.epochs=many"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["model.bn_mode=ghost"])


def test_camelyon_config_has_the_reference_hyperparameters() -> None:
    config = load_config(Path(__file__).parents[2] / "training/configs/moco_camelyon.yaml")
    assert (config.model.queue_size, config.model.momentum, config.model.temperature) == (
        65536,
        0.999,
        0.2,
    )
    assert config.model.dim == 128 and config.model.hidden_dim == 2048
    assert (config.optim.lr_per_256, config.optim.momentum, config.optim.weight_decay) == (
        0.03,
        0.9,
        1e-4,
    )
    assert config.optim.epochs == 200 and config.data.mpp == 0.5 and config.data.tile_size == 224


def test_camelyon_config_card_licence_is_the_registry_records() -> None:
    import histo_encoders

    config = load_config(Path(__file__).parents[2] / "training/configs/moco_camelyon.yaml")
    assert config.card.license == histo_encoders.get_config("moco-camelyon").license


def test_sampler_splits_global_batches_between_ranks_and_resumes_mid_epoch() -> None:
    samplers = [EpochSampler(10, 24, 3, rank, 2, seed=1) for rank in range(2)]
    per_rank = [list(s) for s in samplers]
    positions = sorted(p for samples in per_rank for _, p, _ in samples)
    assert positions == list(range(24))  # every position exactly once over the ranks
    samplers[1].set_state(0, start_step=2)
    assert list(samplers[1]) == per_rank[1][2 * 3 :]
    samplers[0].set_state(1)
    assert [t for _, _, t in samplers[0]] != [t for _, _, t in per_rank[0]]


def test_checkpoint_roundtrip_restores_rng_and_leaves_no_partial(tmp_path) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    rng = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"rng": [rng], "step": 5})
    assert not list(tmp_path.glob("*.partial"))
    restore_rng_state(load_checkpoint(path)["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
