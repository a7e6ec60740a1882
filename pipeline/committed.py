"""What a video has committed under a ``config_id``, and whether it is still intact: the keys
read back, chunks read in full once (``<video_id>/_verified.json``), damaged chunks moved aside
(``output_dir/_quarantine/<video_id>/``), and the done markers that list the chunks they vouch
for. The files themselves are written and named by :mod:`pipeline.store`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StoreError
from pipeline.files import check_file, read_json, write_json_atomic
from pipeline.store import QUARANTINE, ChunkName
from pipeline.words import plural

log = logging.getLogger(__name__)

VERIFIED_FILE = "_verified.json"


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


def chunk_files(output_dir: Path, video_id: str, config_id: str) -> list[Path]:
    """A video's committed chunk files (answers, then error records) for ``config_id``."""
    folder = output_dir / video_id
    return [path for kind in ChunkName.KINDS for path in sorted(folder.glob(ChunkName.pattern(kind, config_id)))]


def error_files(output_dir: Path, video_id: str, config_id: str) -> list[Path]:
    """A video's error files (its error records and frame errors) for ``config_id``."""
    return sorted((output_dir / video_id).glob(ChunkName.pattern("errors", config_id)))


def read_committed(
    output_dir: Path, video_id: str, config_id: str, move_damaged: bool = True, leave_out: Collection[Path] = ()
) -> Committed:
    """The keys already committed for a video under ``config_id``; the chunk files of
    ``leave_out`` are not read (error files that a retry replaces: their keys are asked again).

    A chunk file that does not read (damaged on disk, or no file: a named pipe) is moved aside
    (:func:`quarantine`; left where it is with ``move_damaged=False``, for a dry run): its keys
    count as missing, so the run does them again.
    """
    committed = Committed()
    for path in chunk_files(output_dir, video_id, config_id):
        if path in leave_out:
            continue
        try:
            check_file(path)
            table = pq.read_table(path, columns=["frame_index", "prompt_id", "error"])
        except (pa.ArrowException, OSError) as damage:
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
    """Read in full each of the video's chunk files for ``config_id`` that has not been read so
    since it last changed, page checksums checked (a chunk written before they were has none:
    it is checked by decoding every page); move aside (:func:`quarantine`) those that do not
    read, and return them.

    A footer that reads says nothing of the pages before it: a chunk damaged inside would fail
    every later reader (``pd.read_parquet``, the report, the export). What was read whole is
    remembered in ``<video_id>/_verified.json`` by name, size, modification and change time,
    so each chunk is read once, and again only when it changes.
    """
    record = output_dir / video_id / VERIFIED_FILE
    verified = read_json(record) or {}
    current = {}
    damaged = []
    for path in chunk_files(output_dir, video_id, config_id):
        try:
            info = path.stat()
            stamp = [info.st_size, info.st_mtime_ns, info.st_ctime_ns]
            if verified.get(path.name) != stamp:
                _read_whole(path)
        except (pa.ArrowException, OSError) as error:
            quarantine(output_dir, path, error)
            damaged.append(path)
            continue
        current[path.name] = stamp
    still_there = {name: stamp for name, stamp in verified.items() if (record.parent / name).exists()}
    if {**still_there, **current} != verified:
        write_json_atomic(record, {**still_there, **current})
    return damaged


def _read_whole(path: Path) -> None:
    """Decode every page of a Parquet file (checking page checksums where it has them).

    Raises:
        pyarrow.ArrowException, OSError: It does not read, or is no file (a named pipe).
    """
    check_file(path)
    parquet = pq.ParquetFile(path, page_checksum_verification=True)
    for group in range(parquet.num_row_groups):
        parquet.read_row_group(group)


def missing_chunks(marker: Path) -> list[str]:
    """The chunk files a video's done marker (:func:`mark_done`) lists that are no longer in
    its folder (deleted by hand, or moved aside as damaged); none for a marker that lists none
    (written before markers did)."""
    listed = (read_json(marker) or {}).get("chunks") or []
    return [name for name in listed if isinstance(name, str) and not (marker.parent / name).exists()]


def quarantine(output_dir: Path, path: Path, error: Exception) -> Path:
    """Move a damaged chunk file to ``output_dir/_quarantine/<video_id>/`` (out of the data:
    readers skip folders that start with ``_``), with a log line naming it.

    Raises:
        StoreError: It cannot be moved.
    """
    target = output_dir / QUARANTINE / path.parent.name / path.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    except OSError as move_error:
        raise StoreError(
            f"cannot move the damaged chunk {path} to {target}: {move_error.strerror or move_error}; "
            "move or delete it by hand and run again"
        ) from move_error
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    log.warning("damaged chunk %s (%s) moved to %s; its rows will be made again", path, reason, target)
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
    for path in output_dir.glob(f"*/{ChunkName.pattern('errors', config_id)}"):
        try:
            check_file(path)
            rows = pq.read_table(path, columns=["video_path", "frame_index"]).to_pylist()
        except (pa.ArrowException, OSError):
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
    chunks = [path.name for path in chunk_files(output_dir, video_id, config_id)]
    write_json_atomic(done_marker(output_dir, video_id, work_id), {**summary, "chunks": chunks})
