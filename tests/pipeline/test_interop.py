"""Our feature files as CLAM and TRIDENT read them, and theirs as we read them.

The readers here re-implement each tool's *access pattern* (which attributes it looks up, with
which types, and which region it then asks OpenSlide for), written from reading CLAM's
``Whole_Slide_Bag_FP`` / ``extract_features_fp.py`` and TRIDENT's ``read_coords`` /
``WSIPatcher`` / slide-encoder inputs; no code of theirs is copied.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import openslide
import pytest
import torch

from histo_encoders.errors import FeatureFileError
from histo_encoders.pipeline import BagDataset, FeatureFolder, ForeignFeaturesWarning
from histo_encoders.pipeline.embed import EmbedOptions
from histo_encoders.pipeline.features import read_features
from histo_encoders.pipeline.run import embed_slides
from histo_encoders.tools.synthetic import write_synthetic_slide

CPU = EmbedOptions(device="cpu", workers=0, batch_size=8)


@pytest.fixture(scope="module")
def odd_slide(tmp_path_factory):
    """0.2528 um/px: the level-0 tile side is not a whole number of pixels (253.16 here)."""
    folder = tmp_path_factory.mktemp("odd")
    return write_synthetic_slide(folder / "odd.svs", width=1024, height=768, mpp=0.2528).path


def _clam_regions(h5_path, slide_path, n=3):
    """CLAM's Whole_Slide_Bag_FP: patch_level and patch_size from the coords attrs, then
    read_region(coord, patch_level, (patch_size, patch_size)) for each coord."""
    wsi = openslide.OpenSlide(str(slide_path))
    with h5py.File(h5_path, "r") as h5:
        patch_level = h5["coords"].attrs["patch_level"]
        patch_size = h5["coords"].attrs["patch_size"]
        coords = h5["coords"][:n]
    regions = [
        wsi.read_region(c, patch_level, (patch_size, patch_size)).convert("RGB") for c in coords
    ]
    downsample = wsi.level_downsamples[patch_level]
    wsi.close()
    return regions, patch_size * downsample


def _trident_square(h5_path, slide_path):
    """TRIDENT's coords reader: the magnification pair scales patch_size to a level-0 side
    (round(patch_size * dst_pixel / src_pixel), dst/src = 10 / magnification); it then reads that
    square from the level whose downsample is within 0.1 of the ratio."""
    with h5py.File(h5_path, "r") as h5:
        attrs = dict(h5["coords"].attrs)
        coords = h5["coords"][:]
    patch_size = attrs.get("patch_size")
    src_mag = attrs.get("level0_magnification")
    dst_mag = attrs.get("target_magnification")
    assert None not in (patch_size, src_mag, dst_mag), "TRIDENT would fall back to CLAM's layout"
    downsample = (10 / dst_mag) / (10 / src_mag)
    side_level0 = round(patch_size * downsample)
    wsi = openslide.OpenSlide(str(slide_path))
    levels = [i for i, d in enumerate(wsi.level_downsamples) if abs(d - downsample) <= 0.1]
    level = levels[0] if levels else 0
    side_level = round(side_level0 / int(wsi.level_downsamples[level]))
    x, y = coords[0]
    tile = wsi.read_region((x, y), level, (side_level, side_level))
    # ... and its overlays read the level-0 square with patch_size_level0.
    overlay = wsi.read_region((x, y), 0, (attrs["patch_size_level0"],) * 2)
    wsi.close()
    return attrs, side_level0, tile, overlay


@pytest.mark.parametrize("which", ["tiff", "odd"])
def test_clam_and_trident_read_the_regions_we_embedded(
    which, synthetic_slides, odd_slide, tiny_encoder, tmp_path
):
    slide = synthetic_slides.tiff if which == "tiff" else odd_slide
    embed_slides([slide], tiny_encoder, tmp_path, CPU, progress=False)
    h5_path = tmp_path / f"{slide.stem}.h5"
    features, coords, attrs = read_features(h5_path)
    assert len(features) > 0

    regions, side_clam = _clam_regions(h5_path, slide)
    assert {r.size for r in regions} == {(attrs["read_size"],) * 2}
    # CLAM reads exactly the square we read: our level and our region size there.
    assert side_clam == pytest.approx(attrs["tile_size_level0"], abs=attrs["level_downsample"])
    from histo_encoders.slides import open_slide

    with open_slide(slide) as ours:
        mine = ours.read_region(tuple(coords[0]), attrs["level"], (attrs["read_size"],) * 2)
    np.testing.assert_array_equal(np.asarray(regions[0]), mine)

    trident_attrs, side_trident, tile, overlay = _trident_square(h5_path, slide)
    assert side_trident == trident_attrs["patch_size_level0"] == round(attrs["tile_size_level0"])
    assert tile.size == (attrs["read_size"],) * 2 and overlay.size[0] == side_trident
    assert isinstance(trident_attrs["patch_size_level0"], np.integer)
    assert trident_attrs["level0_magnification"] == pytest.approx(10 / attrs["slide_mpp"])
    # Our exact values stay beside theirs.
    assert trident_attrs["tile_size_level0"] == attrs["tile_size_level0"]
    assert trident_attrs["tile_size"] == 32 and trident_attrs["name"] == slide.stem
    if which == "odd":
        assert attrs["tile_size_level0"] != round(attrs["tile_size_level0"])


def test_pt_files_beside_the_h5_files_as_clam_trains_on_them(
    synthetic_slides, tiny_encoder, tmp_path
):
    embed_slides([synthetic_slides.svs], tiny_encoder, tmp_path, CPU, progress=False, pt_files=True)
    tensor = torch.load(tmp_path / "pt_files" / "alpha.pt", weights_only=True)
    features, _, _ = read_features(tmp_path / "alpha.h5")
    assert tensor.dtype == torch.float32 and tensor.shape == features.shape
    np.testing.assert_array_equal(tensor.numpy(), features)
    # A rerun that resumes writes the .pt files that are missing.
    (tmp_path / "pt_files" / "alpha.pt").unlink()
    summary = embed_slides(
        [synthetic_slides.svs], tiny_encoder, tmp_path, CPU, progress=False, pt_files=True
    )
    assert summary.results[0].status == "skipped"
    assert (tmp_path / "pt_files" / "alpha.pt").is_file()


def _clam_feature_folder(root, n=3, dim=6):
    """What CLAM's extract_features_fp.py leaves: h5_files/<id>.h5 (features float32, coords
    int32, no attributes) and pt_files/<id>.pt (the tensor)."""
    rng = np.random.default_rng(0)
    (root / "h5_files").mkdir(parents=True)
    (root / "pt_files").mkdir()
    for i in range(n):
        features = rng.normal(size=(5 + i, dim)).astype(np.float32)
        with h5py.File(root / "h5_files" / f"s{i}.h5", "w") as h5:
            h5.create_dataset("features", data=features, maxshape=(None, dim))
            h5.create_dataset(
                "coords", data=np.arange(2 * len(features), dtype=np.int32).reshape(-1, 2)
            )
        torch.save(torch.from_numpy(features), root / "pt_files" / f"s{i}.pt")
    return root


def _trident_feature_folder(root, dim=6):
    """TRIDENT's features_<encoder>/<id>.h5: features and coords, coords attrs from its
    patcher; an empty slide is written as a (0,) features array."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    with h5py.File(root / "t0.h5", "w") as h5:
        h5.create_dataset("features", data=rng.normal(size=(7, dim)).astype(np.float32))
        coords = h5.create_dataset("coords", data=np.zeros((7, 2), np.int64))
        coords.attrs.update({"patch_size": 256, "patch_size_level0": 512, "name": "t0"})
        coords.attrs.update({"level0_magnification": 40, "target_magnification": 20})
        h5["features"].attrs["encoder"] = "uni_v1"
    with h5py.File(root / "empty.h5", "w") as h5:
        h5.create_dataset("features", data=np.empty((0,), np.float32))
        h5.create_dataset("coords", data=np.zeros((0, 2), np.int64))
    return root


