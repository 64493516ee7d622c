"""Preprocessing follows the encoder's own record; the golden embedding pins the whole chain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import histo_encoders
from histo_encoders.encoders.config import LUNIT_MEAN, LUNIT_STD
from histo_encoders.encoders.transforms import normalize_batch
from tests.encoder_kit import TINY, export_tiny, seeded_tile

GOLDEN = Path(__file__).parents[1] / "data" / "golden_tiny.json"


def test_lunit_transform_uses_lunit_normalization_and_never_crops() -> None:
    transform = histo_encoders.get_transform("lunit-mocov2")
    normalize = transform.transforms[-1]
    assert tuple(normalize.mean.tolist()) == pytest.approx(LUNIT_MEAN)
    assert tuple(normalize.std.tolist()) == pytest.approx(LUNIT_STD)
    tile = Image.fromarray(seeded_tile(224))
    assert transform(tile).shape == (3, 224, 224)
    corner = np.asarray(tile)[0, 0] / 255.0
    expected = (corner - np.array(LUNIT_MEAN)) / np.array(LUNIT_STD)
    assert transform(tile)[:, 0, 0].numpy() == pytest.approx(expected, abs=1e-5)


def test_device_normalization_equals_the_pil_transform(tmp_path: Path) -> None:
    model = histo_encoders.load(export_tiny(tmp_path / "tiny"))
    tile = seeded_tile(32)
    via_pil = histo_encoders.get_transform(model)(Image.fromarray(tile))
    on_device = normalize_batch(torch.from_numpy(tile)[None], TINY.mean, TINY.std)[0]
    assert torch.allclose(via_pil, on_device, atol=1e-6)


def _golden_features(tmp_path: Path) -> np.ndarray:
    model = histo_encoders.load(export_tiny(tmp_path / "tiny"))
    batch = histo_encoders.get_transform(model)(Image.fromarray(seeded_tile(32)))[None]
    with torch.no_grad():
        return model(batch)[0].numpy()


def test_golden_embedding(tmp_path: Path) -> None:
    """Fixed weights + fixed tile -> stored features: a changed normalization, resize or dtype shows."""
    expected = np.array(json.loads(GOLDEN.read_text())["features"], dtype=np.float32)
    actual = _golden_features(tmp_path)
    assert actual.shape == expected.shape == (96,)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
