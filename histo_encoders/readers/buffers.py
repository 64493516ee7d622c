"""Memory for the readers' hot loops: buffers kept between streams, scratch arrays that
forked children do not share, and batch buffers on huge pages.

Page faults are a real cost at these rates: a fresh 38 MB float batch takes ~25 ms of them,
and after any fork (a DataLoader starting its workers) every page the parent writes again
faults once more, copy-on-write: ~30k faults and 10-15% of the TIFF reader's throughput per
stream of float batches, measured here.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from typing import Any

import numpy as np

_SPARE_BYTES = 256 * 2**20  # decoded-tile and batch buffers kept for the next stream, at most


class _SpareBuffers:
    """Buffers kept between streams (and slides) of this process, by kind and shape.

    A fresh 38 MB float batch costs ~25 ms of page faults here, a decoded tile ~0.1 ms: as
    much as decoding it. Thread-safe; holds at most ``_SPARE_BYTES``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._bytes = 0
        self._free: dict[Any, list[Any]] = {}
        self._lock = threading.Lock()

    def take(self, key: Any) -> Any | None:
        with self._lock:
            free = self._free.get(key)
            if not free:
                return None
            buffer = free.pop()
            self._bytes -= _nbytes(buffer)
            return buffer

    def give(self, key: Any, buffer: Any) -> None:
        size = _nbytes(buffer)
        with self._lock:
            if self._bytes + size <= self._limit:
                self._free.setdefault(key, []).append(buffer)
                self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._bytes = 0


def _nbytes(buffer: Any) -> int:
    return (
        buffer.nbytes if isinstance(buffer, np.ndarray) else buffer.numel() * buffer.element_size()
    )


SPARE_BUFFERS = _SpareBuffers(_SPARE_BYTES)


# Linux's MADV_WIPEONFORK (Python's mmap module does not name it): a forked child gets zeros
# there instead of sharing the pages, so the parent's next write to them is not a
# copy-on-write page fault (after a DataLoader forked its workers, ~60k faults per stream).
_MADV_WIPEONFORK = getattr(mmap, "MADV_WIPEONFORK", 18)
_SCRATCH_MMAP_BYTES = 2**20


def scratch_array(
    shape: tuple[int, ...],
    dtype: np.dtype | type = np.uint8,
    mmap_from: int = _SCRATCH_MMAP_BYTES,
) -> np.ndarray:
    """An uninitialised array for internal scratch use that forked children do not share.

    Only for buffers never handed to callers: a forked child sees zeros in them. Arrays
    under ``mmap_from`` bytes, and systems without ``madvise``, get a plain ``np.empty``.
    """
    itemsize = np.dtype(dtype).itemsize
    nbytes = int(np.prod(shape)) * itemsize
    if nbytes < mmap_from or not hasattr(mmap.mmap, "madvise"):
        return np.empty(shape, dtype)
    block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # On an older kernel the pages are shared copy-on-write, as np.empty's would be.
    with contextlib.suppress(OSError, ValueError):
        block.madvise(_MADV_WIPEONFORK)
    return np.frombuffer(block, dtype).reshape(shape)


_HUGE_PAGE = 2**21


def batch_array(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised array for batches handed to callers, on transparent huge pages where
    the system offers them (2 MB pages: 512 times fewer faults on first use and after a fork).

    Unlike :func:`scratch_array` a forked child shares it as usual. Small arrays, and systems
    without ``madvise``, get a plain ``np.empty``.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes < _HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, dtype)
    block = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # Only a hint: with huge pages off (or on an older kernel) this is a plain anonymous map.
    with contextlib.suppress(OSError, ValueError):
        block.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(block, dtype).reshape(shape)
