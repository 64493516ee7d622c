"""Class 3: a finished feature file is reused only if nothing that changes its features changed:
the normalization (mean/std with the same weights), the rest of the settings, and the slide
itself by content (a same-size edit in place, even with its modification time put back)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from histo_encoders.pipeline.features import read_features
from histo_encoders.pipeline.fingerprint import content_digest
from tests.faults.conftest import embed_args, run_cli, summary_rows


def _statuses(out: Path) -> dict[str, str]:
    return {name: row["status"] for name, row in summary_rows(out).items()}


def test_changed_mean_and_std_with_the_same_weights_is_embedded_again(
    slide_copies, tiny_encoder_dir, tmp_path, capsys
) -> None:
    slides = slide_copies(**{"a.svs": "svs"})
    renormalized = Path(shutil.copytree(tiny_encoder_dir, tmp_path / "renormalized"))
    document = json.loads((renormalized / "config.json").read_text())
    document["pretrained_cfg"]["mean"] = [0.5, 0.5, 0.5]
    document["pretrained_cfg"]["std"] = [0.25, 0.25, 0.25]
    (renormalized / "config.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    assert (
        run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(tiny_encoder_dir, out)).code == 0
    )
    first = read_features(out / "a.h5")
    again = run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(tiny_encoder_dir, out))
    assert again.code == 0 and _statuses(out) == {"a.svs": "skipped"}

    ran = run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(renormalized, out))
    assert ran.code == 0 and _statuses(out) == {"a.svs": "ok"}  # not "skipped"
    features, _, attrs = read_features(out / "a.h5")
    assert attrs["mean"] == [0.5, 0.5, 0.5] and attrs["run_settings"]["std"] == [0.25] * 3
    assert attrs["weights_sha256"] == first[2]["weights_sha256"]  # same weights...
    assert not (features == first[0]).all()  # ...other features


def _edit_mpp_in_place(path: Path, old: bytes, new: bytes) -> None:
    """Change the Aperio description's MPP without changing the file's size or mtime."""
    assert len(old) == len(new)
    stat = path.stat()
    data = path.read_bytes()
    assert data.count(old) >= 1  # every level's description
    path.write_bytes(data.replace(old, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_a_slide_edited_in_place_to_another_mpp_is_embedded_again(
    slide_copies, tiny_encoder_dir, tmp_path, capsys
) -> None:
    slides = slide_copies(**{"a.svs": "svs"})
    out = tmp_path / "out"
    assert (
        run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(tiny_encoder_dir, out)).code == 0
    )
    assert read_features(out / "a.h5")[2]["slide_mpp"] == 0.5
    _edit_mpp_in_place(slides["a.svs"], b"MPP = 0.5", b"MPP = 0.4")
    ran = run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(tiny_encoder_dir, out))
    assert ran.code == 0 and _statuses(out) == {"a.svs": "ok"}
    assert read_features(out / "a.h5")[2]["slide_mpp"] == pytest.approx(0.4)


def test_the_index_hash_of_a_large_slide_sees_a_same_size_metadata_edit(slide_copies) -> None:
    # Slides over 16 MiB are not hashed whole: force that path on a small one.
    path = slide_copies(**{"a.svs": "svs"})["a.svs"]
    before = content_digest(path, whole_file_below=0)
    _edit_mpp_in_place(path, b"MPP = 0.5", b"MPP = 0.4")
    assert content_digest(path, whole_file_below=0) != before


def test_a_moved_slide_folder_is_still_resumed(slide_copies, tiny_encoder_dir, tmp_path, capsys):
    slides = slide_copies(**{"a.svs": "svs"})
    out = tmp_path / "out"
    assert (
        run_cli(capsys, "embed", str(slides["a.svs"]), *embed_args(tiny_encoder_dir, out)).code == 0
    )
    moved = tmp_path / "moved"
    shutil.move(slides["a.svs"].parent, moved)  # a rename keeps size, mtime and content
    ran = run_cli(capsys, "embed", str(moved / "a.svs"), *embed_args(tiny_encoder_dir, out))
    assert ran.code == 0 and _statuses(out) == {"a.svs": "skipped"}


# --- the cost of fingerprinting ---------------------------------------------------------------


def write_sparse_slide(path: Path, size: int = 2 * 10**9, tile: int = 256) -> int:
    """A classic TIFF of ``size`` bytes (sparse) shaped like a scanner's SVS of that size: a
    level-0 index of one tile per 13 KB of file (~150,000 tiles for 2 GB, as a 20x scan at JPEG
    quality 70-80 has), three reduced levels and an Aperio description. Returns the tile count."""
    tiles0 = size // 13_000
    across = int(tiles0**0.5 * 1.3)
    levels = []
    count = tiles0
    for _ in range(4):
        down = -(-count // across)
        levels.append((across * tile, down * tile, across, down))
        across, count = max(1, across // 4), max(1, count // 16)
    header = bytearray(b"II*\0" + struct.pack("<I", 8))
    blob = bytearray()
    data_start = 1 << 20
    next_ifd = len(header)
    description = b"Aperio Image Library v12.0.0 |AppMag = 20|MPP = 0.4990\0"
    for number, (width, height, across, down) in enumerate(levels):
        n = across * down
        offsets = [data_start + i * ((size - data_start) // (n + 1)) for i in range(n)]
        counts = [12_000] * n
        values_at = next_ifd + 2 + 12 * 9 + 4
        off_at, cnt_at = values_at, values_at + 4 * n
        desc_at = cnt_at + 4 * n
        entries = [
            (256, 4, 1, width), (257, 4, 1, height), (259, 3, 1, 7), (262, 3, 1, 6),
            (270, 2, len(description), desc_at), (322, 3, 1, tile), (323, 3, 1, tile),
            (324, 4, n, off_at), (325, 4, n, cnt_at),
        ]  # fmt: skip
        ifd = struct.pack("<H", len(entries))
        for tag, kind, number_of, value in entries:
            ifd += struct.pack("<HHII", tag, kind, number_of, value)
        following = desc_at + len(description)
        ifd += struct.pack("<I", following if number < len(levels) - 1 else 0)
        blob += ifd + struct.pack(f"<{n}I", *offsets) + struct.pack(f"<{n}I", *counts)
        blob += description
        next_ifd = following
    with open(path, "wb") as handle:
        handle.write(header + blob)
        handle.truncate(size)
    return tiles0


def test_fingerprinting_a_2_gb_slide_takes_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "large.svs"
    tiles = write_sparse_slide(path)
    content_digest(path)  # warm the page cache, as embedding the slide would
    started = time.perf_counter()
    for _ in range(5):
        digest = content_digest(path)
    seconds = (time.perf_counter() - started) / 5
    # Embedding 150,000 stored tiles is minutes even on a GPU; 1% of one minute is 0.6 s.
    assert seconds < 0.6, f"{seconds * 1e3:.0f} ms for {tiles} tiles"
    assert len(digest) == 64
