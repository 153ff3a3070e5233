"""Small file helpers shared by map packages and model checkpoints."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # created with the usual umask, unlike mkstemp
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h: swap the two paths atomically
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where the system or filesystem cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no renameat2 in this C library (glibc < 2.28)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def previous_path(target: str | Path) -> Path:
    """Where :func:`replace_directory` keeps the previous folder while it swaps a new one in (``.NAME.previous`` beside it)."""
    target = Path(target)
    return target.with_name(f".{target.name}.previous")


def replace_directory(staging: str | Path, target: str | Path) -> None:
    """Put the complete folder ``staging`` at ``target``, replacing what is there, so that a kill at any point leaves one whole folder.

    With no ``target`` yet, one rename. Otherwise the two folders are swapped atomically
    (``renameat2(RENAME_EXCHANGE)``) and the previous one removed; where the system cannot
    swap, the previous folder is renamed to :func:`previous_path` first, and a process killed
    between the two renames leaves it there for :func:`recover_directory` to put back.
    """
    import shutil

    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now the previous folder
        return
    previous = previous_path(target)
    shutil.rmtree(previous, ignore_errors=True)
    os.replace(target, previous)
    os.replace(staging, target)
    shutil.rmtree(previous, ignore_errors=True)


def recover_directory(target: str | Path) -> bool:
    """Put back a folder that :func:`replace_directory` was swapping out when its process died; True when it did.

    Only when ``target`` is missing and :func:`previous_path` holds the previous folder.
    """
    target = Path(target)
    previous = previous_path(target)
    if target.exists() or not previous.is_dir():
        return False
    os.replace(previous, target)
    return True
