"""Inputs: the videos a run is given, which of them a shard takes, and their content ids.

``video=`` names a file, a folder (searched recursively), a glob or a manifest; the list is
taken as given (an entry that turns out unusable becomes an error record, and the night goes
on). A video is known by its content (:func:`video_id_of`), not its path, so a renamed or
moved file is not done twice.

Only regular files are opened (:func:`pipeline.files.open_file`): a named pipe called ``x.mp4``
would block the open, and the night, for ever. A name that is not UTF-8 is kept as it is for opening and
shown as :func:`pipeline.paths.printable` text everywhere a path is written.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import glob
import hashlib
import logging
import math
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, UserError
from pipeline.files import open_file, read_json, write_json_atomic
from pipeline.listfile import read_list_file
from pipeline.paths import NotAFile, printable, user_path
from pipeline.ranges import Range
from pipeline.words import visible

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".txt", ".lst", ".list")


def find_videos(spec: str, extensions: list[str]) -> list[Path]:
    """The videos named by ``video=``: a file, a folder (searched recursively for
    ``extensions``), a glob pattern, or a manifest (:func:`read_manifest`).

    Folders and globs are searched by one walk (:func:`_walk`) that enters each folder once,
    symlinked ones included, so it ends on any tree (``sub/up -> ..``, ``self -> .``) and finds
    each file once. Entries that turn out unusable (missing, a folder, a symlink loop, a FIFO)
    are returned all the same: they become error records, and the rest of the night goes on. A
    folder without videos or a glob that matches nothing gives an empty list: an empty inbox is
    a normal night.

    Raises:
        InputError: ``spec`` is empty or blank (an unset variable in a cron line), names
            nothing at all, or is a manifest that cannot be read as UTF-8.
    """
    if not spec.strip():
        raise InputError(
            "video= is empty (an unset variable?); pass a video file, a folder, a glob or a manifest"
        )
    path = user_path(spec)
    wanted = _suffixes(extensions)
    if is_manifest(path):
        return read_manifest(path)
    # os.path's tests, not Path's: they say False for a name no file can have (too long, a NUL).
    if os.path.exists(path) and not os.path.isdir(path):
        if stat.S_ISFIFO(os.stat(path).st_mode):  # <(ls *.mp4): a new pipe each night, never a video
            raise InputError(
                f"video={printable(path)} is a named pipe (a list made by <(...)?), not a video nor a list of them; "
                "write the list to a file and pass that: ls /videos/*.mp4 > videos.txt; video=videos.txt"
            )
        return [path]
    if os.path.isdir(path):
        # A folder named like a video (x.mp4/) is kept: it becomes an error record.
        walked = _walk(path, _not_hidden)
        return sorted(p for p, names in walked if _not_hidden(names) and p.suffix.lower() in wanted)
    if glob.has_magic(spec):
        found = _glob(path, spec)
        as_written = spec.replace("[", "[[]")  # in/[2024] talks/*.mp4: a folder's brackets are its name
        if not found and "[" in spec:
            found = _glob(user_path(as_written), spec)
        if found or any(char in spec for char in "*?"):  # a wildcard matching nothing: an empty inbox
            return found
        # only [...]: a name with brackets that is not there, or a list quoted into one text
    raise InputError(f"video={printable(path)} {_not_there(path)}")


def _not_there(path: Path) -> str:
    """Why ``video=`` names nothing, and the fix: not there, or not to be looked at."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as error:  # a folder above it that this user cannot search, a name too long
        fix = _access_fix() if error.errno in (errno.EACCES, errno.EPERM) else "pass another video="
        return f"cannot be looked at ({error.strerror}); {fix}"
    listed = path.name.startswith("[") and path.name.endswith("]") and "," in path.name
    quoted = " (a list quoted into one name? write video=[a.mp4,b.mp4], quoting an item that needs it)"
    return f"does not exist{quoted if listed else ''}; pass a video file, a folder, a glob or a manifest"


def _access_fix() -> str:
    """The fix for an inbox, or a folder in it, that the night's user may not read."""
    user = os.environ.get("USER") or f"uid {os.getuid()}"
    return f"give the user this night runs as ({user}) read and search permission on it, or pass another video="


def _not_hidden(names: tuple[str, ...]) -> bool:
    """Whether no name on a path is hidden (``.sync/``, a Mac's ``._clip.mp4``): a folder search
    leaves them out, as a glob's ``*`` and ``**`` do."""
    return not any(name.startswith(".") for name in names)


