"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash or an exception mid-write never leaves a partial output under the final name: the final
name appears only through ``os.replace`` of a complete file (atomic on POSIX and Windows when both
names are on one file system, which a temporary file in the same folder guarantees).

:func:`all_or_none` extends this to a group of files, a case's outputs (mask, overlay, DICOM-SEG,
SR): inside the block every :func:`atomic_path` write is kept in its temporary file, and the files
get their final names together when the block ends; if the block raises, none of them appears.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# final path -> its temporary file, for the writes of the innermost open ``all_or_none`` block
_PENDING: contextvars.ContextVar[dict[Path, Path] | None] = contextvars.ContextVar("liverseg_pending_writes", default=None)


@contextlib.contextmanager
def all_or_none() -> Iterator[None]:
    """Group the :func:`atomic_path` writes made inside the block: all appear at its end, or none.

    Each write stays in its temporary file (next to its final name, hidden by a leading dot) until
    the block ends without an exception; then the files are renamed onto their final names one after
    the other (renames only, no data is written at that point). If the block raises, every temporary
    file is removed and no final name is touched; if a rename fails, the files already renamed are
    removed again. Nested blocks join the outermost one. Code inside the block that reads a file it
    has just written finds it through :func:`readable_path`.

    Example:
        >>> with all_or_none():  # doctest: +SKIP
        ...     atomic_write_text(out / "case_seg.json", mask_json)
        ...     write_seg(labels, series, out / "case_seg.dcm", names)  # raises: no case_seg.json either
    """
    if _PENDING.get() is not None:
        yield
        return
    pending: dict[Path, Path] = {}
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        _PENDING.reset(token)
        for tmp in pending.values():
            tmp.unlink(missing_ok=True)
        raise
    _PENDING.reset(token)
    done: list[Path] = []
    try:
        for final, tmp in pending.items():
            os.replace(tmp, final)
            done.append(final)
    except BaseException:
        for final in done:
            final.unlink(missing_ok=True)
        for final, tmp in pending.items():
            if final not in done:
                tmp.unlink(missing_ok=True)
        raise


def readable_path(path: str | os.PathLike) -> Path:
    """Where the content written to ``path`` can be read now: its temporary file while an
    :func:`all_or_none` block holds it back, else ``path`` itself."""
    pending = _PENDING.get()
    path = Path(path)
    if pending:
        return pending.get(path.absolute(), path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.png``) so writers that pick a format
    from the name still work; it starts with a dot and holds ``.tmp``, so globs for outputs never
    match it. The file gets the permissions an ordinary ``open(path, "w")`` would give (``mkstemp``
    alone makes it private to the owner). On any exception the temporary file is removed and nothing
    appears under ``path``. Inside an :func:`all_or_none` block the rename waits for the block's end.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        pending = _PENDING.get()
        if pending is None:
            os.replace(tmp_path, path)
        else:
            previous = pending.pop(path.absolute(), None)
            if previous is not None:  # written twice in one block: the last write wins
                previous.unlink(missing_ok=True)
            pending[path.absolute()] = tmp_path
            tmp_path = None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
