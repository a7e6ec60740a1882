"""Paths: where the pipeline keeps files of its own that are not results (the user's cache), how
a path is written where only text goes, and how a folder that cannot be written is said: one
line with what stands in the way or what the folder lacks (permissions, space) and the fix.

The fix depends on whose name is in the way. Where it is a path the user chose (``output_dir=``,
``out=``, ``model.dir=``, the cache) or lies above one, the user chooses another (:class:`Chosen`);
only a name the pipeline itself keeps below one (``output_dir/_runs``, ``output_dir/_report.html``
where ``out=`` was not given) is to be moved or renamed."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_RIGHTS = (errno.EACCES, errno.EPERM, errno.EROFS)
# A disk with less free than this is full for anything the pipeline writes there.
_ROOM_BYTES = 1 << 20


def disk_full(error: OSError) -> bool:
    """Whether ``error`` says the disk, or the user's quota on it, is full."""
    return error.errno in _FULL


def no_room(folder: Path) -> bool:
    """Whether the disk of ``folder`` has (next to) no space left for a user's files, for a
    writer that does not say why it failed (llama.cpp's quantize)."""
    try:
        found = os.statvfs(folder)
    except OSError:
        return False
    return found.f_bavail * found.f_frsize < _ROOM_BYTES


def not_writable(error: OSError) -> bool:
    """Whether ``error`` says a folder cannot be written: permissions, a read-only mount, a
    full disk or quota (:func:`disk_full`), or a file where the folder or one of its parents
    must be, or something other than a file at its name (:class:`NotAFile`). Every write into the
    user cache tells these apart from a bug with this, and says them with :func:`unwritable`."""
    if isinstance(error, NotAFile):
        return True
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return error.filename is not None and not_a_folder(Path(os.fsdecode(error.filename))) is not None
    return error.errno in (*_NO_RIGHTS, *_FULL)


LINK_TO_NOWHERE = "a link to nowhere"


class NotAFile(OSError):
    """Something other than a regular file stands where the pipeline reads or writes a file (a
    folder, a named pipe, a socket, a device): it is never opened, nor replaced. ``kind`` is
    what (``a named pipe``); its ``strerror``, and its text, say so (``a named pipe stands
    there``)."""

    def __init__(self, code: int, kind: str, path: Path) -> None:
        super().__init__(code, f"{kind} stands there", str(path))
        self.kind = kind

    def __reduce__(self) -> tuple[type[NotAFile], tuple[int | None, str, Path]]:  # raised in a Ray worker too
        return type(self), (self.errno, self.kind, Path(self.filename))

    def __str__(self) -> str:
        return str(self.strerror)


