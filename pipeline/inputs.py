"""Inputs: the videos a run is given, which of them a shard takes, and their content ids.

``video=`` names a file, a folder (searched recursively), a glob or a manifest; the list is
taken as given (an entry that turns out unusable becomes an error record, and the night goes
on). A video is known by its content (:func:`video_id_of`), not its path, so a renamed or
moved file is not done twice.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import time
from pathlib import Path

from pipeline.errors import ConfigError, InputError
from pipeline.listfile import read_list_file

MANIFEST_SUFFIXES = (".txt", ".lst", ".list")


def find_videos(spec: str, extensions: list[str]) -> list[Path]:
    """The videos named by ``video=``: a file, a folder (searched recursively for
    ``extensions``), a glob pattern, or a manifest (``.txt``/``.lst``/``.list``, UTF-8, a
    byte-order mark allowed: one path per line, relative to the manifest; a line that starts
    with ``#`` is a comment, and a ``#`` elsewhere is part of the name).

    Entries that turn out unusable (missing, a folder, a symlink loop) are returned all the
    same: they become error records, and the rest of the night goes on. A folder without
    videos or a glob that matches nothing gives an empty list: an empty inbox is a normal night.

    Raises:
        InputError: ``spec`` is empty or blank (an unset variable in a cron line), names
            nothing at all, or is a manifest that cannot be read as UTF-8.
    """
    if not spec.strip():
        raise InputError(
            "video= is empty (an unset variable?); pass a video file, a folder, a glob or a manifest"
        )
    path = Path(spec).expanduser()
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    if is_manifest(path):
        return [path.parent / Path(line).expanduser() for line in read_list_file(path, "video", "path")]
    if path.is_file():
        return [path]
    if path.is_dir():
        # A folder named like a video (x.mp4/) is kept: it becomes an error record.
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in wanted)
    if glob.has_magic(spec):
        return sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    raise InputError(
        f"video={spec} does not exist; pass a video file, a folder, a glob or a manifest"
    )


def is_manifest(path: Path) -> bool:
    """Whether ``video=`` names a manifest (a list of videos) rather than a video."""
    return path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES


def names_one_file(spec: str) -> bool:
    """Whether ``video=`` names one video file itself, not a folder, glob or manifest: such a
    file is taken as it is, however new (see :func:`unsettled`)."""
    path = Path(spec).expanduser()
    return path.is_file() and not is_manifest(path)


def unsettled(path: Path, min_age_s: float, now: float | None = None) -> str | None:
    """Why a found video is left for the next run, or ``None`` when it can be read now.

    A file modified in the last ``min_age_s`` seconds (a copy into the folder still under way,
    or just finished) may still grow: captioning it now would caption a part of it under a
    content id that the finished file no longer has. An entry that cannot be looked at is not
    left: it becomes an error record.
    """
    try:
        age_s = (time.time() if now is None else now) - path.stat().st_mtime
    except OSError:
        return None
    if age_s >= min_age_s:
        return None
    return f"modified {max(age_s, 0.0):.0f} s ago, less than min_age_s={min_age_s:g}; left for the next run"


def shard_videos(videos: list[Path], shard: int, num_shards: int) -> list[Path]:
    """The videos of shard ``shard`` out of ``num_shards`` (the others are left to other jobs).

    A video's shard is a SHA-256 of its size and first 64 KiB, modulo ``num_shards``: it
    depends on the file alone, so it is the same on every machine, whatever the order of the
    list or the path the file is mounted at, and does not move when videos are added; copies
    of one file fall in one shard, which captions it once. A file that cannot be read is
    placed by its path as listed (it becomes an error record in that shard).

    Raises:
        ConfigError: ``shard`` is not in ``0..num_shards-1``.
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(
            "shard must be in 0..num_shards-1 and num_shards >= 1, "
            f"got shard={shard} num_shards={num_shards}"
        )
    if num_shards == 1:
        return videos
    return [p for p in videos if _shard_key(p) % num_shards == shard]


def _shard_key(path: Path) -> int:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            digest.update(f"{os.fstat(handle.fileno()).st_size}:".encode())
            digest.update(handle.read(1 << 16))
    except OSError:
        digest = hashlib.sha256(f"path:{path}".encode())
    return int(digest.hexdigest(), 16)


def video_id_of(path: Path) -> str:
    """A stable id from the file's content: its size plus its first, middle and last MiB.

    Renaming a file keeps its id; changing its content changes it.

    Raises:
        OSError: The file cannot be read.
    """
    block = 1 << 20
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in sorted({0, max(size // 2 - block // 2, 0), max(size - block, 0)}):
            handle.seek(offset)
            digest.update(handle.read(block))
    return digest.hexdigest()[:16]


def path_id(path: Path) -> str:
    """An id for an entry whose content cannot be read (its error record is filed under it).

    The entry's resolved path; where it cannot be resolved (a symlink loop), its absolute one.
    """
    try:
        where = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" (Python < 3.13)
        where = Path(os.path.abspath(path))
    return hashlib.sha256(str(where).encode()).hexdigest()[:16]


def os_reason(path: Path, error: OSError) -> str:
    """Why a video entry cannot be read, in the words of its error record."""
    if isinstance(error, FileNotFoundError):
        return f"vanished or missing: {path}"
    if isinstance(error, IsADirectoryError) or path.is_dir():
        return f"is a directory, not a video: {path}"
    if isinstance(error, PermissionError):
        return f"permission denied: {path}"
    if error.errno == errno.ELOOP:
        return f"symlink loop (a link that leads back to itself): {path}"
    return f"cannot read {path}: {error.strerror or error}"