def searched_by(specs: list[str], extensions: list[str]) -> Callable[[Path], bool]:
    """Whether a path lies where the ``video=`` entries ``specs`` search (:func:`find_videos`):
    in a folder named (at any depth), with one of ``extensions``, or matched by a glob. A file
    named alone and a manifest search nothing: what they name is listed, there or not."""
    wanted = _suffixes(extensions)
    folders, patterns = [], []
    for spec in specs:
        path = user_path(spec)
        if os.path.isdir(path):
            folders.append(os.path.abspath(path))
        elif glob.has_magic(spec) and not os.path.exists(path):
            patterns.append(_split_glob(Path(os.path.abspath(path))))

    def searched(path: Path) -> bool:
        where = os.path.abspath(path)
        parts = Path(where).parts
        return (
            path.suffix.lower() in wanted and any(os.path.commonpath([where, folder]) == folder for folder in folders)
        ) or any(
            parts[: len(root)] == root and _matches(parts[len(root) :], wild, prefix=False) for root, wild in patterns
        )

    return searched


def _suffixes(extensions: list[str]) -> set[str]:
    return {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}


def read_manifest(path: Path) -> list[Path]:
    """The videos a manifest lists (``.txt``/``.lst``/``.list``, UTF-8, a byte-order mark
    allowed): one path per line, relative to the manifest's folder, exactly as written but for
    the line break (a name may begin or end with spaces), but for a home folder (``~/``,
    ``~user/``: :func:`~pipeline.paths.user_path`); a blank line, or one whose first
    character that is not blank is ``#``, is skipped (a ``#`` elsewhere is part of the name;
    ``./#name.mp4`` lists a name that starts with one; a line with a NUL byte, which no name can
    hold, is skipped with a warning). A path listed again (as written, or as
    ``./a.mp4`` for ``a.mp4``) is the same entry: it is taken once, with a log line.

    Raises:
        InputError: The manifest cannot be read as UTF-8.
    """
    listed = []
    for line in read_list_file(path, "video", "path", verbatim=True):
        if "\0" in line:  # no file name holds one, and the OS refuses to look one up
            log.warning("%s lists %s, with a NUL byte no file name can hold: it is skipped", printable(path),
                        visible(line))
            continue
        listed.append(path.parent / user_path(line))
    for video, times in Counter(listed).items():
        if times > 1:
            log.info("%s lists %s %d times: it is taken once", printable(path), printable(video), times)
    return list(dict.fromkeys(listed))


def is_manifest(path: Path) -> bool:
    """Whether ``video=`` names a manifest (a list of videos) rather than a video."""
    return os.path.isfile(path) and path.suffix.lower() in MANIFEST_SUFFIXES


def names_one_file(spec: str) -> bool:
    """Whether ``video=`` names one video file itself, not a folder, glob or manifest: such a
    file is taken as it is, however new (see :func:`unsettled`)."""
    path = user_path(spec)
    return os.path.isfile(path) and not is_manifest(path)


def _walk(root: Path, enter: Callable[[tuple[str, ...]], bool]) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Every entry under ``root``, with its names relative to ``root``.

    A folder (``enter(names)`` allowing) is entered once, known by its device and inode, also
    through a symlink: a link back up leads to a folder already entered, so the walk ends on
    any tree and finds each file once. An entry that cannot be looked at is yielded as it is; a
    folder below ``root`` that cannot be listed is left out with a warning.

    Raises:
        InputError: ``root`` itself cannot be listed (no empty inbox: a night that cannot look).
    """
    entered = {_folder_identity(root)}
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, names = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(entry.name for entry in listing)
        except OSError as error:
            if folder == root:  # the inbox itself: no empty inbox, a night that cannot look
                reason = f"cannot list {printable(root)} ({error.strerror or error})"
                raise InputError(f"{reason}: its videos cannot be found; {_access_fix()}") from None
            log.warning(
                "cannot list %s (%s): its videos are not found; %s", printable(folder), error.strerror or error,
                _access_fix(),
            )
            continue
        for name in entries:
            path, relative = folder / name, (*names, name)
            yield path, relative
            identity = _folder_identity(path)
            if identity is not None and identity not in entered and enter(relative):
                entered.add(identity)
                stack.append((path, relative))


def _folder_identity(path: Path) -> tuple[int, int] | None:
    """A folder's device and inode (through symlinks); ``None`` for anything else."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def _glob(pattern: Path, spec: str) -> list[Path]:
    """The entries that ``pattern`` matches, as :func:`glob.glob` with ``recursive=True`` has
    them (``**`` any number of folders, ``*`` no hidden name), found by :func:`_walk`.

    Raises:
        InputError: The folder the pattern starts from is not there (an unmounted share is
            no empty inbox).
    """
    fixed, wild = _split_glob(pattern)
    root = Path(*fixed) if fixed else Path(".")
    if not os.path.isdir(root):
        raise InputError(
            f"video={spec}: its folder {printable(root)} does not exist or is no folder (a share not mounted?); "
            "pass a glob whose folder exists"
        )
    return sorted(
        path for path, names in _walk(root, lambda names: _matches(names, wild, prefix=True))
        if _matches(names, wild, prefix=False)
    )


