"""The layout's "nevers", as ARCHITECTURE.md states them, checked on the source.

- The library never imports training/; training imports only the public API.
- encoders/ never imports slides/, readers/ or pipeline/; slides/ never imports readers/ or
  pipeline/; readers/ never imports pipeline/; nothing but cli/ imports cli/, and only tools/
  and cli/ import tools/.
- Importing the package loads neither OpenSlide, h5py, huggingface_hub, timm nor numba.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "histo_encoders"
TRAINING = REPO / "training"

# What each part of the package may import from the rest of it ("" is a top-level module).
ALLOWED = {
    "": {""},
    "encoders": {"", "encoders"},
    "slides": {"", "slides"},
    "readers": {"", "slides", "readers"},
    "pipeline": {"", "encoders", "slides", "readers", "pipeline"},
    "tools": {"", "encoders", "slides", "readers", "pipeline", "tools"},
    "cli": {"", "encoders", "slides", "readers", "pipeline", "tools", "cli"},
}
# The public API training may use: the package and its subpackages' own namespaces.
PUBLIC = {
    "histo_encoders",
    "histo_encoders.errors",
    "histo_encoders.env",
    "histo_encoders.atomic",
    "histo_encoders.encoders",
    "histo_encoders.slides",
    "histo_encoders.readers",
    "histo_encoders.pipeline",
}


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (``from X import y`` gives X and X.y)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _part(module: str) -> str | None:
    """The part of the package a module name belongs to ("" for top-level modules)."""
    parts = module.split(".")
    if parts[0] != "histo_encoders":
        return None
    if len(parts) < 2:
        return ""
    sub = parts[1]
    return sub if (PACKAGE / sub).is_dir() else ""


def test_each_part_imports_only_the_parts_below_it() -> None:
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name in ("__init__.py", "__main__.py"):
            continue  # the facade: the public API and the command line's entry point
        own = _part("histo_encoders." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        used = {_part(m) for m in _imports(path)} - {None}
        wrong = sorted(p or "top level" for p in used - ALLOWED[own])
        if wrong:
            offenders[str(path.relative_to(REPO))] = wrong
    assert not offenders


def test_library_never_imports_training() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imports(path) if m.split(".")[0] == "training"
        )
        for path in PACKAGE.rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_training_uses_only_the_public_api() -> None:
    offenders = {}
    for path in TRAINING.rglob("*.py"):
        private = sorted(
            m
            for m in _imports(path)
            if m.startswith("histo_encoders")
            and m not in PUBLIC
            and m.rsplit(".", 1)[0] not in PUBLIC  # `from <public> import name`
        )
        if private:
            offenders[str(path.relative_to(REPO))] = private
    assert not offenders


def test_import_reads_no_hub_client_no_slide_library_and_no_compiler() -> None:
    code = (
        "import sys, histo_encoders; "
        "heavy = ('huggingface_hub', 'openslide', 'h5py', 'timm', 'numba', 'tifffile'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_answers_without_loading_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from histo_encoders.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_every_public_name_resolves() -> None:
    import histo_encoders
    from histo_encoders import encoders, pipeline, readers, slides

    for package in (histo_encoders, encoders, slides, readers, pipeline):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
