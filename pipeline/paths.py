"""Paths: where the pipeline keeps files of its own that are not results (the user's cache), and
how a path is written where only text goes."""

from __future__ import annotations

import errno
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


def not_writable(error: OSError) -> bool:
    """Whether ``error`` says a folder cannot be written (permissions, a read-only mount)."""
    return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def unwritable(folder: Path, error: OSError, what: str) -> str:
    """One line for ``what`` that could not be written into ``folder``: which folder must be
    writable, and (for the user cache) the variable that moves it."""
    line = f"cannot write {what} into {folder} ({error.strerror or error}): that folder must be writable"
    cache = user_cache_dir().expanduser().absolute()
    if folder.expanduser().absolute().is_relative_to(cache):
        line += f"; make {cache} writable, or set VIDEO_CAPTION_CACHE to a writable folder"
    return line
