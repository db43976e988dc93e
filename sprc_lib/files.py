"""Writes that an interruption cannot leave half done: write beside the file, then rename over it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sprc_lib.errors import DiskFullError, UserError

# Writers that report a full disk without errno (torch.save's zip writer: "unexpected pos", "iostream
# error"): a failure with less free space than this left is taken for a full disk.
NEARLY_FULL = 16 * 2**20


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.is_file() else 0


def _megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def disk_full(err: BaseException, path: Path, needed: int) -> DiskFullError | None:
    """The error to raise instead of `err` when it means the disk under `path` is full, else None."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return None
    if isinstance(err, OSError):  # the operating system says so
        full = err.errno == errno.ENOSPC
    else:  # a writer that does not (torch's "unexpected pos", safetensors' errors): judge by the space left
        full = not isinstance(err, UserError) and free < NEARLY_FULL
    if not full:
        return None
    return DiskFullError(f"{path.parent}: the disk is full ({_megabytes(free)} free) while writing {path.name}, "
                         f"which needs about {_megabytes(needed)}; free that much space there (or choose another "
                         "folder), then run again")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` to write a file or a folder into; it replaces `path` on success.

    On an error (or Ctrl-C) inside the block the temporary copy is removed and `path` is left as it was.
    A folder replaces an older folder in two renames, so a crash between them leaves the old one
    beside it (`<name>.old-<pid>`), never a half-written one in its place. A full disk is a
    DiskFullError that says how much room the write needs (`size` in bytes, else the old copy's size).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        try:
            yield tmp
        except Exception as err:
            full = disk_full(err, path, size or max(_size(path), _size(tmp)))
            if full is None:
                raise
            raise full from err
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f"{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def shown_path(path: str | Path) -> str:
    """`path` as a message shows it: relative to the current folder when it is there or one level up (a
    notebook's `../data/...`), so that a saved notebook or a log holds no machine's absolute paths; else as is."""
    relative = os.path.relpath(Path(path).resolve())
    return relative if not relative.startswith(os.path.join("..", "..")) else str(path)
