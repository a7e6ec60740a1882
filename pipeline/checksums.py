"""SHA-256 of model files, computed once per file and cached by size and modification time.

Every Parquet file records the SHA-256 of the model files that made its answers
(``model_sha256`` in its metadata), so two runs can be told apart even when the files kept
their names. Hashing a 25 GB model takes tens of seconds, so each digest is cached in
``sha256.json`` in the user cache (:func:`pipeline.paths.user_cache_dir`) under the file's
resolved path, size and ``mtime_ns``; a file that changes size or time is hashed again. An
unwritable cache only costs the re-hash.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import StoreError
from pipeline.files import open_file, read_json, write_json_atomic
from pipeline.paths import user_cache_dir, user_path

log = logging.getLogger(__name__)

CACHE_FILE = "sha256.json"
_BLOCK = 4 << 20
_lock = threading.Lock()


def cache_path() -> Path:
    """Where the digests are cached (see the module's docstring)."""
    return user_cache_dir() / CACHE_FILE


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file, from the cache when its size and mtime are unchanged.

    Raises:
        OSError: The file cannot be read.
    """
    resolved = user_path(path).resolve()
    stat = resolved.stat()
    key = str(resolved)
    with _lock:
        cached = _load().get(key)
    if (
        isinstance(cached, dict)
        and cached.get("size") == stat.st_size
        and cached.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(cached.get("sha256"), str)
    ):
        return str(cached["sha256"])
    digest = hashlib.sha256()
    with open_file(resolved) as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    value = digest.hexdigest()
    with _lock:
        entries = _load()
        entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        _save(entries)
    return value


def model_sha256(files: Mapping[str, str]) -> dict[str, str | None]:
    """The SHA-256 of each named model file (``{"text_model": ..., "mmproj": ...}``); ``None``
    for a file that cannot be read here (a warning says why)."""
    digests: dict[str, str | None] = {}
    for name, path in files.items():
        try:
            digests[name] = file_sha256(path)
        except OSError as error:
            log.warning("no SHA-256 for %s %s: %s", name, path, error.strerror or error)
            digests[name] = None
    return digests


def _load() -> dict[str, Any]:
    return read_json(cache_path()) or {}


def _save(entries: dict[str, Any]) -> None:
    try:
        write_json_atomic(cache_path(), entries)
    except StoreError as error:
        log.debug("SHA-256 cache not written: %s", error)
