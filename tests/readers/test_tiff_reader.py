"""The TIFF reader: same pixels as OpenSlide, each stored tile decoded once, bounded memory."""

from __future__ import annotations

import dataclasses
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_encoders.errors import ReaderNotApplicableError, SlideReadError
from histo_encoders.readers import TiffReaderOptions, TiffTileReader
from histo_encoders.readers.openslide_reader import OpenSlideReader
from histo_encoders.slides.slide import open_slide
from histo_encoders.slides.tiling import plan_tiles
from histo_encoders.tools.synthetic import write_synthetic_slide
from tests.fixture_paths import OPENSLIDE_FIXTURES
from tests.readers._jpegtables import write_jpegtables_slide

FIXTURES = OPENSLIDE_FIXTURES
WIDTH, HEIGHT, MPP = 600, 420, 0.2528


def _write(kind: str, path: Path) -> Path:
    common = {"width": WIDTH, "height": HEIGHT, "mpp": MPP}
    if kind == "svs-jpeg":
        return write_synthetic_slide(path, kind="svs", compression="jpeg", tile=128, **common).path
    if kind == "tiff-deflate":
        return write_synthetic_slide(
            path, kind="tiff", compression="deflate", tile=128, **common
        ).path
    if kind == "svs-jpegtables":
        return write_jpegtables_slide(path, **common)
    return write_jpegtables_slide(path, rgb_jpeg=True, **common)  # Aperio-style RGB JPEG


@pytest.fixture(
    scope="module", params=["svs-jpeg", "tiff-deflate", "svs-jpegtables", "svs-rgbjpeg"]
)
def slide_path(request, tmp_path_factory) -> Path:
    return _write(request.param, tmp_path_factory.mktemp("slides") / f"{request.param}.svs")


def _info(path: Path):
    with open_slide(path) as slide:
        return slide.info


def _assert_same_as_openslide(path: Path, info, grid) -> None:
    indices = np.arange(len(grid.coords))
    expected = OpenSlideReader(path, info, grid).read_tiles(indices)
    with TiffTileReader(path, info, grid, TiffReaderOptions(num_threads=2)) as reader:
        got = reader.read_tiles(indices)
    difference = np.abs(expected.astype(np.int16) - got.astype(np.int16))
    assert difference.max() <= 1, f"max difference {difference.max()} grey levels"


