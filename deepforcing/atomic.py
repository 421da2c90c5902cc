"""Atomic writes: a reader finds the old file (or folder) or the new one, never part of one.

A file is written under a hidden temporary name beside its final one, flushed to disk and renamed
over the final name (``os.replace``: atomic on POSIX file systems). A folder is assembled under a
hidden temporary sibling and swapped in whole (:func:`atomic_dir`): on Linux with one
``renameat2(RENAME_EXCHANGE)``, elsewhere with two renames (the old folder is moved aside, then the
new one in). If the writing fails, the temporary file or folder is removed and the old one stays.
A folder left by a killed process is removed by the next :func:`atomic_dir` on the same path.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"


def _owner() -> str:
    """Who owns a temporary name: host and process id (to tell a dead writer's leftovers)."""
    return f"{socket.gethostname().replace('.', '-')}-{os.getpid()}"


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` when the block ends without error.

    Write the file to the yielded path by any means (``savefig``, ``shutil.copy2``, ...). On error
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{_owner()}{PARTIAL}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); OSError if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError) as e:  # not glibc >= 2.28 / not Linux
        raise OSError("renameat2 is not available") from e
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put folder ``src`` at ``dst``, replacing the folder there (if any); ``src`` is gone afterwards."""
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.rename(src, dst)
        return
    try:
        _exchange(src, dst)  # readers see the old folder, then the new one
        shutil.rmtree(src)  # now the old folder
        return
    except OSError:
        pass
    old = dst.with_name(f".{dst.name}.{_owner()}.old{PARTIAL}")
    os.rename(dst, old)
    os.rename(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def _remove_dead_leftovers(path: Path) -> None:
    """Remove temporary siblings of ``path`` whose writer (on this host) no longer runs."""
    prefix = f".{path.name}.{socket.gethostname().replace('.', '-')}-"
    for p in path.parent.glob(glob.escape(prefix) + "*" + PARTIAL):
        pid = p.name[len(prefix):].split(".", 1)[0].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running: its writer's, not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` whole when the block ends
    without error, and is removed (leaving ``path`` as it was) when it raises.

    A symbolic link at ``path`` is followed: the folder it points to is replaced.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_leftovers(path)
    tmp = path.with_name(f".{path.name}.{_owner()}-{secrets.token_hex(4)}{PARTIAL}")
    tmp.mkdir()  # the usual permissions (umask), unlike tempfile.mkdtemp's owner-only ones
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
