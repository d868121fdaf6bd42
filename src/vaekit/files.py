"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Every output of vaekit (models, training state, figures, scores, ``.vkz`` files) goes through this module::

    atomic_open(path)  ──> temporary file beside path ──write──> flush + fsync ──rename──> path ──fsync(dir)
    atomic_dir(path)   ──> temporary directory beside path ──fill──> fsync every file ──swap in──> path

- The rename happens only after the data reached the disk (``fsync``), and the directory holding the new name is
  synced after it, so a power cut leaves either the old file or the complete new one, never a renamed but empty
  file.
- Files and directories get the permissions ``open()`` and ``mkdir()`` would give them under the process's umask
  (the temporary files start private, as ``mkstemp`` makes them).
- A failure while writing (``OSError``: no space left, permission denied, ...) removes the temporary file and
  raises :class:`vaekit.errors.OutputError` naming the path and the cause.

A directory cannot be replaced in one rename, so :func:`atomic_dir` moves the old directory aside first
(``.NAME.old``), renames the new one into place and then deletes the old one; :func:`recover_dir` undoes what a
kill between the two renames leaves (the old directory aside, no new one), and :func:`remove_stale_temporaries`
clears temporary directories a kill left behind.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vaekit.errors import OutputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read without changing it where ``/proc`` tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it, the only portable way to read it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    """Flush a directory's entries to disk (a no-op where directories cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_FIXES = {
    errno.ENOSPC: "free some space on that disk or write elsewhere",
    errno.EDQUOT: "free some space on that disk or write elsewhere",
    errno.EFBIG: "the file is larger than this system allows; write smaller files or elsewhere",
    errno.EISDIR: "give the name of a file, not of a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EACCES: "choose a path you may write to",
    errno.EPERM: "choose a path you may write to",
    errno.EROFS: "the filesystem is read-only: choose another path",
}


def _output_error(path: Path, exc: OSError) -> OutputError:
    cause = exc.strerror or str(exc)
    fix = _FIXES.get(exc.errno or 0, "choose another output path")
    return OutputError(f"cannot write {str(path)!r}: {cause}; {fix}")


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary stream to ``path`` through a temporary file beside it, renamed into place on success.

    Raises
    ------
    OutputError
        The path cannot be written (the temporary file is removed).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise _output_error(path, exc) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _output_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file, fsync and a rename."""
    atomic_write_bytes(path, text.encode())


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` serialized in the ``.npy`` format (never pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _sync_tree(root: Path) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _old_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def check_file_targets(*paths: Path) -> None:
    """Before writing a set of files: OutputError if any of ``paths`` is a directory (so a failure on the last one
    does not leave the first ones written)."""
    for path in paths:
        if path.is_dir():
            raise OutputError(f"cannot write {str(path)!r}: it is a directory; pass another output name")


def check_replaceable(path: str | Path, marker: str, what: str) -> None:
    """Refuse ``path`` as the target of :func:`atomic_dir` (which replaces a directory whole) unless it is absent, an
    empty directory or a directory holding ``marker``, a file of an earlier ``what``: a folder of other files, or a
    file, is never deleted to make room.

    Raises
    ------
    OutputError
        ``path`` is a file, or a directory that is neither empty nor an earlier ``what``.
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or (path / marker).is_file())):
        kind = "a directory" if path.is_dir() else "a file"
        raise OutputError(f"{str(path)!r} is {kind} that is not {what} (no {marker}), and saving replaces the whole "
                          "directory; pass a new or empty directory, or an earlier one to replace")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``.

    The files written into it are synced to disk before the swap. A kill during the swap leaves the previous
    directory as ``.NAME.old`` beside ``path``, which :func:`recover_dir` puts back.

    Raises
    ------
    OutputError
        The directory cannot be created or written (the temporary directory is removed).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise _output_error(path, exc) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        _sync_tree(tmp)
        old = _old_name(path)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            _fsync_dir(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
            _fsync_dir(path.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _output_error(path, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path: str | Path) -> bool:
    """Put back the previous version of a directory that :func:`atomic_dir` was replacing when it was killed.

    Returns whether ``path`` was missing and ``.NAME.old`` (a complete earlier version) took its place. When both
    exist, the swap completed and the old copy is removed.
    """
    path = Path(path)
    old = _old_name(path)
    if not old.is_dir():
        return False
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        return False
    old.rename(path)
    _fsync_dir(path.parent)
    return True


def remove_stale_temporaries(folder: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files and directories (``.NAME.XXXXXXXX``) that a killed writer of ``NAME`` left in
    ``folder``; only call this when no other process writes there. Returns what was removed."""
    folder = Path(folder)
    removed = []
    for name in names:
        for candidate in folder.glob(f".{name}.*"):
            if candidate.name == _old_name(folder / name).name:
                continue
            if candidate.is_dir():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def save_tensors(tensors: dict[str, object], path: str | Path) -> None:
    """Write tensors as safetensors to ``path`` (inside an :func:`atomic_dir`, usually), refusing with
    :class:`OutputError` when the disk is full or the path cannot be written."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path))  # type: ignore[arg-type]
        os.chmod(path, 0o666 & ~current_umask())  # safetensors creates its files private (0600)
    except (OSError, SafetensorError) as exc:
        if isinstance(exc, OSError):
            raise _output_error(Path(path), exc) from None
        cause = " ".join(str(exc).split())  # safetensors reports a failed write (a full disk) in its own words
        raise OutputError(f"cannot write {str(path)!r}: {cause}; free some space or write elsewhere") from None


def _csv_text(value: object) -> str:
    text = str(value)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\r\n') else text


def csv_bytes(columns: dict[str, np.ndarray]) -> bytes:
    """A CSV file (header, then one row per index) of equally long 1-D columns; floats written exactly (repr),
    integers as integers, strings (ids) as they are, quoted where they hold a comma, a quote or a line break. Needs
    no pandas."""
    names = list(columns)
    arrays = [np.asarray(columns[name]) for name in names]
    formats = [(lambda v: repr(float(v))) if a.dtype.kind == "f" else _csv_text if a.dtype.kind in "OUS"
               else (lambda v: str(int(v))) for a in arrays]
    lines = [",".join(names)]
    for row in zip(*arrays, strict=True):
        lines.append(",".join(fmt(value) for fmt, value in zip(formats, row, strict=True)))
    return ("\n".join(lines) + "\n").encode()
