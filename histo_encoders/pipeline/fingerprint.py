"""A slide file's identity by content, cheap enough to take on every run.

Name and size are not enough to trust a finished feature file: a slide edited in place (say its
resolution corrected in the description) keeps both. Hashing the whole file would cost as much
as reading it. What changes the features of a whole-slide image is what its metadata and index
say (resolution, level geometry, where each tile lies and how long it is): for TIFF-based
formats (SVS, generic TIFF, NDPI, SCN, BIF...) every IFD and every out-of-line tag value is
hashed, which covers the descriptions, resolution tags and tile offsets and byte counts; for
any file, its first and last 64 KiB are hashed too (other formats keep their headers and
indexes there), and a file under 16 MiB is hashed whole. A 2 GB slide costs a few milliseconds
of reading (``tests/faults/test_stale_resume.py`` measures it).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

_EDGE = 1 << 16  # bytes hashed at each end of every file
_WHOLE_FILE_BELOW = 1 << 24  # files smaller than this are hashed whole
_MAX_INDEX_BYTES = 1 << 28  # never read more than this much TIFF index
_MAX_IFDS = 4096
_TIFF_TYPE_SIZES = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
    16: 8, 17: 8, 18: 8,
}  # fmt: skip


def content_digest(
    path: str | os.PathLike[str], *, whole_file_below: int = _WHOLE_FILE_BELOW
) -> str:
    """sha256 (hex) of a slide's metadata and index bytes, as described in the module docstring.

    Raises OSError when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest.update(b"size:%d;" % size)
        if size < max(whole_file_below, 2 * _EDGE):
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            return digest.hexdigest()
        head = handle.read(_EDGE)
        digest.update(head)
        handle.seek(size - _EDGE)
        digest.update(handle.read(_EDGE))
        if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            digest.update(b"tiff-index;")
            _hash_tiff_index(handle, head, size, digest)
    return digest.hexdigest()


def _hash_tiff_index(handle, head: bytes, size: int, digest) -> None:
    """Feed every IFD of the main chain and its out-of-line values to ``digest``.

    A damaged index is hashed as far as it can be read (and marked so), never an error: the
    slide is then refused by the reader, with its own message.
    """
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\0", b"\0+")
    entry_size, count_format, offset_format = (20, "Q", "Q") if big else (12, "H", "I")
    inline = 8 if big else 4
    offset = struct.unpack_from(order + offset_format, head, 8 if big else 4)[0]
    seen: set[int] = set()
    budget = _MAX_INDEX_BYTES
    count_size = struct.calcsize(count_format)
    for _ in range(_MAX_IFDS):
        if offset == 0 or offset in seen or offset + count_size > size:
            break
        seen.add(offset)
        handle.seek(offset)
        raw_count = handle.read(count_size)
        (count,) = struct.unpack(order + count_format, raw_count)
        table_size = count * entry_size + struct.calcsize(offset_format)
        if offset + count_size + table_size > size or table_size > budget:
            digest.update(b"damaged-ifd;")
            break
        table = handle.read(table_size)
        budget -= table_size
        digest.update(raw_count + table)
        for index in range(count):
            entry = table[index * entry_size : (index + 1) * entry_size]
            budget -= _hash_value(handle, entry, order, big, inline, size, budget, digest)
        (offset,) = struct.unpack_from(order + offset_format, table, count * entry_size)


def _hash_value(
    handle, entry: bytes, order: str, big: bool, inline: int, size: int, budget: int, digest
) -> int:
    """Hash one tag's out-of-line value; returns the bytes read."""
    if big:
        _, kind, count, where = struct.unpack(order + "HHQQ", entry)
    else:
        _, kind, count, where = struct.unpack(order + "HHII", entry)
    length = _TIFF_TYPE_SIZES.get(kind, 1) * count
    if length <= inline:
        return 0  # the value sits in the entry, already hashed
    if where + length > size or length > budget:
        digest.update(b"value-out-of-file;")
        return 0
    handle.seek(where)
    digest.update(handle.read(length))
    return length


def file_identity(path: str | os.PathLike[str]) -> tuple[str, int, int, str]:
    """(resolved path, size, modification time in ns, content digest) of a slide file."""
    path = Path(path)
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, content_digest(path)
