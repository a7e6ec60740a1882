"""What a video has committed under a ``config_id``, and whether it is still intact: the keys
read back, chunks read in full once (``<video_id>/_verified.json``), damaged chunks, twins and
strays (:mod:`pipeline.chunks`) moved aside (``output_dir/_quarantine/<video_id>/``), and the
done markers that list the chunks they vouch for. The files themselves are written by
:mod:`pipeline.store`, and read as every reader reads them (:func:`pipeline.store.read_chunk`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.chunks import (
    VERIFIED_FILE,
    ChunkName,
    chunk_files,
    file_stamp,
    strays,
    twins,
    verified_stamps,
    video_folders,
)
from pipeline.errors import StoreError
from pipeline.files import read_json, write_json_atomic
from pipeline.shapes import Fields, list_of, misfit, optional
from pipeline.store import QUARANTINE, DamagedChunk, chunk_keys, read_chunk
from pipeline.words import plural

log = logging.getLogger(__name__)

# What a done marker must hold to be read (:func:`missing_chunks`): the names of its chunks.
DONE_FIELDS: Fields = {
    "chunks": optional(list_of(lambda name: isinstance(name, str) and ChunkName.parse(name) is not None)),
}


@dataclass
class Committed:
    """What a video already has for one ``config_id``.

    Attributes:
        answered: frame_index → prompt_ids with a committed answer or frame error.
        failed: ``(frame_index, prompt_id)`` → the reason, for each committed frame error.
        video_error: The reason of a committed error record of the whole video, if any (the
            video could not be read; or, written before records named prompts, answers failed).
        prompt_errors: prompt_id → the reason of a committed error record of the video for
            the answers to that prompt that failed (:func:`answers_failed_by_prompt`).
    """

    answered: dict[int, set[str]] = field(default_factory=dict)
    failed: dict[tuple[int, str], str] = field(default_factory=dict)
    video_error: str | None = None
    prompt_errors: dict[str, str] = field(default_factory=dict)

    def holding_error(self, prompt_ids: Collection[str]) -> str | None:
        """The reason of an error record that keeps the video from a run asking ``prompt_ids``
        (``None``: none does): one of the whole video, or one of a prompt asked. A record of
        a prompt no longer asked holds nothing back: that prompt's failures are not this
        run's work."""
        if self.video_error is not None:
            return self.video_error
        return next((why for prompt_id, why in sorted(self.prompt_errors.items()) if prompt_id in prompt_ids), None)


def error_files(output_dir: Path, video_id: str, config_id: str) -> list[Path]:
    """A video's error files (its error records and frame errors) for ``config_id``."""
    return chunk_files(output_dir / video_id, config_id, kinds=("errors",))


def read_committed(
    output_dir: Path, video_id: str, config_id: str, move_damaged: bool = True, leave_out: Collection[Path] = ()
) -> Committed:
    """The keys already committed for a video under ``config_id``; the chunk files of
    ``leave_out`` are not read (error files that a retry replaces: their keys are asked again).

    A chunk file that is not whole (:func:`~pipeline.store.read_chunk`: damaged on disk, no
    file, or rows of another video) is moved aside (:func:`quarantine`; left where it is with
    ``move_damaged=False``, for a dry run): its keys count as missing, so the run does them again.
    """
    committed = Committed()
    for path in chunk_files(output_dir / video_id, config_id):
        if path in leave_out:
            continue
        try:
            table = read_chunk(path, ["frame_index", "prompt_id", "error"])
        except DamagedChunk as damage:
            if move_damaged:
                quarantine(output_dir, path, damage)
            continue
        for frame_index, prompt_id, reason in zip(*(c.to_pylist() for c in table.columns)):
            if frame_index is None and prompt_id is None:
                committed.video_error = reason
            elif frame_index is None:
                committed.prompt_errors[prompt_id] = reason
            else:
                committed.answered.setdefault(frame_index, set()).add(prompt_id)
                if reason is not None:
                    committed.failed[(frame_index, prompt_id)] = reason
    return committed


def verify_chunks(output_dir: Path, video_id: str, config_id: str) -> list[Path]:
    """Read in full (:func:`~pipeline.store.read_chunk`, page checksums checked) each of the
    video's chunk files for ``config_id`` that has not been read so since it last changed; move
    aside (:func:`quarantine`) those that are not whole, and, when a chunk was read anew, the
    twins (:func:`pipeline.chunks.twins`: a chunk holding keys that another holds, so that no
    key is read twice); return the chunks moved. The video's strays (a backup, a conflict
    copy) are moved aside too, each with a warning.

    A footer that reads says nothing of the pages before it: a chunk damaged inside would fail
    every later reader (``pd.read_parquet``, the report, the export). What was read whole is
    remembered in ``<video_id>/_verified.json`` by name, size, modification and change time,
    so each chunk is read once, and again only when it changes (a copy over it included).
    """
    folder = output_dir / video_id
    for stray in strays(folder):
        target = _move_aside(output_dir, stray)
        log.warning(
            "%s is not a chunk (no name a run writes: a copy or a backup?): moved to %s, out of the results; "
            "keep what you want of it outside output_dir", stray, target,
        )
    verified = verified_stamps(folder)
    current = {}
    moved = []
    for path in chunk_files(folder, config_id):
        try:
            stamp = file_stamp(path)
            if verified.get(path.name) != stamp:
                read_chunk(path)
        except (DamagedChunk, OSError) as error:
            quarantine(output_dir, path, error)
            moved.append(path)
            continue
        current[path.name] = stamp
    if any(verified.get(name) != stamp for name, stamp in current.items()):
        moved += _move_twins(output_dir, folder, config_id)
    still_there = {name: stamp for name, stamp in {**verified, **current}.items() if (folder / name).exists()}
    if still_there != verified:
        write_json_atomic(folder / VERIFIED_FILE, still_there)
    return moved


