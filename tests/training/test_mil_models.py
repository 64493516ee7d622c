"""MIL models: padding and permutation invariance, small bags, empty bags, output shapes."""

import pytest
import torch

from training.mil.data import Bag, collate
from training.mil.errors import EmptyBagError
from training.mil.models import MODELS, build_model

DIM = 16
ALL_MODELS = sorted(MODELS)


def _model(name: str, n_classes: int = 2, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, DIM, n_classes, **options).eval()


def _bag(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


def _alone(model: torch.nn.Module, tiles: torch.Tensor) -> torch.Tensor:
    return model(tiles[None], torch.ones(1, len(tiles), dtype=torch.bool))[0]


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_bag_alone_equals_bag_inside_padded_batch(name, n_classes):
    model = _model(name, n_classes)
    short, long = _bag(7, 1), _bag(40, 2)
    bags = [Bag("a", "a", 0, short, None), Bag("b", "b", 1, long, None)]
    batch = collate(bags)
    # Garbage in the padded rows must not leak into the short bag's output.
    features = batch.features.clone()
    features[0, 7:] = 1e3
    with torch.no_grad():
        batched = model(features, batch.mask)
        assert batched.shape == (2, 1 if n_classes == 2 else n_classes)
        torch.testing.assert_close(batched[0], _alone(model, short), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched[1], _alone(model, long), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_does_not_depend_on_tile_order(name):
    model = _model(name)
    tiles = _bag(50, 3)
    shuffled = tiles[torch.randperm(50, generator=torch.Generator().manual_seed(4))]
    with torch.no_grad():
        torch.testing.assert_close(
            _alone(model, tiles), _alone(model, shuffled), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("n_tiles", [1, 3, 9])
def test_chowder_with_r_larger_than_the_bag(n_tiles):
    model = _model("chowder", n_extreme=10)
    tiles = _bag(n_tiles, 5).requires_grad_(True)
    out = _alone(model, tiles)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(tiles.grad).all()
    # The same bag padded among longer bags gives the same output.
    batch = collate([Bag("a", "a", 0, tiles.detach(), None), Bag("b", "b", 0, _bag(30, 6), None)])
    with torch.no_grad():
        torch.testing.assert_close(model(batch.features, batch.mask)[0], out.detach())


def test_chowder_extremes_are_the_top_and_bottom_scores():
    model = _model("chowder", n_extreme=2)
    scores = torch.tensor([[[0.5, -3.0, 2.0, 1.0, 9.0]]])
    mask = torch.tensor([[[True, True, True, True, False]]])  # 9.0 is padding
    torch.testing.assert_close(
        model.extremes(scores, mask), torch.tensor([[[2.0, 1.0, -3.0, 0.5]]])
    )


def test_chowder_defaults_are_the_papers_camelyon_setting():
    model = build_model("chowder", DIM, 2)
    assert model.n_extreme == 5 and model.mlp[0].in_features == 10
    sizes = [m.out_features for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert sizes == [200, 100, 1]
    # L2 of 0.5 on the tile-score weights only, added to the loss by the training loop.
    torch.testing.assert_close(model.penalty(), 0.5 * model.score.weight.square().sum())


def test_max_pooling_starts_from_a_zero_score_so_its_first_step_sees_every_tile():
    model = build_model("max-pool", DIM, 2)
    features = _bag(30, 9)[None]
    out = model(features, torch.ones(1, 30, dtype=torch.bool))
    out.sum().backward()
    # Every tile ties at zero, so the gradient is shared by the whole bag (the mean feature).
    torch.testing.assert_close(model.score.weight.grad[0], features[0].mean(0))


def test_abmil_attention_sums_to_one_and_ignores_padding():
    model = _model("abmil")
    batch = collate([Bag("a", "a", 0, _bag(5, 7), None), Bag("b", "b", 0, _bag(12, 8), None)])
    with torch.no_grad():
        attention = model.tile_scores(batch.features, batch.mask)
    torch.testing.assert_close(attention.sum(1), torch.ones(2))
    assert (attention[0, 5:] == 0).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_an_empty_bag_is_refused_with_a_clear_error(name):
    model = _model(name)
    features = torch.randn(2, 4, DIM)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    with pytest.raises(EmptyBagError, match="Bag 1 of the batch has no tiles"):
        model(features, mask)


def test_collating_an_empty_bag_names_the_slide():
    with pytest.raises(EmptyBagError, match="'empty-slide' has no tiles"):
        collate([Bag("empty-slide", "p", 0, torch.zeros(0, DIM), None)])


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="chowder"):
        build_model("attention-please", DIM, 2)


def test_deepmil_alias_builds_the_gated_abmil_with_the_paper_sizes():
    model = build_model("deepmil", 2048, 2)
    assert model.embed[0].in_features == 2048 and model.embed[0].out_features == 128
    # A linear tile embedding, as in FLamby's fed_camelyon16 model (no ReLU before attention).
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.embed)
    assert model.attention.weight.in_features == 128
    sizes = [m.out_features for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert sizes == [128, 64, 1]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["chowder", "abmil", "transformer"])
def test_cuda_bf16_training_and_prediction_agree_with_fp32(name):
    import numpy as np

    from training.mil.synthetic import witness_bags
    from training.mil.train import TrainOptions, predict, train_model

    bags = witness_bags(16, n_tiles=200, n_witnesses=10, shift=4.0, dim=DIM, seed=0)
    options = TrainOptions(name, epochs=3, batch_size=4, device="cuda")
    trained = train_model(bags[:12], bags[12:], 2, options)
    assert next(trained.model.parameters()).device.type == "cuda"
    bf16 = predict(trained.model, bags, device="cuda", mixed_precision=True)
    fp32 = predict(trained.model, bags, device="cuda", mixed_precision=False)
    assert np.isfinite(bf16).all()
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
