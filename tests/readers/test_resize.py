"""The resize every reader shares: the compiled shrink gives PIL's BOX pixels exactly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from histo_encoders.readers.resize import pair_runs, resize_tile, shrink_rgbx

# (443, 224): 0.2528 -> 0.5 um/px; others: exact halving, shrinks a little, > 2x (through PIL).
SIZE_PAIRS = [(443, 224), (448, 224), (127, 48), (63, 48), (96, 48), (97, 48), (48, 48), (301, 100)]


def _regions(read_size: int, count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.random.default_rng(read_size).integers(0, 256, (count, read_size, read_size, 3))
    rgb = rgb.astype(np.uint8)
    rgbx = np.full((count, read_size, read_size, 4), 255, np.uint8)
    rgbx[..., :3] = rgb
    return rgb, rgbx


@pytest.mark.parametrize(("read_size", "tile_size"), SIZE_PAIRS)
def test_shrink_rgbx_equals_resize_tile_exactly(read_size, tile_size):
    rgb, rgbx = _regions(read_size)
    expected = np.stack([resize_tile(region, tile_size) for region in rgb])
    out = np.zeros((len(rgb), tile_size, tile_size, 3), np.uint8)
    np.testing.assert_array_equal(shrink_rgbx(rgbx, tile_size, out), expected)


@pytest.mark.parametrize(("read_size", "tile_size"), [(443, 224), (127, 48), (48, 48)])
def test_shrink_rgbx_with_a_table_normalizes_the_same_grey_levels(read_size, tile_size):
    rgb, rgbx = _regions(read_size)
    table = np.stack([np.linspace(-2.0, 2.0, 256), np.arange(256), -np.arange(256)])
    table = table.astype(np.float32)
    out = np.zeros((len(rgb), tile_size, tile_size, 3), np.float32)
    shrink_rgbx(rgbx, tile_size, out, table)
    levels = np.stack([resize_tile(region, tile_size) for region in rgb])
    expected = np.stack([table[c][levels[..., c]] for c in range(3)], axis=-1)
    np.testing.assert_array_equal(out, expected)


def test_pair_runs_cover_shrinks_up_to_two_times_only():
    assert pair_runs(443, 224) is not None
    assert pair_runs(448, 224) is not None
    assert pair_runs(97, 48) is None  # a little over 2x: some output pixels average three


def test_shrink_rgbx_refuses_to_upsample():
    _, rgbx = _regions(40, count=1)
    with pytest.raises(ValueError, match="upsample"):
        shrink_rgbx(rgbx, 48, np.zeros((1, 48, 48, 3), np.uint8))


def test_kernels_work_and_say_so_when_numba_cannot_cache(tmp_path):
    # A read-only install without a home folder: every numba cache locator is unavailable.
    code = (
        "import warnings, numpy as np\n"
        "from numba.core import caching\n"
        "caching.CacheImpl._locator_classes = []  # numba finds no cache folder\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from histo_encoders.readers.resize import resize_tile, shrink_rgbx\n"
        "    rgbx = np.random.default_rng(0).integers(0, 256, (1, 96, 96, 4), np.uint8)\n"
        "    out = shrink_rgbx(rgbx, 48, np.zeros((1, 48, 48, 3), np.uint8))\n"
        "assert np.array_equal(out[0], resize_tile(rgbx[0, ..., :3], 48))\n"
        "print(sum('NUMBA_CACHE_DIR' in str(w.message) for w in caught))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == 1  # one warning, not one per kernel
