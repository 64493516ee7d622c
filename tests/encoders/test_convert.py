"""Foreign checkpoint layouts convert to encoder folders that compute the source's function."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision

import histo_encoders
from histo_encoders import errors
from histo_encoders.encoders.convert import convert_checkpoint
from histo_encoders.encoders.registry import get_config

CONFIG = get_config("lunit-mocov2").with_updates(
    name="converted", hub_id=None, revision=None, sha256=None, aliases=()
)


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    for module in model.modules():  # non-trivial BN statistics, so a wrong buffer would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _backbone_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        body = torch.nn.Sequential(*list(model.children())[:-1])  # everything but fc
        return body(x).flatten(1)


def _moco(source: torch.nn.Module) -> dict[str, torch.Tensor]:
    query = {f"module.encoder_q.{k}": v for k, v in source.state_dict().items() if "fc." not in k}
    head = {
        "module.encoder_q.fc.0.weight": torch.zeros(2048, 2048),
        "module.encoder_q.fc.0.bias": torch.zeros(2048),
        "module.encoder_q.fc.2.weight": torch.zeros(128, 2048),
        "module.encoder_q.fc.2.bias": torch.zeros(128),
    }
    key = {k.replace("encoder_q", "encoder_k"): v.clone() for k, v in query.items()}
    queue = {"module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1)}
    return {"epoch": 200, "state_dict": {**query, **head, **key, **queue}}


def _torchvision(source: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}  # as Lunit


def _lightning(source: torch.nn.Module) -> dict[str, object]:
    state = {f"backbone.{k}": v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    state["projector.0.weight"] = torch.zeros(8, 2048)
    state["momentum_backbone.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    return {"state_dict": state, "epoch": 3}


@pytest.mark.integration
@pytest.mark.parametrize("make", [_moco, _torchvision, _lightning], ids=lambda f: f.__name__[1:])
def test_converted_encoder_computes_the_source_function(make, source, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save(make(source), checkpoint)
    folder = convert_checkpoint(checkpoint, tmp_path / "encoder", CONFIG)
    x = torch.randn(2, 3, 64, 64)
    expected = _backbone_features(source, x)
    with torch.no_grad():
        ours = histo_encoders.load(folder)(x)
        plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()
    assert torch.equal(ours, plain)


def test_unknown_layout_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "odd.pth"
    torch.save({"weird.conv.weight": torch.zeros(1)}, checkpoint)
    with pytest.raises(errors.CheckpointLayoutError, match="unknown checkpoint layout"):
        convert_checkpoint(checkpoint, tmp_path / "out", CONFIG)


def test_checkpoint_missing_backbone_keys_is_refused(source, tmp_path: Path) -> None:
    state = _torchvision(source)
    state.pop("layer4.2.bn3.running_var")
    checkpoint = tmp_path / "partial.pth"
    torch.save(state, checkpoint)
    with pytest.raises(errors.WeightsMismatchError, match="missing"):
        convert_checkpoint(checkpoint, tmp_path / "out", CONFIG)
    assert not (tmp_path / "out").exists()


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    checkpoint = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": Path("x")}, checkpoint)
    with pytest.raises(errors.CheckpointLayoutError, match="weights_only"):
        convert_checkpoint(checkpoint, tmp_path / "out", CONFIG)
