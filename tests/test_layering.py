"""The library never depends on training/, and importing it stays cheap and offline."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "histo_encoders"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_library_never_imports_training() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] == "training"
        )
        for path in PACKAGE.rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_import_reads_no_hub_client_no_slide_library_and_no_compiler() -> None:
    code = (
        "import sys, histo_encoders; "
        "heavy = ('huggingface_hub', 'openslide', 'h5py', 'timm', 'numba'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves() -> None:
    import histo_encoders

    for name in histo_encoders.__all__:
        assert getattr(histo_encoders, name) is not None, name
