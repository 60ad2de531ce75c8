"""Small file helpers shared by every package: atomic writes and content hashes.

Nothing here is ever left half-written: each writer fills a temporary file in the target's
directory, flushes it to disk, then renames it over the target (an atomic step on POSIX). A write
that fails (a full disk, a read-only directory) raises :class:`WriteError`, one sentence naming the
file; :func:`write_or_rescue` saves a result elsewhere when its place cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


#: What a failed write looks like: a full disk or quota, a read-only or vanished place.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR}
FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WriteError(OSError):
    """A file could not be written (full disk, read-only or missing directory); the message names
    the file and says what to do. ``errno`` is the cause's, when known. Survives pickling (so a
    worker process can raise it)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __reduce__(self):
        return (type(self), (str(self), self.errno))


def write_error(path: str | os.PathLike, error: BaseException, hint: str = "") -> WriteError | None:
    """The :class:`WriteError` naming ``path`` for ``error``, raised while writing it; None when
    ``error`` is not a failed write. Libraries that write on their own report a full disk in their
    own words (safetensors: ``os error 28``, libsndfile: ``System error``, torch.save: ``file write
    failed``), so an error while the disk is full counts as one."""
    if isinstance(error, WriteError):
        return error
    code, text = error.errno if isinstance(error, OSError) else None, str(error)
    if code is None and ("No space left on device" in text or "os error 28" in text or _no_space_at(path)):
        code = errno.ENOSPC
    if code in FULL_DISK_ERRNOS:
        return WriteError(f"cannot write {path}: no space left on the device; {hint or 'free some space there, or write somewhere else'}", code)
    if code in WRITE_ERRNOS:
        reason = os.strerror(code).lower()
        return WriteError(f"cannot write {path}: {reason}; {hint or 'check that the directory exists and that you may write to it'}", code)
    return None


def _no_space_at(path: str | os.PathLike) -> bool:
    """Whether the disk holding ``path`` is full (writers such as libsndfile only say "System error")."""
    import shutil

    existing = next((p for p in (Path(path), *Path(path).absolute().parents) if p.exists()), None)
    try:
        return existing is not None and shutil.disk_usage(existing).free < 1 << 20
    except OSError:
        return False


@contextlib.contextmanager
def naming_write_failures(path: str | os.PathLike, hint: str = "") -> Iterator[None]:
    """Turn a failed write inside the block into a :class:`WriteError` naming ``path`` (with ``hint``)."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - writers raise their own types; only failed writes are turned
        failure = write_error(path, error, hint)
        if failure is None or failure is error:
            raise
        raise failure from error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    Use it for writers that want a file name (``soundfile.write``, ``safetensors.save_file``).
    ``fsync=False`` skips flushing to disk before the rename: still never half-written if the
    process dies, but not safe against a power cut. For many small files that are checksummed.
    The file gets the usual permissions (0666 less the umask), whatever the writer did. A failed
    write (a full disk, ...) raises :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    with naming_write_failures(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with naming_write_failures(path):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600, and some writers replace the file
            if fsync:
                with open(tmp_path, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_or_rescue(write: Callable[[Path], T], directory: str | os.PathLike, what: str) -> T:
    """``write(directory)``; when that fails (:class:`WriteError`), ``write`` into a new directory
    under the system's temporary directory (``TMPDIR``) instead and raise a WriteError that says
    where ``what`` (a record, a checkpoint) was saved, so that a result computed before a late
    failure is never lost."""
    directory = Path(directory)
    try:
        return write(directory)
    except WriteError as error:
        rescue = Path(tempfile.mkdtemp(prefix="harness-rescue-")) / directory.name
        try:
            saved = write(rescue)
        except Exception as again:  # noqa: BLE001 - reported with the first failure
            raise WriteError(f"{error}. The {what} could not be saved elsewhere either ({again})", error.errno) from error
        raise WriteError(
            f"{error}. The {what} was saved to {saved} instead: move it to {directory} once that can be written",
            error.errno,
        ) from error


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'), got mode {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, ensure_ascii=False)
        f.write("\n")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: str | os.PathLike, pattern: str = "*") -> str:
    """Hex SHA-256 over the relative names and contents of the files under ``root`` matching ``pattern``."""
    root = Path(root)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob(pattern) if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()
