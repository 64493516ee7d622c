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
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

PARTIAL_MARK = ".partial"


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """A name beside ``path`` that no other writer uses: ``.<name>.<pid>.<token>.partial``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_MARK}")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a writer's temporary file (never a finished output)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(PARTIAL_MARK)


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

    The old folder is renamed aside first and removed only once the new one is in place, so at
    every moment ``out`` is either the old folder or the new one, whole.
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
