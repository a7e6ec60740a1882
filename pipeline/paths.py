"""Paths: where the pipeline keeps files of its own that are not results (the user's cache), and
how a path is written where only text goes."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """The per-user cache folder (not created here).

    ``$VIDEO_CAPTION_CACHE`` when set, else ``$XDG_CACHE_HOME/video-caption-pipeline``, else
    ``~/.cache/video-caption-pipeline``.
    """
    explicit = os.environ.get("VIDEO_CAPTION_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "video-caption-pipeline"


def printable(path: str | os.PathLike[str]) -> str:
    """``path`` as text that every writer takes (Parquet, JSON, a UTF-8 log file): the bytes of
    a name that are not UTF-8 (a Latin-1 name from an old share, which Python keeps as
    surrogate escapes) shown as ``\\xNN``, as ``ls -b`` shows them."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
