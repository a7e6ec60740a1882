"""SHA-256 of model files, computed once per file and cached by size and modification time.

Every Parquet file records the SHA-256 of the model files that made its answers
(``model_sha256`` in its metadata), so two runs can be told apart even when the files kept
their names. Hashing a 25 GB model takes tens of seconds, so each digest is cached in
``$XDG_CACHE_HOME/video-caption-pipeline/sha256.json`` (default ``~/.cache/...``) under the
file's resolved path, size and ``mtime_ns``; a file that changes size or time is hashed again.
``VIDEO_CAPTION_CACHE_DIR`` moves the cache; an unwritable cache only costs the re-hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_FILE = "sha256.json"
_BLOCK = 4 << 20
_lock = threading.Lock()


def cache_path() -> Path:
    """Where the digests are cached (see the module's docstring)."""
    folder = os.environ.get("VIDEO_CAPTION_CACHE_DIR")
    if folder:
        return Path(folder).expanduser() / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "video-caption-pipeline" / CACHE_FILE


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file, from the cache when its size and mtime are unchanged.

    Raises:
        OSError: The file cannot be read.
    """
    resolved = Path(path).expanduser().resolve()
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
    with open(resolved, "rb") as handle:
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
    try:
        value = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _save(entries: dict[str, Any]) -> None:
    path = cache_path()
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        log.debug("SHA-256 cache %s not written: %s", path, error)
