"""Paths: where the pipeline keeps files of its own that are not results (the user's cache), and
how a path is written where only text goes."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def user_path(text: str | os.PathLike[str]) -> Path:
    """A path the user typed, a leading ``~`` or ``~name`` made that home folder where there is
    one; any other name as written: ``~clip.mp4`` names a file (``Path.expanduser`` would look
    for a user ``clip.mp4``, and raise where there is none). A path a run recorded is taken as
    written, not through here."""
    return Path(os.path.expanduser(os.fspath(text)))


def user_cache_dir() -> Path:
    """The per-user cache folder (not created here).

    ``$VIDEO_CAPTION_CACHE`` when set, else ``$XDG_CACHE_HOME/video-caption-pipeline``, else
    ``~/.cache/video-caption-pipeline``.
    """
    explicit = os.environ.get("VIDEO_CAPTION_CACHE")
    if explicit:
        return user_path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return user_path(base) / "video-caption-pipeline"


def printable(path: str | os.PathLike[str]) -> str:
    """``path`` as text that every writer takes (Parquet, JSON, a UTF-8 log file): the bytes of
    a name that are not UTF-8 (a Latin-1 name from an old share, which Python keeps as
    surrogate escapes) shown as ``\\xNN``, as ``ls -b`` shows them."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def not_a_folder(folder: Path) -> Path | None:
    """What stands where ``folder``, or the nearest of its parents that exists, must be a
    folder: a file (or a link to one) that makes ``folder`` impossible to create; ``None``
    when there is none."""
    for path in (folder, *folder.parents):
        try:
            if os.path.lexists(path):
                return None if path.is_dir() else path
        except OSError:  # not a name this system can have (too long): mkdir says why
            return None
    return None


def not_writable(error: OSError) -> bool:
    """Whether ``error`` says a folder cannot be written (permissions, a read-only mount, or
    a file where the folder or one of its parents must be)."""
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return error.filename is not None and not_a_folder(Path(os.fsdecode(error.filename))) is not None
    return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def unwritable(folder: Path, error: OSError | None, what: str) -> str:
    """One line for ``what`` that could not be written into ``folder`` (``error``: what
    writing it said; ``None``: a file stands in the way, found before trying): which folder
    must be writable, and (for the user cache) the variable that moves it."""
    blocker = not_a_folder(user_path(folder).absolute())
    if blocker is not None:
        reason = f"{blocker} is a file, not a folder" if blocker.is_file() else f"{blocker} is not a folder"
    else:
        reason = str(error.strerror or error) if error is not None else "cannot be created"
    must = "that must be a writable folder" if blocker is not None else "that folder must be writable"
    line = f"cannot write {what} into {folder} ({reason}): {must}"
    cache = user_cache_dir().absolute()
    if user_path(folder).absolute().is_relative_to(cache):
        line += f"; {'or' if blocker else f'make {cache} writable, or'} set VIDEO_CAPTION_CACHE to a writable folder"
    return line
