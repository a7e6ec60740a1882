"""The one atomic writer: a file appears whole or not at all, and stays after a power cut; and
the one way to open a file the pipeline keeps, which never blocks on what is no file.

Every file the pipeline writes goes through :func:`write_atomic`: Parquet chunks and markers
(:mod:`pipeline.store`), reports and subtitle tracks, the model's F16 copy and generated test
weights (:mod:`pipeline.caption`). It knows nothing of what it writes, and replaces only a file
(or a link): a folder, a named pipe, a socket or a device at the name is left as it is
(``out=/dev/null`` must not replace the device).

Every file the pipeline reads back from ``output_dir`` or the cache is opened with
:func:`open_file`, or looked at with :func:`check_file` just before a reader that opens it by
name (pyarrow): a named pipe at such a name would block the reader, and the night, for ever.
"""

from __future__ import annotations

import errno
import io
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import StoreError
from pipeline.paths import Chosen, NotAFile, cannot_write, check_file_or_nothing, in_the_way, kind_of


def write_atomic(
    path: Path, write: Callable[[Path], object], before_rename: Callable[[], object] | None = None
) -> None:
    """Make ``path`` appear whole or not at all, and survive a power cut once this returns.

    ``write`` writes the content to the file path it is given: a hidden temporary name in
    ``path``'s folder (created if missing). That file is fsynced, renamed over ``path``, and
    the folder fsynced so that the rename itself is on disk (``before_rename`` is called just
    before the rename; what it raises leaves nothing behind).

    Raises:
        NotAFile: Something other than a file (or a link) stands at ``path``: nothing is
            created, and it is left as it is.
        OSError: It cannot be written; the temporary file is removed.
    """
    check_file_or_nothing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        _fsync(temporary)
        if before_rename is not None:
            before_rename()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync(path.parent)


def write_bytes_atomic(path: Path, data: bytes, chosen: Chosen | None = None) -> None:
    """:func:`write_atomic` of ``data``, for readers such as a browser reloading a page or a
    player loading a track: they see the old file or the new one, never half of one.

    Args:
        chosen: The path the user gave (``out=``) where ``path`` is it or lies below it: the
            fix where it, or a folder above it, is in the way (:func:`pipeline.paths.cannot_write`).

    Raises:
        StoreError: It cannot be written; its line says why and the fix
            (:func:`pipeline.paths.cannot_write`).
    """
    try:
        write_atomic(path, lambda temporary: temporary.write_bytes(data))
    except OSError as error:
        raise StoreError(cannot_write(path, error, chosen)) from error


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` with :func:`write_atomic`.

    Raises:
        StoreError: It cannot be written.
    """
    write_bytes_atomic(path, json.dumps(value, indent=2, default=str).encode())


def check_writable(path: Path, chosen: Chosen | None = None) -> None:
    """Make sure a file can be written at ``path`` as far as what stands there goes, before a
    writer of several files creates any (the report: its page, and the folder of files beside
    it): nothing but a file (or a link) at its name, and folders (or nothing) above it.

    Raises:
        StoreError: One line naming what stands in the way and the fix
            (:func:`pipeline.paths.cannot_write`).
    """
    try:
        check_file_or_nothing(path)
        blocked = in_the_way(path.parent)
        if blocked is not None:
            raise NotADirectoryError(errno.ENOTDIR, blocked, str(path.parent))
    except OSError as error:
        raise StoreError(cannot_write(path, error, chosen)) from error


def check_file(path: Path) -> None:
    """Make sure a regular file (or a link to one) stands at ``path``, for a reader that opens
    it by name (pyarrow), just before it does.

    Raises:
        NotAFile: A folder, a named pipe, a socket or a device stands there.
        OSError: There is nothing, or it cannot be looked at.
    """
    kind = kind_of(os.stat(path).st_mode)
    if kind is not None:
        raise NotAFile(errno.EINVAL, kind, path)


def open_file(path: Path) -> BinaryIO:
    """Open the regular file at ``path`` (through links) to read its bytes: looked at before it
    is opened (opening a device may act on it), opened without blocking (a named pipe put there
    meanwhile would block the open for ever), then looked at again.

    Raises:
        NotAFile: A folder, a named pipe, a socket or a device stands there.
        OSError: It cannot be opened.
    """
    check_file(path)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        kind = kind_of(os.fstat(descriptor).st_mode)
        if kind is not None:
            raise NotAFile(errno.EINVAL, kind, path)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_text(path: Path) -> str:
    """The text of the UTF-8 file at ``path``, opened with :func:`open_file` (never blocking
    on what is no file), as ``Path.read_text`` reads it: a byte-order mark dropped, lines
    ending in LF, CR LF or CR all ending in LF.

    Raises:
        NotAFile: A folder, a named pipe, a socket or a device stands there.
        OSError: It cannot be read.
        UnicodeDecodeError: It is not UTF-8.
    """
    with io.TextIOWrapper(open_file(path), encoding="utf-8-sig") as text:
        return text.read()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when it is missing, unreadable or no file
    (:func:`open_file`)."""
    try:
        with open_file(path) as handle:
            value = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _fsync(path: Path) -> None:
    """Flush a file's or folder's data and metadata to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
