"""Where the tests find OpenSlide's own test slides: vendored in tests/data/openslide with their
licence notice (LGPL-2.1, from openslide-python's test suite). Missing files fail the tests that
need them, loudly, rather than skip."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPENSLIDE_FIXTURES = REPO / "tests" / "data" / "openslide"
