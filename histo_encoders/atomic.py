"""Writing files so that a reader never sees half of one: every writer in the package uses this.

A file is written under a temporary name that is unique to its writer (process id and a random
token, in the same folder so the rename cannot cross filesystems), flushed and fsync'd, then
renamed over the final name, and the folder is fsync'd so the rename itself survives a crash.
If anything fails, including an interrupt, the temporary file is removed and nothing under the
final name changes. Two writers of the same file never share a temporary name; the last rename
wins, whole.

What is written follows the process's umask (files 0666, folders 0777, less the umask), like any
file a user creates, whatever mode the library that wrote the temporary file chose: colleagues on
a shared cluster read the outputs when the umask lets them.

Writers that must not both run (a read-modify-write of one record, two processes embedding the
same slide) take a :class:`FileLock` first: an advisory lock (``flock``) the system releases
when its process ends, however it ends, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range locks below
    fcntl = None  # type: ignore[assignment]

PARTIAL_MARK = ".partial"
LOCK_MARK = ".lock"


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """A name beside ``path`` that no other writer uses: ``.<name>.<pid>.<token>.partial``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_MARK}")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a writer's temporary file (never a finished output)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(PARTIAL_MARK)


def remove_leftovers(path: str | os.PathLike[str]) -> int:
    """Remove the temporary files earlier writers of ``path`` left behind when they were killed;
    returns how many. Call it only while holding the lock that serialises ``path``'s writers,
    so no live writer's file is taken."""
    path = Path(path)
    pattern = f".{glob.escape(path.name)}.*{PARTIAL_MARK}"
    removed = 0
    for leftover in path.parent.glob(pattern):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed += 1
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then move the result to ``path`` in one rename.

    ``write`` must create the file it is given. Returns ``path``. Whatever ``write`` raises
    propagates, with the temporary file removed and ``path`` untouched.
    """
    path = Path(path)
    temporary = temporary_name(path)
    try:
        write(temporary)
        fsync_file(temporary)
        follow_umask(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staging_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder beside ``out`` to assemble a folder in; removed unless moved away.

    Use with :func:`swap_in_folder` so a half-built folder is never seen under ``out``.
    """
    out = Path(out)
    staging = temporary_name(out)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_in_folder(staging: Path, out: str | os.PathLike[str]) -> Path:
    """Put the finished ``staging`` folder at ``out``, replacing a folder already there.

    The old folder is renamed aside first and removed only once the new one is in place: ``out``
    is never a half-written folder, it is missing only between the two renames, and if the
    second rename fails the old folder is put back.
    """
    out = Path(out)
    for file in staging.rglob("*"):
        if file.is_file():
            fsync_file(file)
    for entry in (staging, *staging.rglob("*")):
        follow_umask(entry)
    old = temporary_name(out) if out.exists() else None
    if old is not None:
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    fsync_folder(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a new file (0666) or folder (0777) gets under the umask."""
    path = Path(path)
    if path.is_symlink():
        return
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's contents to the disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files) to the disk, where the system allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some systems cannot open folders: the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class FileLock:
    """An exclusive advisory lock on ``path`` (created if missing), between processes.

    ``acquire(blocking=False)`` returns False at once when another process holds it. With
    ``remove=True``, :meth:`release` deletes the lock file while still holding it; a process that
    was waiting then finds it acquired a deleted file and tries again on the new one, so two
    holders never coexist. Raises OSError when the lock file cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str], *, remove: bool = False) -> None:
        self.path = Path(path)
        self.remove = remove
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._descriptor is not None

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock (waiting for it if ``blocking``); True once held."""
        while self._descriptor is None:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _lock_descriptor(descriptor, blocking):
                os.close(descriptor)
                return False
            if self._is_current(descriptor):
                self._descriptor = descriptor
            else:  # removed by the holder we waited for: lock the file that replaced it
                os.close(descriptor)
        return True

    def release(self) -> None:
        """Give the lock up (removing the file first when ``remove``); does nothing if not held."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is None:
            return
        try:
            if self.remove:
                with contextlib.suppress(OSError):  # Windows cannot delete an open file
                    self.path.unlink(missing_ok=True)
        finally:
            _unlock_descriptor(descriptor)
            os.close(descriptor)

    def _is_current(self, descriptor: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(descriptor)
        return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock_descriptor(descriptor: int, blocking: bool) -> bool:
    if fcntl is not None:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(descriptor, flags)
        except BlockingIOError:
            return False
        return True
    import msvcrt

    mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK
    os.lseek(descriptor, 0, os.SEEK_SET)
    while True:
        try:
            msvcrt.locking(descriptor, mode, 1)
            return True
        except OSError:
            if not blocking:
                return False  # LK_LOCK gives up after 10 s: keep waiting, as flock does


def _unlock_descriptor(descriptor: int) -> None:
    if fcntl is not None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return
    import msvcrt

    os.lseek(descriptor, 0, os.SEEK_SET)
    msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
