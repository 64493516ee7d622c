"""The benchmark measures every loader on the same tiles and reports them side by side."""

from __future__ import annotations

import json
import os

import pytest
import timm

from histo_encoders.tools.benchmark import BenchmarkOptions, format_report, run_benchmark
from histo_encoders.tools.synthetic import write_synthetic_slide

SMALL = BenchmarkOptions(
    tile_size=32,
    batch_size=16,
    threads=2,
    openslide_workers=(0,),
    decode_threads=(1,),
    repeats=1,
    max_tiles=48,
    model_tiles=32,
    device="cpu",
)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.svs"
    return write_synthetic_slide(path, width=800, height=600, mpp=0.2528, tile=128).path


def test_every_loader_is_measured_on_the_same_tiles(slide):
    measured = run_benchmark(slide, options=SMALL)
    result = measured.as_dict()
    loaders = result["loaders"]
    assert set(loaders) == {"tiff_reader", "openslide_loop_0_workers", "decode_floor_1_threads"}
    assert loaders["tiff_reader"]["tiles"] == loaders["openslide_loop_0_workers"]["tiles"] == 48
    assert loaders["tiff_reader"]["tiles_per_s"] > 0
    # 63 px regions over 128 px stored tiles: decode-once needs fewer decodes than tiles.
    assert 0 < result["ratios"]["stored_tiles_per_output_tile"] < 1
    expected = (
        loaders["tiff_reader"]["tiles_per_s"] / loaders["openslide_loop_0_workers"]["tiles_per_s"]
    )
    assert result["ratios"]["tiff_reader_vs_openslide_loop_0_workers"] == pytest.approx(expected)
    # How many cores each loader kept busy: a GIL-bound reader would show about one.
    for name in ("tiff_reader", "openslide_loop_0_workers", "decode_floor_1_threads"):
        assert 0 < loaders[name]["cores_used"] <= (os.cpu_count() or 1) + 0.5
    json.dumps(result)  # plain data, ready to be saved next to the report

    report = format_report(measured)
    assert "embed supply: tiff reader, decode once (2 threads)" in report
    assert "openslide read_region loop (0 workers)" in report
    assert "JPEG decode floor, 1 threads" in report
    assert "cores used" in report


def test_model_only_and_end_to_end_are_reported_with_their_ratio(slide):
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    result = run_benchmark(slide, model=model, options=SMALL)
    measured = result.as_dict()["model"]
    assert measured["tiles"] == 32
    assert measured["reader"] == "tiff"
    fraction = measured["end_to_end_tiles_per_s"] / measured["model_only_tiles_per_s"]
    assert measured["end_to_end_fraction"] == pytest.approx(fraction)
    assert "end to end / model only" in format_report(result)


def test_tiff_reader_batches_are_normalized_like_the_openslide_loop(slide):
    import torch
    from torchvision import transforms

    from histo_encoders.encoders import IMAGENET_MEAN as _IMAGENET_MEAN
    from histo_encoders.encoders import IMAGENET_STD as _IMAGENET_STD
    from histo_encoders.readers import TiffReaderOptions, TiffTileReader
    from histo_encoders.slides.slide import open_slide
    from histo_encoders.slides.tiling import plan_tiles

    with open_slide(slide) as opened:
        info = opened.info
    grid = plan_tiles(info, 0.5, 32)
    field = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)]
    )
    normalize = (_IMAGENET_MEAN, _IMAGENET_STD)
    with TiffTileReader(slide, info, grid, TiffReaderOptions(num_threads=2)) as reader:
        indices = list(range(8))
        tiles = reader.read_tiles(indices)
        batches = list(reader.iter_batches(indices, batch_size=8, normalize=normalize))
    ((batch_indices, floats),) = batches
    expected = torch.stack([field(tiles[i]) for i in batch_indices])
    # The benchmark hands the model NCHW (channels_last) views of the reader's NHWC floats.
    torch.testing.assert_close(floats.permute(0, 3, 1, 2), expected, atol=1e-5, rtol=0)
