"""Which slides a run embeds: files and folders from the command line, and per-slide resolutions.

A folder is searched recursively for the files OpenSlide (or PIL) can open, by extension. The
search skips what is not a slide of its own: the output folder and our own outputs in it
(``*.h5``, ``*.preview.png``, ``pt_files/``, summaries), hidden and temporary files, the JPEG
companions of a Hamamatsu ``.vms``, and formats OpenSlide cannot read (Zeiss ``.czi``). A
DICOM-WSI series is a folder of ``.dcm`` files, one per level or associated image: the folder is
one slide, named after the folder.

``--slide-mpp`` takes one number for every slide, or a CSV giving each slide its own: a slide
column (``slide``, TRIDENT's ``wsi``, slide2vec's ``image_path`` or ``sample_id``...) and an
mpp column (``mpp``, or slide2vec's ``spacing_at_level_0``), matched by path, file name or stem.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

# What OpenSlide 4 opens (https://openslide.org/formats/), and plain images through PIL.
OPENSLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif"}
)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg"})
DICOM_EXTENSION = ".dcm"
SLIDE_EXTENSIONS = OPENSLIDE_EXTENSIONS | IMAGE_EXTENSIONS | {DICOM_EXTENSION}
# Found by a search but not opened: OpenSlide cannot read them (convert them to OME-TIFF first).
UNREADABLE_EXTENSIONS = frozenset({".czi"})
# What `embed` writes beside the features: never taken for a slide on a rerun.
OUTPUT_SUFFIXES = (".preview.png",)
SLIDE_COLUMNS = ("slide", "wsi", "image_path", "path", "slide_path", "sample_id", "slide_id")
MPP_COLUMNS = ("mpp", "slide_mpp", "spacing_at_level_0", "spacing")


def collect_slides(
    inputs: Iterable[str | Path], *, exclude: Iterable[str | Path] = ()
) -> list[Path]:
    """Expand files and folders into a sorted list of slides (see the module docstring).

    Folders in ``exclude`` (the output folder) are not searched. A file given by name is always
    kept; a folder holding ``.dcm`` files is one DICOM slide.

    Raises FileNotFoundError for an input that does not exist, ValueError when two slides would
    write the same output name (same stem in different folders).
    """
    skipped = {_key(Path(p)) for p in exclude}
    slides: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            slides.update(_search(path, skipped))
        elif path.exists():
            slides.add(path)
        else:
            raise FileNotFoundError(f"No such slide file or folder: {path}")
    ordered = sorted(slides, key=str)
    check_unique_stems(ordered)
    return ordered


def slide_stem(slide: str | Path) -> str:
    """The name a slide's outputs take: the file stem, or the folder name of a DICOM series."""
    path = Path(slide)
    return path.name if path.is_dir() else path.stem


def check_unique_stems(slides: Sequence[Path]) -> None:
    """Raise ValueError when two slides would write the same ``<stem>.h5``."""
    seen: dict[str, Path] = {}
    for slide in slides:
        stem = slide_stem(slide)
        if stem in seen:
            raise ValueError(
                f"{seen[stem]} and {slide} would both write {stem}.h5: embed them "
                "into different --out folders, or rename one."
            )
        seen[stem] = slide


def is_dicom_series(folder: Path) -> bool:
    """True for a folder that holds ``.dcm`` files (a DICOM-WSI series, opened as one slide)."""
    return folder.is_dir() and any(
        entry.suffix.lower() == DICOM_EXTENSION for entry in folder.iterdir() if entry.is_file()
    )


def _search(root: Path, skipped: set[str]) -> set[Path]:
    found: set[Path] = set()
    if is_dicom_series(root):
        return {root}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        # Pruned in place, so os.walk never descends into them.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _key(here / d) not in skipped)
        if _key(here) in skipped:
            continue
        names = [f for f in files if not f.startswith(".")]
        if any(n.lower().endswith(DICOM_EXTENSION) for n in names) and here != root:
            found.add(here)
            dirs[:] = []
            continue
        found.update(here / n for n in _slide_files(names))
    return found


def _slide_files(names: Sequence[str]) -> list[str]:
    lowered = {name: name.lower() for name in names}
    vms = any(low.endswith(".vms") for low in lowered.values())
    keep = []
    for name, low in lowered.items():
        suffix = os.path.splitext(low)[1]
        if suffix not in SLIDE_EXTENSIONS or suffix == DICOM_EXTENSION:
            continue
        if low.endswith(OUTPUT_SUFFIXES):
            continue
        if vms and suffix in IMAGE_EXTENSIONS:  # a .vms slide's own JPEG pieces
            continue
        keep.append(name)
    return keep


def _key(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def read_slide_mpps(path: str | Path) -> dict[str, float]:
    """Per-slide level-0 resolutions from a CSV (see the module docstring): slide -> um/px.

    Rows with an empty mpp are left out (the slide keeps its own). Raises ValueError for a CSV
    without the columns, or with a value that is not a positive number.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or ()]
        slide_col = next((c for c in SLIDE_COLUMNS if c in columns), None)
        mpp_col = next((c for c in MPP_COLUMNS if c in columns), None)
        if slide_col is None or mpp_col is None:
            raise ValueError(
                f"{path} needs a slide column ({', '.join(SLIDE_COLUMNS)}) and an mpp column "
                f"({', '.join(MPP_COLUMNS)}); its header is {columns}. Example:\n"
                "slide,mpp\nslide-1.svs,0.2528"
            )
        table: dict[str, float] = {}
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row.get(mpp_col):
                continue
            table[row[slide_col]] = _positive(path, row[slide_col], row[mpp_col])
    return table


def _positive(path: Path, slide: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{path}: mpp {text!r} of {slide!r} is not a positive number of um/px")
    return value


def mpp_for(slide: str | Path, table: Mapping[str, float]) -> float | None:
    """The CSV's mpp for ``slide``, matched by full path, file name or stem (None: not listed)."""
    path = Path(slide)
    candidates = (str(path), _key(path), path.name, path.stem)
    for key, value in table.items():
        listed = Path(key)
        if key in candidates or listed.name == path.name or _key(listed) == _key(path):
            return value
    stem = slide_stem(path)
    for key, value in table.items():
        if Path(key).stem == stem or key == stem:
            return value
    return None
