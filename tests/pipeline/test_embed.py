"""embed_slide: the features a user gets are the encoder applied to the right tiles, correctly
normalized, whatever the reader or the number of worker processes; bad slides fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import histo_encoders.pipeline.embed
from histo_encoders.encoders.load import load
from histo_encoders.errors import (
    DeviceUnavailableError,
    MissingMppError,
    NonFiniteFeaturesError,
    SlideOpenError,
    SlideReadError,
)
from histo_encoders.pipeline.embed import EmbedOptions, embed_slide, prepare_encoder, run_settings
from histo_encoders.readers import OpenSlideReader
from histo_encoders.slides.slide import open_slide
from histo_encoders.slides.tiling import plan_tiles
from histo_encoders.slides.tissue import TissueSettings, detect_tissue
from histo_encoders.tools.synthetic import default_tissue_boxes, render_region

CPU = EmbedOptions(device="cpu", workers=0, batch_size=4)


def _reference_features(slide_path, encoder_dir, target_mpp, tile_size):
    """What a user would compute by hand: plan, read every tile, normalize, run the model."""
    with open_slide(slide_path) as slide:
        mask = detect_tissue(slide, TissueSettings())
        grid = plan_tiles(slide.info, target_mpp, tile_size, tissue_mask=mask, min_tissue=0.6)
        info = slide.info
    tiles = OpenSlideReader(slide_path, info, grid).read_tiles(range(len(grid)))
    model = load(encoder_dir)
    config = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return grid.coords, model((x - mean) / std).numpy()


def test_features_equal_model_on_normalized_tiles(synthetic_slides, tiny_encoder, tiny_encoder_dir):
    result = embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU, reader="openslide")

    coords, expected = _reference_features(synthetic_slides.svs, tiny_encoder_dir, 2.0, 32)
    assert result.n_tiles == len(coords) > 4  # several batches
    np.testing.assert_array_equal(result.coords, coords)
    np.testing.assert_allclose(result.features, expected, rtol=1e-4, atol=1e-5)
    assert result.features.dtype == np.float32 and result.coords.dtype == np.int64


def test_worker_processes_and_readers_give_the_same_features(synthetic_slides, tiny_encoder):
    in_process = embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU, reader="openslide")
    workers = embed_slide(
        synthetic_slides.svs, tiny_encoder, options=CPU, reader="openslide", workers=2
    )
    tiff = embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU, reader="tiff")

    np.testing.assert_array_equal(workers.features, in_process.features)
    np.testing.assert_array_equal(tiff.coords, in_process.coords)
    # The TIFF reader decodes with another JPEG library: pixels agree within a grey level.
    np.testing.assert_allclose(tiff.features, in_process.features, atol=0.05)
    assert tiff.attrs["reader"] == "tiff" and workers.attrs["reader"] == "openslide"


def test_tiles_sit_on_the_planted_tissue_at_the_encoders_resolution(synthetic_slides, tiny_encoder):
    result = embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU)

    # 32 px at the encoder's 2.0 um/px from a 0.5 um/px slide: a 128 level-0 px grid.
    assert result.attrs["target_mpp"] == 2.0 and result.attrs["patch_size_level0"] == 128.0
    assert (result.coords % 128 == 0).all()
    centres = result.coords + 64
    boxes = default_tissue_boxes(1024, 768)
    in_box = [
        any(x0 <= cx < x1 and y0 <= cy < y1 for x0, y0, x1, y1 in boxes) for cx, cy in centres
    ]
    assert all(in_box)


def test_mpp_and_tile_size_overrides_change_the_grid(synthetic_slides, tiny_encoder):
    # 0.25 um/px TIFF, tiles of 16 px at 4 um/px: steps of 256 level-0 px.
    result = embed_slide(synthetic_slides.tiff, tiny_encoder, options=CPU, mpp=4.0, tile_size=16)
    assert result.n_tiles > 0
    assert (result.coords % 256 == 0).all()
    assert result.attrs["patch_size"] == 16 and result.attrs["slide_mpp"] == 0.25


def test_provenance_names_encoder_weights_and_settings(synthetic_slides, tiny_encoder):
    attrs = embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU).attrs

    assert attrs["encoder"] == "tiny-embed"
    assert len(attrs["weights_sha256"]) == 64
    assert attrs["slide_name"] == "alpha.svs" and attrs["slide_file_size"] > 0
    assert attrs["slide_mpp"] == 0.5 and attrs["slide_mpp_source"]
    assert attrs["tissue_settings"]["min_tissue"] == 0.6
    for key in ("torch_version", "timm_version", "openslide_version", "histo_encoders_version"):
        assert attrs[key]
    assert attrs["level"] == 1 and attrs["read_size"] == 32
    assert attrs["reader_details"]["decode_path"]


def test_reader_counters_are_recorded_after_reading(synthetic_slides, tiny_encoder):
    result = embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU, reader="tiff")
    stats = result.attrs["reader_details"]["stats"]
    # Taken after the tiles were read: every tile delivered, every stored tile counted.
    assert stats["tiles_delivered"] == result.n_tiles > 0
    assert stats["stored_tiles_decoded"] > 0
    assert result.provenance.reader.stats == stats
    assert result.attrs["histo_encoders_version"] == histo_encoders.__version__


def test_fingerprint_follows_settings_that_change_features(tiny_encoder):
    prepared = prepare_encoder(tiny_encoder, CPU)
    base = run_settings(prepared, CPU)
    assert run_settings(prepared, CPU.with_updates(batch_size=64, workers=3)) == base
    assert run_settings(prepared, CPU.with_updates(mpp=1.0)) != base
    assert run_settings(prepared, CPU.with_updates(tissue=TissueSettings(min_tissue=0.3))) != base


def test_slide_without_tissue_gives_empty_features(synthetic_slides, tiny_encoder):
    result = embed_slide(synthetic_slides.blank, tiny_encoder, options=CPU)
    assert result.features.shape == (0, 96)
    assert result.coords.shape == (0, 2)
    assert "no tissue" in result.attrs["note"]


def test_small_svs_fixture_embeds(openslide_fixtures, tiny_encoder):
    # A real 16 x 16 px Aperio file at 0.499 um/px: 8 px tiles at its own mpp, all kept.
    result = embed_slide(
        openslide_fixtures / "small.svs",
        tiny_encoder,
        options=CPU.with_updates(mpp=0.499, tile_size=8, tissue=TissueSettings(min_tissue=0.0)),
    )
    assert result.features.shape == (4, 96)
    assert np.isfinite(result.features).all()
    assert result.attrs["slide_mpp"] == pytest.approx(0.499)


def test_corrupt_and_unopenable_slides_raise_typed_errors(openslide_fixtures, tiny_encoder):
    options = CPU.with_updates(mpp=0.5, tile_size=8, tissue=TissueSettings(min_tissue=0.0))
    with pytest.raises(SlideReadError, match=r"unreadable\.svs"):
        embed_slide(openslide_fixtures / "unreadable.svs", tiny_encoder, options=options)
    with pytest.raises(SlideOpenError, match=r"unopenable\.tiff"):
        embed_slide(openslide_fixtures / "unopenable.tiff", tiny_encoder, options=options)


def test_plain_image_needs_and_accepts_a_given_slide_mpp(tiny_encoder, tmp_path):
    pixels = render_region(0, 0, 512, 512, mpp=0.5, tissue_boxes=[(64, 64, 448, 448)])
    image = tmp_path / "plain.png"
    Image.fromarray(pixels).save(image)
    with pytest.raises(MissingMppError, match="--slide-mpp"):
        embed_slide(image, tiny_encoder, options=CPU)

    result = embed_slide(image, tiny_encoder, options=CPU, slide_mpp=0.5)
    assert result.n_tiles > 0 and result.attrs["slide_backend"] == "image"
    assert result.attrs["run_settings"]["slide_mpp_override"] == 0.5


class _FailingReader:
    """Reads like OpenSlide but its second batch hits a corrupt region."""

    name = "failing"
    streams = False

    def __init__(self, path, info, grid):
        self._inner = OpenSlideReader(path, info, grid)
        self._path = str(path)

    def read_tiles(self, indices):
        if 5 in list(indices):
            raise SlideReadError(self._path, "tile 5 is corrupt (test)")
        return self._inner.read_tiles(indices)

    def describe(self):
        return self._inner.describe()

    def close(self):
        self._inner.close()


@pytest.mark.parametrize("workers", [0, 1])
def test_read_error_in_a_worker_keeps_its_type(
    synthetic_slides, tiny_encoder, monkeypatch, workers
):
    monkeypatch.setattr(
        histo_encoders.pipeline.embed,
        "open_reader",
        lambda path, info, grid, kind, **options: _FailingReader(path, info, grid),
    )
    with pytest.raises(SlideReadError, match="tile 5 is corrupt") as caught:
        embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU, workers=workers)
    assert caught.value.path == str(synthetic_slides.svs)


class _NaNAfterFirstRow(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.histo_config = inner.histo_config
        self.histo_provenance = inner.histo_provenance

    def forward(self, x):
        out = self.inner(x).clone()
        out[1:] = float("nan")
        return out


def test_nan_features_fail_the_slide(synthetic_slides, tiny_encoder):
    with pytest.raises(NonFiniteFeaturesError, match="NaN"):
        embed_slide(synthetic_slides.svs, _NaNAfterFirstRow(tiny_encoder), options=CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_asking_for_cuda_without_it_is_an_error_not_a_fallback(synthetic_slides, tiny_encoder):
    with pytest.raises(DeviceUnavailableError, match="--device cpu"):
        embed_slide(synthetic_slides.svs, tiny_encoder, options=CPU, device="cuda")


def test_options_are_validated():
    with pytest.raises(ValueError, match="batch_size"):
        EmbedOptions(batch_size=0)
    with pytest.raises(ValueError, match="slide_mpp"):
        EmbedOptions(slide_mpp=-1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("reader", ["tiff", "openslide"])
def test_cuda_bf16_matches_cpu_fp32(synthetic_slides, tiny_encoder_dir, reader):
    cpu = embed_slide(synthetic_slides.svs, load(tiny_encoder_dir), options=CPU, reader=reader)
    gpu = embed_slide(
        synthetic_slides.svs,
        load(tiny_encoder_dir),
        options=CPU.with_updates(device="cuda", workers=2, reader=reader),
    )
    assert gpu.attrs["precision"] == "bf16" and gpu.attrs["device"].startswith("cuda")
    np.testing.assert_array_equal(gpu.coords, cpu.coords)
    cosine = (gpu.features * cpu.features).sum(1) / (
        np.linalg.norm(gpu.features, axis=1) * np.linalg.norm(cpu.features, axis=1) + 1e-12
    )
    assert cosine.min() > 0.99


@pytest.mark.slow
def test_compiled_encoder_gives_the_same_features(synthetic_slides, tiny_encoder_dir):
    eager = embed_slide(synthetic_slides.svs, load(tiny_encoder_dir), options=CPU)
    compiled = embed_slide(synthetic_slides.svs, load(tiny_encoder_dir), options=CPU, compile=True)
    assert compiled.attrs["compiled"] is True
    np.testing.assert_allclose(compiled.features, eager.features, rtol=1e-4, atol=1e-4)