@pytest.mark.parametrize("target_mpp", [0.25, 0.2528, 0.5])
def test_pixels_match_openslide_across_stored_tile_boundaries(slide_path, target_mpp):
    info = _info(slide_path)
    grid = plan_tiles(info, target_mpp, 48)
    # 48-127 px regions over 128 px stored tiles: many regions straddle stored-tile edges.
    straddling = (grid.coords // 128) != ((grid.coords + grid.read_size - 1) // 128)
    assert straddling.any(axis=1).sum() >= 5
    _assert_same_as_openslide(slide_path, info, grid)


def test_regions_over_many_stored_tiles_match_openslide(slide_path):
    # 297 px regions over 128 px stored tiles span up to 4 x 4 stored tiles: more than the
    # 3 x 3 the compiled cut is first built for. One also runs past the right edge.
    info = _info(slide_path)
    grid = plan_tiles(info, 0.5, 150)
    assert grid.read_size == 297
    coords = np.array([(100, 60), (127, 127), (0, 0), (WIDTH - 200, 20)], dtype=np.int64)
    spans = (coords + grid.read_size - 1) // 128 - coords // 128 + 1
    assert spans.prod(axis=1).max() == 16
    _assert_same_as_openslide(slide_path, info, dataclasses.replace(grid, coords=coords))


def test_regions_over_the_right_and_bottom_edges_match_openslide(slide_path):
    info = _info(slide_path)
    grid = plan_tiles(info, 0.5, 48)
    size = grid.read_size
    edge_coords = [
        (WIDTH - size, HEIGHT - size),  # ends exactly at the corner, inside a padded stored tile
        (WIDTH - size // 2, 100),  # half past the right edge: glass there
        (200, HEIGHT - size // 3),  # past the bottom edge
        (WIDTH - 10, HEIGHT - 10),  # nearly all outside
        (-20, -30),  # before the top-left corner
    ]
    grid = dataclasses.replace(grid, coords=np.array(edge_coords, dtype=np.int64))
    _assert_same_as_openslide(slide_path, info, grid)


def test_level_above_zero_matches_openslide_at_whole_pixel_positions(tmp_path):
    path = _write("svs-jpeg", tmp_path / "levels.svs")
    info = _info(path)
    grid = plan_tiles(info, 2.0, 32)  # reads level 1 (downsample 4)
    assert grid.level == 1
    grid = dataclasses.replace(grid, coords=(grid.coords // 4) * 4)
    _assert_same_as_openslide(path, info, grid)


def test_positions_between_level_pixels_are_refused(tmp_path):
    path = _write("svs-jpeg", tmp_path / "levels.svs")
    info = _info(path)
    grid = plan_tiles(info, 2.0, 32)
    grid = dataclasses.replace(grid, coords=np.array([[2, 4]], dtype=np.int64))
    with pytest.raises(ReaderNotApplicableError, match="between pixels"):
        TiffTileReader(path, info, grid)


def test_each_stored_tile_is_decoded_once_in_streaming(tmp_path):
    path = _write("svs-jpeg", tmp_path / "once.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.2528, 48)
    with TiffTileReader(path, info, grid) as reader:
        seen = []
        for indices, tiles in reader.iter_batches(batch_size=16):
            assert tiles.dtype == torch.uint8 and tiles.shape[1:] == (48, 48, 3)
            seen.extend(indices.tolist())
        stats = reader.describe().stats
    assert sorted(seen) == list(range(len(grid.coords)))
    touched = {
        (y // 128, x // 128) for x0, y0 in grid.coords for x in (x0, x0 + 47) for y in (y0, y0 + 47)
    }
    assert stats["stored_tiles_decoded"] == len(touched)


def test_read_tiles_keeps_the_order_asked_including_repeats(tmp_path):
    path = _write("svs-jpeg", tmp_path / "order.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)
    indices = [7, 0, 7, 3, len(grid.coords) - 1]
    expected = OpenSlideReader(path, info, grid).read_tiles(indices)
    with TiffTileReader(path, info, grid) as reader:
        got = reader.read_tiles(indices)
    assert np.abs(expected.astype(int) - got).max() <= 1


def test_reader_survives_pickling_and_reopens_after_close(tmp_path):
    path = _write("svs-jpeg", tmp_path / "pickle.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)
    reader = TiffTileReader(path, info, grid)
    first = reader.read_tiles([0, 1])
    reader.close()
    np.testing.assert_array_equal(reader.read_tiles([0, 1]), first)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read_tiles([0, 1]), first)
    clone.close()
    reader.close()


def test_corrupt_jpeg_fixture_raises_slide_read_error_like_openslide():
    path = FIXTURES / "unreadable.svs"
    info = _info(path)
    grid = plan_tiles(info, info.mpp, 16)
    with pytest.raises(SlideReadError, match="Bogus marker length"):
        OpenSlideReader(path, info, grid).read_tiles([0])
    reader = TiffTileReader(path, info, grid)
    with pytest.raises(SlideReadError, match="Bogus marker length") as caught:
        reader.read_tiles([0])
    assert caught.value.path == str(path)
    with pytest.raises(SlideReadError):
        next(reader.iter_batches())
    reader.close()


def test_zeroed_tail_of_a_tile_gets_openslides_verdict(tmp_path):
    # Zeroing the end of a stored tile (its EOI too) leaves compressed data libjpeg decodes
    # without a warning: OpenSlide reads it, and so must we, pixel for pixel. A real
    # truncation is refused by both (tests/faults/test_jpeg_parity.py).
    path = _write("svs-jpeg", tmp_path / "zeroed.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)
    with TiffTileReader(path, info, grid) as reader:
        offset, count = int(reader.level.offsets[1]), int(reader.level.bytecounts[1])
    with open(path, "r+b") as file:  # zero the last 40% of stored tile 1, EOI included
        file.seek(offset + count * 6 // 10)
        file.write(b"\0" * (count - count * 6 // 10))
    _assert_same_as_openslide(path, info, grid)


def test_real_generic_tiff_fixture_matches_openslide():
    path = FIXTURES / "boxes.tiff"
    with open_slide(path, mpp=0.5) as slide:  # its own resolution tags are nonsense
        info = slide.info
    grid = plan_tiles(info, 0.5, 40)
    reader = TiffTileReader(path, info, grid)
    assert reader.describe().as_dict()["codec"] == "deflate"
    reader.close()
    _assert_same_as_openslide(path, info, grid)


def test_memory_stays_bounded_on_a_large_blank_slide(tmp_path):
    slide = write_synthetic_slide(
        tmp_path / "large.svs", width=8192, height=4096, mpp=0.25, tissue_boxes=(), tile=256
    )
    info = _info(slide.path)
    grid = plan_tiles(info, 0.5, 112)  # 224 px regions, 36 x 18 of them
    with TiffTileReader(slide.path, info, grid, TiffReaderOptions(num_threads=2)) as reader:
        tracemalloc.start()
        delivered = sum(len(indices) for indices, _ in reader.iter_batches(batch_size=32))
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stats = reader.describe().stats
    assert delivered == len(grid.coords) == 36 * 18
    assert stats["stored_tiles_decoded"] == 32 * 16  # each stored tile decoded exactly once
    # Alive at once: about the rows of stored tiles that the current row of regions spans,
    # never the level (512 stored tiles, 96 MiB decoded).
    assert stats["peak_decoded_tiles"] <= 4 * 32
    assert peak_bytes < 32 * 2**20, f"peak {peak_bytes / 2**20:.0f} MiB"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decode_matches_cpu_reader(slide_path):
    info = _info(slide_path)
    grid = plan_tiles(info, 0.5, 48)
    indices = np.arange(len(grid.coords))
    with TiffTileReader(slide_path, info, grid) as reader:
        expected = reader.read_tiles(indices)
    with TiffTileReader(slide_path, info, grid, TiffReaderOptions(device="cuda")) as reader:
        got = reader.read_tiles(indices)
        described = reader.describe()
    # nvJPEG's IDCT and chroma upsampling may differ from libjpeg-turbo by a grey level or two.
    assert np.abs(expected.astype(int) - got).max() <= 3
    assert described.decode_path.startswith("cuda")


def _device_pipeline(path: Path, grid, info, decode_batch):
    """The CUDA path's pipeline (splice tables, batch decode, cut + resize with tensors) run on
    the CPU, with torchvision's CPU decoder standing in for nvJPEG."""
    from histo_encoders.readers.gpu_decode import GpuTileSupply
    from histo_encoders.readers.tile_plan import plan_reads

    reader = TiffTileReader(path, info, grid)
    reader._ensure_open()
    supply = GpuTileSupply(reader, decode_batch=decode_batch)
    indices = np.arange(len(grid.coords))
    plan = plan_reads(reader._x, reader._y, grid.read_size, reader.level)
    out = np.empty((len(indices), grid.tile_size, grid.tile_size, 3), np.uint8)
    for batch_indices, tiles in supply.stream(plan, indices, 16):
        out[batch_indices] = tiles.numpy()
    return reader, supply, out


def _torchvision_cpu_decode(streams, device):
    from torchvision.io import ImageReadMode, decode_jpeg

    return [
        decode_jpeg(torch.frombuffer(bytearray(s), dtype=torch.uint8), mode=ImageReadMode.RGB)
        for s in streams
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind", ["svs-jpeg", "svs-jpegtables"])
def test_device_pipeline_matches_openslide(tmp_path, kind):
    path = _write(kind, tmp_path / f"{kind}.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)
    reader, supply, got = _device_pipeline(path, grid, info, _torchvision_cpu_decode)
    expected = OpenSlideReader(path, info, grid).read_tiles(np.arange(len(grid.coords)))
    assert np.abs(expected.astype(int) - got).max() <= 1
    assert reader.stats.gpu_decoded == reader.stats.stored_tiles_decoded > 0
    assert reader.stats.cpu_fallback_decodes == 0
    assert supply.decode_path().endswith(":nvjpeg+resize")
    reader.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tiles_the_gpu_decoder_refuses_are_decoded_on_cpu_and_counted(tmp_path):
    path = _write("svs-jpeg", tmp_path / "refused.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)
    refused = []

    def picky_decoder(streams, device):
        if any(len(s) % 3 == 0 for s in streams):  # "refuses" about a third of the tiles
            refused.append(1)
            raise RuntimeError("nvjpeg: unsupported stream")
        return _torchvision_cpu_decode(streams, device)

    reader, _, got = _device_pipeline(path, grid, info, picky_decoder)
    expected = OpenSlideReader(path, info, grid).read_tiles(np.arange(len(grid.coords)))
    assert np.abs(expected.astype(int) - got).max() <= 1
    stats = reader.stats
    assert stats.cpu_fallback_decodes > 0
    assert stats.gpu_decoded + stats.cpu_fallback_decodes == stats.stored_tiles_decoded
    assert sum(stats.fallback_reasons.values()) == stats.cpu_fallback_decodes
    reader.close()


def test_rgb_coded_aperio_jpeg_is_not_sent_to_nvjpeg(tmp_path):
    from histo_encoders.readers.gpu_decode import GpuTileSupply

    path = _write("svs-rgbjpeg", tmp_path / "rgb.svs")
    info = _info(path)
    reader = TiffTileReader(path, info, plan_tiles(info, 0.5, 48))
    assert reader.level.jpeg_rgb
    assert "RGB-coded JPEG" in GpuTileSupply(reader).decode_path()


@pytest.mark.parametrize(("read_size", "tile_size"), [(443, 224), (127, 48), (63, 48), (96, 48)])
def test_device_resize_equals_resize_tile(read_size, tile_size):
    from histo_encoders.readers.gpu_decode import resize_regions
    from histo_encoders.readers.resize import resize_tile

    regions = np.random.default_rng(read_size).integers(0, 256, (3, read_size, read_size, 3))
    regions = regions.astype(np.uint8)
    expected = np.stack([resize_tile(region, tile_size) for region in regions])
    got = resize_regions(torch.from_numpy(regions).permute(0, 3, 1, 2), tile_size).numpy()
    # Same weights and the same rounding as PIL's BOX filter: equal, not merely close.
    np.testing.assert_array_equal(got, expected)


def test_marker_damage_inside_scan_data_is_reported(tmp_path):
    from histo_encoders.readers.tiff_layout import RawTileSource, validate_jpeg

    path = _write("svs-jpeg", tmp_path / "marker.svs")
    with TiffTileReader(path, _info(path), plan_tiles(_info(path), 0.5, 48)) as reader:
        source = RawTileSource(path, reader.level)
        data = source.read(0)
        source.close()
    assert validate_jpeg(data) is None
    middle = len(data) // 2
    damaged = data[:middle] + b"\xff\xc4" + data[middle + 2 :]
    assert "damaged marker" in validate_jpeg(damaged)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_gpu_decoder_with_wrong_colours_sends_the_slide_to_cpu_decode(tmp_path):
    path = _write("svs-jpeg", tmp_path / "colours.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)

    def swapped_channels(streams, device):  # a decoder that misreads the colour space
        return [image.flip(0) for image in _torchvision_cpu_decode(streams, device)]

    with pytest.warns(RuntimeWarning, match="differs from the CPU decode"):
        reader, supply, got = _device_pipeline(path, grid, info, swapped_channels)
    expected = OpenSlideReader(path, info, grid).read_tiles(np.arange(len(grid.coords)))
    assert np.abs(expected.astype(int) - got).max() <= 1
    assert "differs from the CPU decode" in supply.decode_path()
    reader.close()


@pytest.mark.parametrize("intra_op_threads", [1, 2])
def test_normalized_batches_equal_normalizing_the_uint8_batches(tmp_path, intra_op_threads):
    path = _write("svs-jpeg", tmp_path / "normalize.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    previous = torch.get_num_threads()
    torch.set_num_threads(intra_op_threads)
    try:
        with TiffTileReader(path, info, grid, TiffReaderOptions(num_threads=2)) as reader:
            plain = [(i, t.clone()) for i, t in reader.iter_batches(batch_size=7)]
            normalized = [
                (i, t.clone()) for i, t in reader.iter_batches(batch_size=7, normalize=(mean, std))
            ]
    finally:
        torch.set_num_threads(previous)
    assert len(plain) == len(normalized) > 1
    for (indices, tiles), (same_indices, floats) in zip(plain, normalized, strict=True):
        np.testing.assert_array_equal(indices, same_indices)
        assert floats.dtype == torch.float32 and floats.shape == tiles.shape
        expected = (tiles.float() / 255 - torch.tensor(mean)) / torch.tensor(std)
        torch.testing.assert_close(floats, expected, atol=1e-5, rtol=0)


def test_spare_buffers_are_reused_across_streams_and_not_after_an_early_stop(tmp_path):
    from histo_encoders.readers.buffers import SPARE_BUFFERS

    path = _write("svs-jpeg", tmp_path / "spare.svs")
    info = _info(path)
    grid = plan_tiles(info, 0.5, 48)
    SPARE_BUFFERS.clear()
    with TiffTileReader(path, info, grid, TiffReaderOptions(num_threads=2)) as reader:
        first = [t.data_ptr() for _, t in reader.iter_batches(batch_size=4)]
        again = [t.data_ptr() for _, t in reader.iter_batches(batch_size=4)]
        assert set(again) <= set(first)  # the same (page-faulted once) batch buffers
        stream = reader.iter_batches(batch_size=4)
        held = next(stream)[1]
        stream.close()  # stopped early: its buffers are not handed to the next stream
        later = [t.data_ptr() for _, t in reader.iter_batches(batch_size=4)]
        assert held.data_ptr() not in later
    SPARE_BUFFERS.clear()
