"""Feature files: what is written is read back, and only finished files with the same settings
are trusted by resume."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from histo_encoders.errors import FeatureFileError
from histo_encoders.pipeline import features as features_io
from histo_encoders.pipeline.features import is_complete, read_features, write_features
from histo_encoders.pipeline.provenance import fingerprint_of


def _arrays(n: int = 5, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    coords = np.arange(2 * n, dtype=np.int64).reshape(n, 2) * 224
    return features, coords


def _attrs(fingerprint: str = "abc") -> dict:
    return {
        "settings_fingerprint": fingerprint,
        "encoder": "tiny",
        "revision": None,
        "target_mpp": 0.5,
        "patch_size": 224,
        "patch_size_level0": 448.0,
        "tissue_settings": {"method": "otsu", "threshold": None},
        "mean": [0.1, 0.2, 0.3],
    }


def test_roundtrip_keeps_arrays_attrs_and_clam_names(tmp_path):
    features, coords = _arrays()
    path = write_features(tmp_path / "s.h5", features, coords, _attrs())

    got_features, got_coords, attrs = read_features(path)

    np.testing.assert_array_equal(got_features, features)
    np.testing.assert_array_equal(got_coords, coords)
    assert got_features.dtype == np.float32 and got_coords.dtype == np.int64
    assert attrs["complete"] is True
    assert attrs["revision"] is None
    assert attrs["tissue_settings"] == {"method": "otsu", "threshold": None}
    assert attrs["mean"] == [0.1, 0.2, 0.3]
    assert attrs["target_mpp"] == 0.5 and attrs["encoder"] == "tiny"
    # Plain h5py users (CLAM/TRIDENT-style readers) find the datasets and patch sizes directly.
    with h5py.File(path, "r") as h5:
        assert h5["features"].shape == (5, 8) and h5["coords"].shape == (5, 2)
        assert h5["coords"].attrs["patch_size"] == 224
        assert h5["coords"].attrs["patch_size_level0"] == 448.0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_empty_slide_file_roundtrips(tmp_path):
    path = write_features(
        tmp_path / "e.h5", np.zeros((0, 8), np.float32), np.zeros((0, 2), np.int64), _attrs()
    )
    features, coords, _ = read_features(path)
    assert features.shape == (0, 8) and coords.shape == (0, 2)
    assert is_complete(path, "abc")


def test_is_complete_requires_same_fingerprint(tmp_path):
    path = write_features(tmp_path / "s.h5", *_arrays(), _attrs("settings-1"))
    assert is_complete(path, "settings-1")
    assert not is_complete(path, "settings-2")
    assert not is_complete(tmp_path / "missing.h5", "settings-1")


def test_interrupted_write_leaves_nothing_that_counts(tmp_path, monkeypatch):
    target = tmp_path / "s.h5"

    def die_mid_write(path, features, coords, attrs):
        with h5py.File(path, "w") as h5:
            h5.create_dataset("features", data=features)
        raise KeyboardInterrupt  # as if the run were stopped here

    monkeypatch.setattr(features_io, "_write_h5", die_mid_write)
    with pytest.raises(KeyboardInterrupt):
        write_features(target, *_arrays(), _attrs())

    assert not target.exists()
    assert not list(tmp_path.iterdir())  # the temporary file is gone too
    assert not is_complete(target, "abc")


def test_files_without_complete_flag_or_truncated_are_not_trusted(tmp_path):
    features, coords = _arrays()
    unfinished = tmp_path / "unfinished.h5"
    with h5py.File(unfinished, "w") as h5:  # e.g. a killed writer that wrote in place
        h5.create_dataset("features", data=features)
        h5.create_dataset("coords", data=coords)
        h5.attrs["settings_fingerprint"] = "abc"
    truncated = tmp_path / "truncated.h5"
    good = write_features(tmp_path / "good.h5", features, coords, _attrs())
    truncated.write_bytes(good.read_bytes()[:500])

    assert not is_complete(unfinished, "abc")
    assert not is_complete(truncated, "abc")
    with pytest.raises(FeatureFileError, match="not completely written"):
        read_features(unfinished)
    with pytest.raises(FeatureFileError, match="embed the slide again"):
        read_features(truncated)


def test_refuses_nan_features_and_bad_shapes(tmp_path):
    features, coords = _arrays()
    features[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_features(tmp_path / "nan.h5", features, coords, _attrs())
    with pytest.raises(ValueError, match="coords"):
        write_features(tmp_path / "bad.h5", _arrays()[0], coords[:3], _attrs())
    assert list(tmp_path.iterdir()) == []


def test_missing_file_error_says_what_to_do(tmp_path):
    with pytest.raises(FeatureFileError, match="histo-encoders embed"):
        read_features(tmp_path / "nope.h5")


def test_fingerprint_ignores_key_order_but_not_values():
    assert fingerprint_of({"a": 1, "b": 2}) == fingerprint_of({"b": 2, "a": 1})
    assert fingerprint_of({"a": 1}) != fingerprint_of({"a": 2})