def what_stands_at(path: Path) -> str | None:
    """What stands at ``path`` where a file must be and is not a regular file (``a folder``,
    ``a named pipe``, ``a socket``, ``a device``, :data:`LINK_TO_NOWHERE`), following links as
    ``open`` does; ``None`` for a file or nothing."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return LINK_TO_NOWHERE if os.path.islink(path) else None
    return kind_of(mode)


def in_place_of_a_file(path: Path) -> str | None:
    """What stands at ``path`` in place of a file (:func:`what_stands_at`: a folder, a named pipe,
    a socket, a device, through links); ``None`` for a file, nothing, or a link to nowhere (a
    file is written over the link)."""
    kind = what_stands_at(path)
    return None if kind == LINK_TO_NOWHERE else kind


def check_file_or_nothing(path: Path) -> None:
    """Make sure a file may be written at ``path``: nothing stands there, or a file, or a link
    (a file is written over the link).

    Raises:
        NotAFile: A folder, a named pipe, a socket or a device stands there (through a link).
    """
    kind = in_place_of_a_file(path)
    if kind is not None:
        raise NotAFile(errno.EEXIST, kind, path)


def kind_of(mode: int) -> str | None:
    """What a file of ``mode`` (``st_mode``) is where a regular file must be (``a folder``,
    ``a named pipe``, ``a socket``, ``a device``); ``None`` for a regular file."""
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
    return next((kind for test, kind in kinds.items() if test(mode)), None)


@dataclass(frozen=True)
class Chosen:
    """A path the user chose (``output_dir=``, ``out=``, ``model.dir=``, the cache) and the fix
    where it, or a folder above it, is in the way: ``fix`` (``choose another out=``). A name in
    the way below it is one the pipeline keeps there: that one is moved or renamed."""

    path: Path
    fix: str

    def fix_for(self, blocker: Path) -> str | None:
        """:attr:`fix` where ``blocker`` is :attr:`path` or a folder above it; else ``None``."""
        chosen, there = Path(os.path.abspath(self.path)), Path(os.path.abspath(blocker))
        return self.fix if there == chosen or there in chosen.parents else None


def _fix(blocker: Path, chosen: Chosen | None) -> str:
    """The fix for ``blocker`` in the way: the user's :class:`Chosen` fix where ``blocker`` is
    at or above the path chosen, else to move it."""
    return (chosen.fix_for(blocker) if chosen is not None else None) or "move or rename it"


def room_or_rights(error: OSError, folder: Path) -> str | None:
    """The fix for a write into ``folder`` that failed with ``error``: free space (a full disk
    or quota), or make the folder writable (permissions, a read-only mount: the nearest of
    ``folder`` and its parents that is there); ``None`` where ``error`` says neither."""
    if error.errno == errno.EDQUOT:
        return "free space within your disk quota"
    if error.errno == errno.ENOSPC:
        return "free space on its disk"
    if error.errno in _NO_RIGHTS:
        there = next((path for path in (folder, *folder.parents) if path.is_dir()), folder)  # the one to fix
        return f"make {there} writable (its permissions, or a read-only mount)"
    return None


def cannot_write(path: Path, error: OSError, chosen: Chosen | None = None) -> str:
    """One line for the file ``path`` that could not be written (``error``; a :class:`NotAFile`
    found before trying): what stands in the way (something other than a file at its name, a
    file where its folder must be) or what its folder lacks (space, permissions), and the fix
    (``chosen``: the path the user gave, whose fix is to choose another where it or a folder
    above it is in the way); else what ``error`` says.

    ``cannot write out/_report.html: a folder stands there; move or rename it``,
    ``cannot write r.html: a device stands there; choose another out=``,
    ``cannot write out/_runs/x.json: out/_runs is a file, not a folder; move or rename it``,
    ``cannot write out/v/_done-x: No space left on device; free space on its disk``.
    """
    fix = room_or_rights(error, path.parent)
    if fix is not None:
        return f"cannot write {path}: {error.strerror or error}; {fix}"
    kind = in_place_of_a_file(path)
    if kind is not None:
        return f"cannot write {path}: {kind} stands there; {_fix(path, chosen)}"
    blocker = not_a_folder(user_path(path.parent).absolute())
    if blocker is not None:
        return f"cannot write {path}: {_blocked(blocker)}; {_fix(blocker, chosen)}"
    return f"cannot write {path}: {error.strerror or error}"


def in_the_way(folder: Path) -> str | None:
    """``X is a file, not a folder`` (or ``X is not a folder``) where X stands where ``folder``
    or one of its parents must be (:func:`not_a_folder`); ``None`` where nothing does."""
    blocker = not_a_folder(user_path(folder).absolute())
    return None if blocker is None else _blocked(blocker)


def _blocked(blocker: Path) -> str:
    return f"{blocker} is a file, not a folder" if blocker.is_file() else f"{blocker} is not a folder"


_CACHE_FIX = "set VIDEO_CAPTION_CACHE to a writable folder"


def unwritable(folder: Path, error: OSError | None, what: str, chosen: Chosen | None = None) -> str:
    """One line for ``what`` that could not be written into ``folder`` (``error``: what
    writing it said; ``None``: a file stands in the way, found before trying): what stands
    in the way or what the folder lacks (permissions, space), the fix, and (for the user
    cache) the variable that moves it. ``chosen``: the path the user gave (for the cache, the
    cache itself), whose fix is to choose another where it or a folder above it is in the way."""
    absolute, cache = user_path(folder).absolute(), user_cache_dir().absolute()
    blocker, in_cache = not_a_folder(absolute), absolute.is_relative_to(cache)
    chosen = chosen or (Chosen(cache, _CACHE_FIX) if in_cache else None)
    or_cache = f"; or {_CACHE_FIX}" if in_cache else ""
    if blocker is not None:
        line = f"cannot write {what} into {folder} ({_blocked(blocker)}): that must be a writable folder"
        fix = chosen.fix_for(blocker) if chosen is not None else None
        return f"{line}; {fix}" if fix else f"{line}; move or rename {blocker}{or_cache}"
    if isinstance(error, NotAFile):
        return f"cannot write {what} into {folder} ({error.filename}: {error.strerror}): move or rename it{or_cache}"
    reason = str(error.strerror or error) if error is not None else "cannot be created"
    if error is not None and disk_full(error):
        line = f"cannot write {what} into {folder} ({reason}): {room_or_rights(error, folder)}"
        return line + (", or set VIDEO_CAPTION_CACHE to a folder on another disk" if in_cache else "")
    line = f"cannot write {what} into {folder} ({reason}): that folder must be writable"
    if in_cache:
        line += f"; make {cache} writable, or {_CACHE_FIX}"
    return line


@contextmanager
def writing_into(
    folder: Path, what: str, error_type: type[Exception], chosen: Chosen | None = None
) -> Iterator[None]:
    """Write ``what`` into ``folder`` in the ``with`` block: a folder that cannot be written
    (:func:`not_writable`) raises ``error_type`` (a :class:`~pipeline.errors.UserError`) with
    the line of :func:`unwritable` (``chosen``: the path the user gave, see there); any other
    ``OSError`` is a bug and goes on as it is.

    Raises:
        Exception: ``folder`` cannot be written (an ``error_type``).
    """
    try:
        yield
    except OSError as error:
        if not_writable(error):
            raise error_type(unwritable(folder, error, what, chosen)) from error
        raise
