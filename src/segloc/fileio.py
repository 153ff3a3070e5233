"""Small file helpers shared by map packages, dataset folders, model checkpoints and the CLI.

Outputs are written beside their target and renamed into place (:func:`atomic_write`,
:func:`temp_dir_beside`), with the usual permissions (``0o777 & ~umask`` for folders, as
``mkdir`` gives, never ``mkdtemp``'s 0700). :func:`check_output` decides, before any work,
whether writing an output loses nothing: a command never replaces one of its own inputs, never
a folder holding or inside one, and ``--overwrite`` only replaces what the command itself
writes (a map package, a dataset folder).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from segloc.errors import SeglocError

#: What :func:`check_output` checks an output for: ``replace``, a folder the command replaces
#: whole (maps, dataset folders); ``folder``, a folder the command writes files into (an
#: evaluation report); ``file``, one file.
OUTPUT_KINDS = ("replace", "folder", "file")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def give_usual_permissions(path: str | Path) -> None:
    """Set a written file's mode to ``0o666 & ~umask``, what ``open`` gives: writers that go
    through a private temporary file (safetensors' ``save_file``) leave 0600 behind."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it to ``path``
    (with the usual permissions, whatever ``write`` created it with)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # created with the usual umask, unlike mkstemp
    try:
        write(tmp)
        give_usual_permissions(tmp)
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


def temp_dir_beside(path: str | Path, tag: str = "tmp") -> Path:
    """A new empty hidden folder beside ``path`` (``.NAME.TAG.<random>``), created with the usual umask.

    The folder to rename into ``path`` once complete: unlike :func:`tempfile.mkdtemp` (mode
    0700), it gets the permissions any new folder gets, so the output does too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.with_name(f".{path.name}.{tag}.{uuid.uuid4().hex[:12]}")
    folder.mkdir()
    return folder


def describe_missing(path: str | Path) -> str:
    """Why ``path`` cannot be opened, for messages: ``does not exist``, ``is a symbolic link loop``, ...; empty when it exists."""
    path = Path(path)
    if path.exists():
        return ""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except FileNotFoundError:
            return f"is a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        except (OSError, RuntimeError):
            return "is a symbolic link loop"
    return "does not exist"


def _absolute(path: Path) -> Path:
    """``path`` made absolute with its symbolic links resolved (as far as they resolve)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop
        return Path(os.path.abspath(path))


def check_output(
    path: str | Path,
    kind: str,
    *,
    inputs: Iterable[tuple[str | Path | None, str]] = (),
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    what: str = "output",
) -> Path:
    """Check, before any work, that writing the output ``path`` loses nothing; returns ``path``.

    Args:
        path: the output.
        kind: one of :data:`OUTPUT_KINDS`.
        inputs: ``(path, description)`` of everything the command reads (``(dataset, "the
            dataset folder")``); None paths are skipped. Symbolic links are followed.
        overwrite: the user asked to replace an existing ``replace`` output.
        replaceable: for ``replace``: whether an existing folder is one the command may replace
            (``is_map_package``); an empty folder always is.
        what: the output's name in messages (``map``, ``dataset folder``).

    Raises:
        SeglocError: the output is an input, or exists inside one (a new output may go
            anywhere); an existing ``replace`` output holds an input, exists without
            ``overwrite``, is a file, or is not ``replaceable``; a ``folder`` output is a file;
            a ``file`` output is a folder.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    path = Path(path)
    target = _absolute(path)
    exists = path.exists() or path.is_symlink()
    inputs = [(Path(source), _absolute(Path(source)), description) for source, description in inputs if source is not None]
    for source, source_abs, description in inputs:
        if target == source_abs:
            raise SeglocError(f"{what} {path} is {description} {source}, an input of this command: choose another {what}")
    for source, source_abs, description in inputs if exists else ():  # a new output changes nothing the command reads
        if target in source_abs.parents and kind == "replace":
            raise SeglocError(
                f"replacing {what} {path} would delete {description} {source}, an input of this command: choose another {what}"
            )
        if source_abs in target.parents:
            raise SeglocError(
                f"{what} {path} exists inside {description} {source}, an input of this command: writing it would change an input; "
                "write it elsewhere"
            )
    if not exists:
        return path
    if kind == "file":
        if path.is_dir():
            raise SeglocError(f"{what} {path} is a folder: give the path of a file to write")
        return path
    if not path.is_dir():
        raise SeglocError(f"{what} {path} exists and is not a folder: choose another {what}")
    if kind == "folder":
        return path
    if not overwrite:
        raise SeglocError(f"{path} exists already; pass --overwrite to replace it")
    if any(path.iterdir()) and not (replaceable is not None and replaceable(path)):
        raise SeglocError(
            f"{path} exists and is not a {what}: --overwrite only replaces a {what} (it would delete the folder's contents); "
            f"move it away or choose another {what}"
        )
    return path
