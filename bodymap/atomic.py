"""Atomic file writes: every file BodyMap writes goes to a unique temporary file in the target's
folder and is renamed over the target only once it is complete, so a kill, a crash or a full
disk mid-write leaves the previous file whole (never a truncated one), and two writers of the
same file never share a temporary name.

    with atomic_write(path) as tmp:      # tmp: a Path in path's folder, same extension
        image.save(tmp)                   # any writer that takes a path
    write_bytes(path, data); write_text(path, text)

Errors (a read-only folder, a full disk) come out as OSError naming the target file, not the
temporary one.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_write", "write_bytes", "write_text", "open_atomic"]


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


_MODE = 0o666 & ~_umask()  # what a plain open() would have given the file


def _fail(path: Path, e: OSError) -> OSError:
    """The OSError to raise: e's errno and reason, naming the target (not the temporary file)."""
    out = OSError(e.errno or _errno.EIO, e.strerror or str(e), str(path))
    out.__cause__ = e
    return out


@contextlib.contextmanager
def atomic_write(path: str | Path, fsync: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, same extension, unique name) to write to;
    on leaving the block without an exception it replaces ``path`` (os.replace, atomic on
    POSIX and Windows); on an exception it is removed and ``path`` is left as it was.

    The temporary name keeps the extension last (``.labels.k3j2.tmp.npz``) so writers that pick
    the format from the name (PIL, numpy, matplotlib, trimesh) write the right one. fsync:
    flush the data to disk before the rename, so a power cut cannot leave an empty file either.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=folder)
    except OSError as e:
        raise _fail(path, e) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and getattr(e, "filename", None) in (None, str(tmp)):
            raise _fail(path, e) from None
        raise


@contextlib.contextmanager
def open_atomic(path: str | Path, mode: str = "w", **kwargs):
    """open() on a temporary file that replaces ``path`` when the block ends without an
    exception (see atomic_write). mode: "w" (text; kwargs such as newline, encoding) or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_write(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, fsync) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str, encoding: str = "utf-8", fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically (fsync=False for many small files a crash may
    lose but never truncate: training tiles)."""
    with atomic_write(path, fsync) as tmp:
        tmp.write_text(text, encoding=encoding)
