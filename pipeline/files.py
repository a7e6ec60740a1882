"""The one atomic writer: a file appears whole or not at all, and stays after a power cut.

Every file the pipeline writes goes through :func:`write_atomic`: Parquet chunks and markers
(:mod:`pipeline.store`), reports and subtitle tracks, the model's F16 copy and generated test
weights (:mod:`pipeline.caption`). It knows nothing of what it writes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import StoreError
from pipeline.paths import cannot_write


def write_atomic(
    path: Path, write: Callable[[Path], object], before_rename: Callable[[], object] | None = None
) -> None:
    """Make ``path`` appear whole or not at all, and survive a power cut once this returns.

    ``write`` writes the content to the file path it is given: a hidden temporary name in
    ``path``'s folder (created if missing). That file is fsynced, renamed over ``path``, and
    the folder fsynced so that the rename itself is on disk (``before_rename`` is called just
    before the rename; what it raises leaves nothing behind).

    Raises:
        OSError: It cannot be written; the temporary file is removed.
    """
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


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """:func:`write_atomic` of ``data``, for readers such as a browser reloading a page or a
    player loading a track: they see the old file or the new one, never half of one.

    Raises:
        StoreError: It cannot be written; its line says why and the fix
            (:func:`pipeline.paths.cannot_write`).
    """
    try:
        write_atomic(path, lambda temporary: temporary.write_bytes(data))
    except OSError as error:
        raise StoreError(cannot_write(path, error)) from error


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` with :func:`write_atomic`.

    Raises:
        StoreError: It cannot be written.
    """
    write_bytes_atomic(path, json.dumps(value, indent=2, default=str).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
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
