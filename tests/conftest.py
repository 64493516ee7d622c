"""Fixtures shared by the embedding tests: a tiny encoder folder, small synthetic slides and
OpenSlide's own test files. Everything is small: tiles of 32 px, slides of ~1k px."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixture_paths import OPENSLIDE_FIXTURES


@dataclass(frozen=True)
class SyntheticSet:
    """Two slides with planted tissue (SVS at 0.5 um/px, TIFF at 0.25 um/px) and a blank one."""

    svs: Path
    tiff: Path
    blank: Path


@pytest.fixture(scope="session")
def openslide_fixtures() -> Path:
    """Folder holding small.svs, unreadable.svs, unopenable.tiff and boxes.tiff."""
    assert (OPENSLIDE_FIXTURES / "small.svs").is_file(), f"missing {OPENSLIDE_FIXTURES}"
    return OPENSLIDE_FIXTURES


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encoder folder (timm test_resnet, seeded weights) cutting 32 px tiles at 2 um/px."""
    from tests.encoder_kit import TINY, export_tiny

    config = TINY.with_updates(name="tiny-embed", mpp=2.0)
    return export_tiny(tmp_path_factory.mktemp("encoders") / "tiny-embed", config=config)


@pytest.fixture
def tiny_encoder(tiny_encoder_dir: Path):
    """The tiny encoder loaded through histo_encoders.load (eval mode, CPU)."""
    from histo_encoders.encoders.load import load

    return load(tiny_encoder_dir)


@pytest.fixture(scope="session")
def synthetic_slides(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSet:
    """Slides written once per session; tests copy them if they need to change them."""
    from histo_encoders.tools.synthetic import write_synthetic_slide

    folder = tmp_path_factory.mktemp("slides")
    svs = write_synthetic_slide(folder / "alpha.svs", width=1024, height=768, mpp=0.5)
    tiff = write_synthetic_slide(
        folder / "beta.tiff", width=1024, height=1024, mpp=0.25, kind="tiff", seed=1
    )
    blank = write_synthetic_slide(
        folder / "blank.svs", width=512, height=512, mpp=0.5, tissue_boxes=()
    )
    return SyntheticSet(svs.path, tiff.path, blank.path)
