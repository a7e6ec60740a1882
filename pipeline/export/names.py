"""Where a subtitle track goes: file names players load beside a video, and the two layouts.

A track is ``<video stem>.<label>.<format>``, as VLC, mpv and media servers look for them next
to ``<video stem>.<extension>``: the stem as the video's file name has it (Unicode included;
only ``/``, ``\\`` (Windows' separator) and NUL are replaced, and a name is cut to the 255 bytes
file systems allow, less room for a temporary name); the label
``prompt<N>``, numbered as the report numbers its prompts (``prompt<N>-<config_id>`` where a
video has answers under several settings). Two videos never share a file:

- ``by_video`` (the default): ``<export folder>/<video stem>/<track>``, a folder per video
  named by its stem (``<stem>.<video_id>`` where videos share a stem);
- ``beside``: ``<export folder>/<the video's folder>/<track>``, the videos' folders below their
  common folder, so the tree can be copied over the videos' own (``<stem>.<video_id>.<label>``
  where videos of one folder share a stem).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.export.flat import uninert
from pipeline.files import read_text
from pipeline.paths import printable

LAYOUTS = ("by_video", "beside")
# The files an export writes beside the videos' folders: no video's folder takes one of their names.
TRACKS_INDEX = "tracks.csv"
CAPTIONS_JSONL = "captions.jsonl"
CAPTIONS_CSV = "captions.csv"
# 255 bytes, a file name's limit on ext4, XFS and Btrfs, less what the atomic writer's temporary
# name adds (".<name>.<8 hex>.tmp").
MAX_NAME_BYTES = 255 - 14
# Path separators (POSIX, Windows) and NUL: the characters no file system takes in a name.
_REFUSED = re.compile(r"[/\\\x00]")


def stem_of(video_path: str) -> str:
    """The video's file name without its extension, as a file name may hold it."""
    name = PurePosixPath(video_path).name
    stem = _REFUSED.sub("_", PurePosixPath(name).stem)
    return stem if stem not in ("", ".", "..") else "video"


def fit_name(stem: str, suffix: str) -> str:
    """``stem + suffix``, the stem cut (at a character) so the name fits :data:`MAX_NAME_BYTES`."""
    room = MAX_NAME_BYTES - _bytes(suffix)
    while _bytes(stem) > room:
        stem = stem[:-1]
    return stem + suffix


def video_folders(video_paths: dict[str, str]) -> dict[str, str]:
    """``by_video``: each video's folder name (its stem; ``<stem>.<video_id>`` where stems repeat
    or the stem is the name of a file the export writes beside the folders, ``tracks.csv``...)."""
    stems = {v: stem_of(p) for v, p in video_paths.items()}
    taken = _repeated(stems.values()) | {TRACKS_INDEX, CAPTIONS_JSONL, CAPTIONS_CSV}
    return {v: fit_name(s, f".{v}") if s in taken else fit_name(s, "") for v, s in stems.items()}


def beside_places(video_paths: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``beside``: each video's folder below the videos' common folder (``""``: that folder
    itself) and the stem its tracks take (``<stem>.<video_id>`` where stems repeat in a folder)."""
    dirs = _relative_dirs(video_paths)
    stems = {v: stem_of(p) for v, p in video_paths.items()}
    repeated = _repeated((dirs[v], stems[v]) for v in video_paths)
    return {
        v: (dirs[v], fit_name(stems[v], f".{v}") if (dirs[v], stems[v]) in repeated else stems[v])
        for v in video_paths
    }


def select_video(
    df: pd.DataFrame, value: str, files: Callable[[], Mapping[tuple[str, str], tuple[Path, bool]]]
) -> str:
    """The ``video_id`` that ``value`` names: a video_id, the video's path as recorded, its file
    name or its stem, or else a path from here to the file the night read (``files()``: each
    ``(video_id, video_path)``'s file on this machine, :func:`pipeline.video_files.video_files`,
    which reads the videos: asked for only where nothing else names one).

    Raises:
        ValueError: ``value`` names no video, or several (one line listing them).
    """
    videos = df[["video_id", "video_path"]].dropna().drop_duplicates()
    text = printable(value)  # a name that is not UTF-8 as the results keep it (\xNN)
    if videos["video_id"].eq(text).any():
        return text
    pairs = list(zip(videos["video_id"].astype(str), videos["video_path"].astype(str)))

    def the_file(among: list[tuple[str, str]]) -> list[str]:
        wanted, placed = printable(os.path.realpath(os.path.expanduser(value))), files()
        return sorted({v for v, p in among if (here := placed.get((v, p))) is not None and str(here[0]) == wanted})

    ids = sorted({v for v, p in pairs if text in (p, PurePosixPath(p).name, stem_of(p))})
    if len(ids) > 1:  # one name for several videos (nights in other folders): the one it is from here, if any
        ids = the_file([(v, p) for v, p in pairs if v in ids]) or ids
    elif not ids:
        ids = the_file(pairs)
    if len(ids) == 1:
        return ids[0]
    listed = [(v, p) for v, p in pairs if v in ids] if ids else pairs
    known = "; ".join(f"{p} ({v})" for v, p in sorted(listed)) or "none"
    if ids:
        raise ValueError(f"video={text} matches {len(ids)} videos: {known}; give its path or video_id")
    raise ValueError(f"video={text} is not in the results (they have: {known})")


def _relative_dirs(video_paths: dict[str, str]) -> dict[str, str]:
    parents = {v: PurePosixPath(p).parent for v, p in video_paths.items()}
    try:
        common = PurePosixPath(os.path.commonpath([str(p) for p in parents.values()]))
    except ValueError:  # absolute and relative paths mixed: keep each folder as given
        common = None
    out = {}
    for v, parent in parents.items():
        rel = parent.relative_to(common) if common is not None else parent
        parts = [p for p in rel.parts if p not in ("/", ".")]
        out[v] = "/".join("__" if p == ".." else p for p in parts)
    return out


def _repeated(items: Iterable[object]) -> set[object]:
    return {item for item, n in Counter(items).items() if n > 1}


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def indexed_files(index: Path | None, fmt: str, video_ids: set[str]) -> list[str]:
    """The ``fmt`` files of ``video_ids`` that the index at ``index`` lists (none without one)."""
    try:
        text = read_text(index) if index is not None else ""  # never opens a named pipe
    except (OSError, UnicodeDecodeError):
        return []
    rows = csv.DictReader(io.StringIO(text))
    # A listed path is one this export wrote (its cells made inert for spreadsheets): relative,
    # inside the folder, of the format asked.
    return [
        name for row in rows if row.get("video_id") in video_ids and (name := uninert(row.get(fmt) or ""))
        and name.endswith(f".{fmt}") and not name.startswith("/") and ".." not in name.split("/")
    ]