def test_foreign_feature_folders_read_lazily_and_warn_once(tmp_path):
    clam = FeatureFolder(_clam_feature_folder(tmp_path / "clam"))
    assert list(clam) == ["s0", "s1", "s2"] and clam["s0"].suffix == ".h5"
    assert clam.n_tiles("s2") == 7
    with pytest.warns(ForeignFeaturesWarning, match="completeness cannot be checked") as caught:
        rows = clam.read("s2", slice(2, 4))
        every = list(clam.slides())
    assert len(caught) == 1  # once per folder, not once per file
    assert rows.features.shape == (2, 6) and rows.coords.tolist() == [[4, 5], [6, 7]]
    assert [s.n_tiles for s in every] == [5, 6, 7] and every[0].coords.dtype == np.int64

    pt_only = FeatureFolder(tmp_path / "clam" / "pt_files")
    with pytest.warns(ForeignFeaturesWarning):
        assert pt_only.read("s1").coords is None and pt_only.read("s1").n_tiles == 6

    trident = FeatureFolder(_trident_feature_folder(tmp_path / "trident"))
    with pytest.warns(ForeignFeaturesWarning):
        t0 = trident.read("t0")
        assert trident.read("empty").n_tiles == 0
    assert t0.coords_attrs["patch_size_level0"] == 512

    dataset = BagDataset(trident, ["t0"], labels={"t0": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForeignFeaturesWarning)
        batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=1)))
    assert batch["features"].shape == (1, 7, 6) and batch["label"].tolist() == [1]


def test_only_broken_files_are_refused(tmp_path, synthetic_slides, tiny_encoder):
    folder = tmp_path / "f"
    folder.mkdir()
    with h5py.File(folder / "nofeatures.h5", "w") as h5:
        h5.create_dataset("coords", data=np.zeros((3, 2)))  # a CLAM patches file
    with h5py.File(folder / "mismatch.h5", "w") as h5:
        h5.create_dataset("features", data=np.zeros((3, 4), np.float32))
        h5.create_dataset("coords", data=np.zeros((2, 2)))
    with h5py.File(folder / "nan.h5", "w") as h5:
        h5.create_dataset("features", data=np.full((3, 4), np.nan, np.float32))
    with h5py.File(folder / "slide_level.h5", "w") as h5:
        h5.create_dataset("features", data=np.zeros(768, np.float32))
    (folder / "truncated.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    embed_slides([synthetic_slides.svs], tiny_encoder, tmp_path / "ours", CPU, progress=False)
    ours = (tmp_path / "ours" / "alpha.h5").read_bytes()
    with h5py.File(folder / "unfinished.h5", "w") as h5:  # our writer, killed before `complete`
        h5.create_dataset("features", data=np.zeros((3, 4), np.float32))
        h5.attrs["settings_fingerprint"] = "abc"
    (folder / "alpha.h5").write_bytes(ours)
    features = FeatureFolder(folder)
    expected = {
        "nofeatures": "no `features`",
        "mismatch": "inconsistent",
        "nan": "NaN",
        "slide_level": "slide-level",
        "truncated": "truncated",
        "unfinished": "not completely written",
    }
    for slide_id, message in expected.items():
        with pytest.raises(FeatureFileError, match=message):
            features.read(slide_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our own complete file: no warning
        assert features.read("alpha").n_tiles > 0
