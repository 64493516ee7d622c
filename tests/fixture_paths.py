"""Where the tests find OpenSlide's own test slides: ../shared/fixtures/openslide beside the checkout
(CI lays shared/ there too). Missing files fail the tests that need them, loudly, rather than skip."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OPENSLIDE_FIXTURES = REPO.parent / "shared" / "fixtures" / "openslide"