def _move_twins(output_dir: Path, folder: Path, config_id: str) -> list[Path]:
    """Move aside each chunk of ``folder`` under ``config_id`` that holds keys another holds
    (:func:`pipeline.chunks.twins`), with a log line naming both; return those moved."""
    keys = {}
    moved = []
    for path in chunk_files(folder, config_id):
        try:
            keys[path] = chunk_keys(read_chunk(path, ["frame_index", "prompt_id", "config_id"]))
        except DamagedChunk as error:  # changed since it was read whole a moment ago
            quarantine(output_dir, path, error)
            moved.append(path)
    for twin, kept in twins(keys).items():
        target = _move_aside(output_dir, twin)
        log.warning(
            "chunk %s holds answers that %s also holds (a copy of it?): moved to %s, so that no answer is "
            "read twice; what it alone held counts as missing", twin, kept, target,
        )
        moved.append(twin)
    return moved


def missing_chunks(marker: Path) -> list[str] | None:
    """The chunk files a video's done marker (:func:`mark_done`) lists that are no longer in
    its folder (deleted by hand, or moved aside); ``None`` for a marker that lists none
    (written before markers did), or that does not read or fit :data:`DONE_FIELDS` (as one that
    lists none: a chunk name that is none, ``{"chunks": 5}``)."""
    done = read_json(marker) or {}
    listed = None if misfit(done, DONE_FIELDS) else done.get("chunks")
    if not listed:
        return None
    return [name for name in listed if not (marker.parent / name).exists()]


def quarantine(output_dir: Path, path: Path, error: Exception) -> Path:
    """Move a damaged chunk file aside (:func:`_move_aside`), with a log line naming it.

    Raises:
        StoreError: It cannot be moved.
    """
    target = _move_aside(output_dir, path)
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    log.warning("damaged chunk %s (%s) moved to %s; its rows will be made again", path, reason, target)
    return target


def _move_aside(output_dir: Path, path: Path) -> Path:
    """Move a file of a video's folder to ``output_dir/_quarantine/<video_id>/`` (out of the
    data: readers skip folders that start with ``_``), under a name nothing there has yet
    (``<name>.2``, ...: nothing moved aside is ever replaced); return where it went.

    Raises:
        StoreError: It cannot be moved.
    """
    target = output_dir / QUARANTINE / path.parent.name / path.name
    copies = 1
    while os.path.lexists(target):
        copies += 1
        target = target.with_name(f"{path.name}.{copies}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    except OSError as move_error:
        raise StoreError(
            f"cannot move {path} aside to {target}: {move_error.strerror or move_error}; "
            "move it out of output_dir by hand and run again"
        ) from move_error
    return target


def remove_error_records(output_dir: Path, video_id: str, config_id: str) -> int:
    """Delete a video's error files for ``config_id``, records that are no longer true (its path
    reads again, holds other content, or is gone); returns how many. A retry's old records go
    later, with its first write (:attr:`pipeline.plan.VideoTask.retired`)."""
    files = error_files(output_dir, video_id, config_id)
    for path in files:
        path.unlink()
    return len(files)


def video_failures_by_path(output_dir: Path, config_id: str) -> dict[str, list[str]]:
    """The videos that failed as a whole under ``config_id`` (an error record, no frame), by the
    path their record names: ``video_path`` → the ``video_id`` of each. Error files that do not read
    are left out (:func:`verify_chunks` deals with them when their video comes up)."""
    failed: dict[str, list[str]] = {}
    paths = [path for folder in video_folders(output_dir) for path in error_files(output_dir, folder.name, config_id)]
    for path in paths:
        try:
            rows = read_chunk(path, ["video_path", "frame_index"]).to_pylist()
        except DamagedChunk:
            continue
        for row in rows:
            if row["frame_index"] is None and path.parent.name not in failed.get(row["video_path"], []):
                failed.setdefault(row["video_path"], []).append(path.parent.name)
    return failed


def answers_failed(failed: dict[tuple[int, str], str]) -> str:
    """The words of a video's error record for its answers that failed (``(frame_index,
    prompt_id)`` → reason): how many frames, and the first failure."""
    (frame_index, _), reason = min(failed.items())
    frames = {frame for frame, _ in failed}
    return f"{plural(len(frames), 'frame')} failed, the first (frame {frame_index}): {reason}"


def answers_failed_by_prompt(failed: dict[tuple[int, str], str]) -> dict[str, str]:
    """prompt_id → the words of the video's error record for that prompt (:func:`answers_failed`
    of its answers): one record per prompt, so that a night that no longer asks a prompt is not
    held back by its failures (:meth:`Committed.holding_error`)."""
    prompts = sorted({prompt_id for _, prompt_id in failed})
    return {p: answers_failed({key: why for key, why in failed.items() if key[1] == p}) for p in prompts}


def done_marker(output_dir: Path, video_id: str, work_id: str) -> Path:
    """The file whose presence says a video's work ``work_id`` is complete."""
    return output_dir / video_id / f"_done-{work_id}"


def mark_done(output_dir: Path, video_id: str, work_id: str, config_id: str, summary: dict[str, Any]) -> None:
    """Write the completion marker (atomically), after every chunk of the video is committed:
    ``summary`` and the names of the video's chunk files for ``config_id`` (the marker vouches
    for them: see :func:`missing_chunks`).

    Raises:
        StoreError: It cannot be written.
    """
    chunks = [path.name for path in chunk_files(output_dir / video_id, config_id)]
    write_json_atomic(done_marker(output_dir, video_id, work_id), {**summary, "chunks": chunks})
