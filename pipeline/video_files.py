"""Where the answered videos' files are on this machine, for the report's links and players
and for naming a video on the export's command line.

A result row keeps ``video_path`` as the night was given it; a relative one is relative to the
folder the night ran in, which its run record keeps (``cwd``), not to the folder a later
command runs in. A file found there is taken as the video only where it still holds the
video's content (:func:`pipeline.inputs.holds_other_content`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.inputs import holds_other_content


def video_files(
    pairs: Iterable[tuple[str, str]], runs: Sequence[Mapping[str, Any]], here: Path | None = None
) -> dict[tuple[str, str], tuple[Path, bool]]:
    """Where the videos of result rows (``pairs``: their ``(video_id, video_path)``) are on
    this machine.

    A row's ``video_path`` is kept as the night was given it, so a relative one is relative to
    the folder the night ran in (the ``cwd`` of the run records that list it, newest first), not
    to the folder the report is written from (``here``, the process's by default; the only
    place left for a night that recorded no folder). The first of these places where the file
    is and holds the video's content (:func:`pipeline.inputs.holds_other_content`) is it; where
    none does, the night's folder (the file has moved or gone), with no player.

    Returns:
        ``(video_id, video_path)`` → (the file, whether it may be played).
    """
    here = Path.cwd() if here is None else here
    recorded = _run_folders(runs)
    found: dict[tuple[str, str], tuple[Path, bool]] = {}
    for key in pairs:
        video_id, video_path = key
        if os.path.isabs(video_path):
            path = resolved(Path(video_path))
            found[key] = (path, path.is_file())
        else:
            found[key] = _placed(video_id, video_path, recorded.get(key, []), here)
    return found


def _placed(video_id: str, video_path: str, folders: list[Path], here: Path) -> tuple[Path, bool]:
    for folder in [*folders, here]:
        path = resolved(folder / video_path)
        if path.is_file() and not holds_other_content(path, video_id):
            return path, True
    return resolved((folders[0] if folders else here) / video_path), False


def row_videos(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The distinct ``(video_id, video_path)`` of result rows."""
    pairs = df[["video_id", "video_path"]].dropna().drop_duplicates()
    return list(zip(pairs["video_id"].astype(str), pairs["video_path"].astype(str)))


def resolved(path: Path) -> Path:
    """``path`` made absolute, its links followed where they can be (not in a loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return Path(os.path.abspath(path))


def _run_folders(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Path]]:
    """``(video_id, path)`` → the ``cwd`` of each run record that lists it, newest first."""
    folders: dict[tuple[str, str], list[Path]] = {}
    for record in reversed(runs):
        cwd = record.get("cwd")
        if not isinstance(cwd, str) or not os.path.isabs(cwd):
            continue
        for video in record.get("videos") or []:
            if isinstance(video, dict):
                folders.setdefault((str(video.get("video_id")), str(video.get("path"))), []).append(Path(cwd))
    return folders
