"""Formats beyond SVS/TIFF, end to end: a DICOM-WSI series (one slide, not one per file) and a
Hamamatsu NDPI, both written by tests/slide_formats.py and embedded like any slide."""

from __future__ import annotations

import numpy as np
import pytest

from histo_encoders.pipeline.embed import EmbedOptions
from histo_encoders.pipeline.features import read_features
from histo_encoders.pipeline.inputs import collect_slides
from histo_encoders.pipeline.run import embed_slides
from histo_encoders.slides import open_slide
from tests.slide_formats import write_dicom_series, write_ndpi

CPU = EmbedOptions(device="cpu", workers=0, batch_size=16)


@pytest.fixture(scope="module")
def format_slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    write_dicom_series(root / "dicom-slide", mpp=0.5)
    write_ndpi(root / "hamamatsu.ndpi", mpp=0.5)
    return root


def test_dicom_series_and_ndpi_open_with_their_resolution(format_slides):
    for path, vendor in (
        (format_slides / "dicom-slide", "dicom"),
        (format_slides / "hamamatsu.ndpi", "hamamatsu"),
    ):
        with open_slide(path) as slide:
            assert slide.info.vendor == vendor and slide.info.mpp == pytest.approx(0.5)
            assert slide.info.dimensions == (1024, 768) and slide.info.level_count >= 2
            region = slide.read_region((100, 150), 0, (32, 32))
            assert region.shape == (32, 32, 3) and region.mean() < 250  # tissue, not glass


def test_a_folder_with_both_embeds_two_slides(format_slides, tiny_encoder, tmp_path):
    slides = collect_slides([format_slides])
    assert [p.name for p in slides] == ["dicom-slide", "hamamatsu.ndpi"]
    summary = embed_slides(slides, tiny_encoder, tmp_path, CPU, progress=False)
    assert [r.status for r in summary.results] == ["ok", "ok"]
    dicom, coords_a, attrs_a = read_features(tmp_path / "dicom-slide.h5")
    ndpi, coords_b, attrs_b = read_features(tmp_path / "hamamatsu.h5")
    assert attrs_a["slide_vendor"] == "dicom" and attrs_b["slide_vendor"] == "hamamatsu"
    # The same synthetic tissue in both: the same grid.
    np.testing.assert_array_equal(coords_a, coords_b)
    assert len(dicom) == len(ndpi) > 0