def _split_glob(pattern: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A glob's names before its first wildcard (the folder it starts from) and from there on."""
    parts = pattern.parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return parts[:fixed], parts[fixed:]


def _matches(names: tuple[str, ...], pattern: tuple[str, ...], prefix: bool) -> bool:
    """Whether the relative ``names`` match the glob ``pattern`` (``prefix``: whether entries
    below them still can)."""
    if not names:
        return prefix or all(part == "**" for part in pattern)
    if not pattern:
        return False
    head, rest = pattern[0], pattern[1:]
    hidden = names[0].startswith(".")
    if head == "**":
        return _matches(names, rest, prefix) or (not hidden and _matches(names[1:], pattern, prefix))
    if hidden and not head.startswith("."):
        return False
    return fnmatch.fnmatchcase(names[0], head) and _matches(names[1:], rest, prefix)


class Readiness:
    """Which found videos have settled (a copy into the folder is over), for a run's plan.

    A file still being copied in may grow: captioning it now would caption a part of it under
    a content id that the finished file no longer has. A found file is taken when its size and
    modification time were seen unchanged over at least ``min_age_s`` seconds. The first of the
    two looks is either its modification time itself, when that lies at least ``min_age_s`` in
    the past by this machine's clock, or a look of an earlier run, remembered in ``state_file``
    (an mtime in the future, from a camera or a host whose clock runs ahead, is no "just
    modified": such a file is taken by the first run at least ``min_age_s`` after a run saw it
    with the same size and mtime).

    Args:
        state_file: Where the looks at files left waiting are kept between runs (shards share
            it, taking turns through an ``flock`` on its folder); ``None``: nothing remembered.
        min_age_s: How long a file must be seen unchanged (0: every file is taken at once).
    """

    def __init__(self, state_file: Path | None, min_age_s: float) -> None:
        self.state_file = state_file
        self.min_age_s = min_age_s
        self._earlier = _looks(read_json(state_file) or {}) if state_file is not None and min_age_s > 0 else {}
        self._looked: dict[str, list[float] | None] = {}  # key → [size, mtime_ns, first seen so]; None: taken

    def unsettled(self, path: Path, now: float | None = None) -> str | None:
        """Why ``path`` is left for the next run (what was seen), or ``None`` when it is taken.

        An entry that cannot be looked at, or is no regular file, is taken: it becomes an error
        record.
        """
        if self.min_age_s <= 0:
            return None
        try:
            info = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        now = time.time() if now is None else now
        key = str(path.absolute())
        earlier = self._earlier.get(key)
        same = isinstance(earlier, list) and earlier[:2] == [info.st_size, info.st_mtime_ns]
        seen_since = earlier[2] if same else now  # type: ignore[index]
        age_s = now - info.st_mtime
        if age_s >= self.min_age_s or now - seen_since >= self.min_age_s:
            self._looked[key] = None
            return None
        self._looked[key] = [info.st_size, info.st_mtime_ns, seen_since]
        wait = f"less than min_age_s={self.min_age_s:g}; left for the next run"
        if isinstance(earlier, list) and not same:
            return (
                f"changed since a run saw it {now - earlier[2]:.0f} s ago (size {earlier[0]:.0f} -> "
                f"{info.st_size} B, mtime {_utc(earlier[1] / 1e9)} -> {_utc(info.st_mtime)}), {wait}"
            )
        if age_s < 0:
            return (
                f"modified in the future ({_utc(info.st_mtime)}, {-age_s:.0f} s ahead of this machine's clock), "
                f"size {info.st_size} B, seen unchanged for {now - seen_since:.0f} s, {wait} "
                "(taken once a run sees its size and mtime unchanged for min_age_s)"
            )
        return f"modified {age_s:.0f} s ago, size {info.st_size} B, {wait}"

    def save(self) -> None:
        """Remember this run's looks at the files it left waiting (and forget the files it
        took or that are gone), for the next run. Best effort: a look not remembered only
        means a file waits one run longer."""
        if self.state_file is None or not self._looked:
            return
        try:
            descriptor = os.open(self.state_file.parent, os.O_RDONLY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                state = _looks(read_json(self.state_file) or {})
                kept = {
                    key: look for key, look in {**state, **self._looked}.items()
                    if look is not None and os.path.lexists(key)
                }
                if kept != state:
                    write_json_atomic(self.state_file, kept)
            finally:
                os.close(descriptor)
        except (OSError, UserError) as error:
            log.warning("%s not written (%s): files left waiting wait one run longer", self.state_file, error)


def _looks(state: dict[str, Any]) -> dict[str, list[float]]:
    """The looks of a ``_waiting.json`` that have the shape a run writes, ``[size, mtime_ns,
    first seen so]``, each a finite number; another (edited by hand, another version's) is
    forgotten: that file waits one run longer, where it crashed every night."""
    def a_number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    return {
        key: look for key, look in state.items()
        if isinstance(look, list) and len(look) == 3 and all(map(a_number, look))
    }


def _utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="seconds")


def check_shard(shard: int, num_shards: int) -> None:
    """Raise :class:`ConfigError` unless ``num_shards`` is at least 1 and ``shard`` is in
    ``0..num_shards-1``."""
    Range(1).check("num_shards", num_shards)
    Range(0, high=num_shards - 1, hint=f"the shards of num_shards={num_shards} are 0 to {num_shards - 1}").check(
        "shard", shard
    )


def in_shard(path: Path, shard: int, num_shards: int) -> bool:
    """Whether ``path`` is a video of shard ``shard`` out of ``num_shards`` (the others are left
    to other jobs).

    A video's shard is a SHA-256 of its size and first 64 KiB, modulo ``num_shards``: it
    depends on the file alone, so it is the same on every machine, whatever the order of the
    list or the path the file is mounted at, and does not move when videos are added; copies
    of one file fall in one shard, which captions it once. An entry that cannot be read (or is
    no regular file) is placed by its path as listed (it becomes an error record in that shard).
    """
    if num_shards == 1:
        return True
    digest = hashlib.sha256()
    try:
        with open_file(path) as handle:
            digest.update(f"{os.fstat(handle.fileno()).st_size}:".encode())
            digest.update(handle.read(1 << 16))
    except OSError:
        digest = hashlib.sha256(f"path:{path}".encode("utf-8", "surrogateescape"))
    return int(digest.hexdigest(), 16) % num_shards == shard


def shard_videos(videos: list[Path], shard: int, num_shards: int) -> list[Path]:
    """The videos of shard ``shard`` out of ``num_shards`` (see :func:`in_shard`).

    Raises:
        ConfigError: ``shard`` is not in ``0..num_shards-1``.
    """
    check_shard(shard, num_shards)
    return [p for p in videos if in_shard(p, shard, num_shards)]


def video_id_of(path: Path) -> str:
    """A stable id from the file's content: its size plus its first, middle and last MiB.

    Renaming a file keeps its id; changing its content changes it.

    Raises:
        OSError: The file cannot be read, or is no regular file (:func:`pipeline.files.open_file`).
    """
    block = 1 << 20
    with open_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        digest = hashlib.sha256(str(size).encode())
        for offset in sorted({0, max(size // 2 - block // 2, 0), max(size - block, 0)}):
            handle.seek(offset)
            digest.update(handle.read(block))
    return digest.hexdigest()[:16]


def holds_other_content(path: Path, video_id: str) -> bool:
    """Whether ``path`` now holds content other than the one ``video_id`` names (replaced, or
    rewritten in place as ``cp`` does, since the id was taken).

    A path that cannot be read holds no other content: its failure is a fact about the path
    (:func:`path_id`), not a change.
    """
    try:
        return video_id_of(path) != video_id
    except OSError:
        return False


def path_id(path: Path) -> str:
    """An id for an entry whose content cannot be read (its error record is filed under it).

    The entry's resolved path; where it cannot be resolved (a symlink loop), its absolute one.
    """
    try:
        where = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" (Python < 3.13)
        where = Path(os.path.abspath(path))
    return hashlib.sha256(os.fsencode(where)).hexdigest()[:16]


def os_reason(path: Path, error: OSError) -> str:
    """Why a video entry cannot be read, in the words of its error record."""
    name = printable(path)
    if isinstance(error, FileNotFoundError):
        return f"vanished or missing: {name}{_blank_ends(path.name)}"
    if isinstance(error, IsADirectoryError) or os.path.isdir(path):
        return f"is a directory, not a video: {name}"
    if isinstance(error, NotAFile):
        return f"{error.kind}, not a video: {name}"
    if isinstance(error, PermissionError):
        return f"permission denied: {name}"
    if error.errno == errno.ELOOP:
        return f"symlink loop (a link that leads back to itself): {name}"
    return f"cannot read {name}: {error.strerror or error}"


def _blank_ends(name: str) -> str:
    """`` (the name ends with a blank)`` where a blank at either end of ``name`` would not show
    in a message (a manifest line with a space too many), else nothing."""
    ends = [end for end, char in (("begins", name[:1]), ("ends", name[-1:])) if char.isspace()]
    return f" (the name {' and '.join(ends)} with a blank)" if ends else ""
