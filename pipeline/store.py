"""Store stage: the one place that knows the Parquet schema, writes it and reads it back.

Results live in ``output_dir`` as Parquet chunk files under one folder per video::

    output_dir/<video_id>/part-<config_id>-<time>-<random>.parquet     answers (status ok)
    output_dir/<video_id>/errors-<config_id>-<time>-<random>.parquet   error records
    output_dir/<video_id>/_done-<work_id>                              the video is complete
    output_dir/_quarantine/<video_id>/...                               damaged chunks, moved aside

Per-video facts (duration, frame rate, size, codec, frames decoded) go to
``output_dir/<video_id>/_video.json`` when a video is decoded, and every run that decoded
something gathers them into ``output_dir/_videos.parquet`` (one row per video).

Every file is written by :func:`write_atomic`: under a hidden temporary name in its folder,
flushed to disk and renamed into place, so a reader (``pd.read_parquet(output_dir)``) never
sees a half-written file, even mid-run, and a killed run loses at most the chunk it was
writing. The unit of work is the key
``(video_id, frame_index, prompt_id, config_id)``; a re-run reads the committed keys back and
does only what is missing. Bookkeeping files start with ``_`` or ``.``, which Parquet readers
skip.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StoreError

if TYPE_CHECKING:  # pandas loads only where results are read back, not on a run's start
    import pandas as pd

log = logging.getLogger(__name__)

QUARANTINE = "_quarantine"


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One answer to one prompt about one frame, or one error record (a video that failed:
    the frame and answer fields keep their empty defaults)."""

    video_path: str
    video_id: str
    frame_index: int | None = None
    timestamp_s: float | None = None
    timecode: str | None = None
    prompt_id: str | None = None
    prompt: str | None = None
    answer: str | None = None
    model: str
    status: str
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    sample_reason: str | None = None
    shot_index: int | None = None
    config_id: str
    thumbnail: bytes | None = None
    shot_start_s: float | None = None
    duplicate_of: int | None = None
    finish_reason: str | None = None


SCHEMA = pa.schema(
    [
        ("video_path", pa.string()),
        ("video_id", pa.string()),
        ("frame_index", pa.int64()),
        ("timestamp_s", pa.float64()),
        ("timecode", pa.string()),
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("answer", pa.string()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_ms", pa.float64()),
        ("sample_reason", pa.string()),
        ("shot_index", pa.int64()),
        ("config_id", pa.string()),
        ("thumbnail", pa.binary()),
        ("shot_start_s", pa.float64()),
        ("duplicate_of", pa.int64()),
        ("finish_reason", pa.string()),
    ]
)
assert SCHEMA.names == [f.name for f in fields(ResultRow)]


VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("video_path", pa.string()),
        ("size_bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("codec", pa.string()),
        ("fourcc", pa.string()),
        ("frame_count", pa.int64()),
        ("frames_decoded", pa.int64()),
        ("last_frame_s", pa.float64()),
        ("decoded_at", pa.string()),
    ]
)

VIDEO_FACTS_FILE = "_video.json"
VIDEOS_TABLE = "_videos.parquet"


def prepare_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` and check that it can be written.

    Raises:
        StoreError: It cannot be created or written.
    """
    path = Path(output_dir).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise StoreError(
            f"output_dir {path} is not writable ({error.strerror or error}); "
            "choose another output_dir or fix its permissions"
        ) from error
    return path


def write_chunk(
    output_dir: Path, video_id: str, kind: str, config_id: str, rows: list[ResultRow],
    metadata: dict[str, Any],
) -> Path:
    """Commit rows as a new chunk file ``output_dir/<video_id>/<kind>-<config_id>-....parquet``.

    Args:
        output_dir: The dataset folder.
        video_id: The video's id (its folder).
        kind: ``part`` for answers, ``errors`` for error records.
        config_id: The settings the rows were made with.
        rows: The rows.
        metadata: JSON-able values stored in the file's schema metadata (``pipeline.<key>``).

    Raises:
        StoreError: The file cannot be written (disk full, permissions); nothing partial stays.
    """
    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
    table = table.replace_schema_metadata(
        {f"pipeline.{key}": json.dumps(value, default=str) for key, value in metadata.items()}
    )
    name = f"{kind}-{config_id}-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    final = output_dir / video_id / f"{name}.parquet"
    try:
        write_atomic(final, lambda temporary: pq.write_table(table, temporary))
    except OSError as error:
        raise StoreError(
            f"cannot write {final}: {error.strerror or error}; committed results are intact, "
            "free space or fix the folder and run again to finish"
        ) from error
    return final


@dataclass
class Committed:
    """What a video already has for one ``config_id``.

    Attributes:
        answered: frame_index → prompt_ids with a committed answer or frame error.
        failed: ``(frame_index, prompt_id)`` → the reason, for each committed frame error.
        video_error: The reason of a committed video-level error record, if any.
    """

    answered: dict[int, set[str]] = field(default_factory=dict)
    failed: dict[tuple[int, str], str] = field(default_factory=dict)
    video_error: str | None = None


def chunk_files(output_dir: Path, video_id: str, config_id: str) -> list[Path]:
    """A video's committed chunk files (answers, then error records) for ``config_id``."""
    folder = output_dir / video_id
    return sorted(folder.glob(f"part-{config_id}-*.parquet")) + sorted(folder.glob(f"errors-{config_id}-*.parquet"))


def read_committed(output_dir: Path, video_id: str, config_id: str, move_damaged: bool = True) -> Committed:
    """The keys already committed for a video under ``config_id``.

    A chunk file that does not read (damaged on disk) is moved aside (:func:`quarantine`;
    left where it is with ``move_damaged=False``, for a dry run): its keys count as missing,
    so the run does them again.
    """
    committed = Committed()
    for path in chunk_files(output_dir, video_id, config_id):
        try:
            table = pq.read_table(path, columns=["frame_index", "prompt_id", "error"])
        except (pa.ArrowException, OSError) as damage:
            if move_damaged:
                quarantine(output_dir, path, damage)
            continue
        for frame_index, prompt_id, reason in zip(*(c.to_pylist() for c in table.columns)):
            if frame_index is None:
                committed.video_error = reason
            else:
                committed.answered.setdefault(frame_index, set()).add(prompt_id)
                if reason is not None:
                    committed.failed[(frame_index, prompt_id)] = reason
    return committed


def damaged_chunks(output_dir: Path, video_id: str, config_id: str) -> list[Path]:
    """Move aside the video's chunk files for ``config_id`` whose Parquet footer does not read
    (the check for a finished video, which is not read back); returns those moved."""
    damaged = []
    for path in chunk_files(output_dir, video_id, config_id):
        try:
            pq.read_metadata(path)
        except (pa.ArrowException, OSError) as error:
            quarantine(output_dir, path, error)
            damaged.append(path)
    return damaged


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


def remove_temporaries(output_dir: Path) -> int:
    """Delete the temporary files that :func:`write_atomic` left when its run was killed mid-write
    (call only while no other run writes to ``output_dir``); returns how many."""
    removed = 0
    for pattern in (".*.tmp", "*/.*.tmp"):
        for path in output_dir.glob(pattern):
            try:
                path.unlink()
            except OSError as error:
                log.warning("cannot remove %s: %s", path, error.strerror or error)
            else:
                removed += 1
    if removed:
        log.info("removed %d temporary files left by a killed run in %s", removed, output_dir)
    return removed


def remove_error_records(output_dir: Path, video_id: str, config_id: str) -> int:
    """Delete a video's error files for ``config_id`` (before retrying it); returns how many.

    Deleting first is safe: if the retry is killed, the work is simply missing and the next
    run does it.
    """
    files = list((output_dir / video_id).glob(f"errors-{config_id}-*.parquet"))
    for path in files:
        path.unlink()
    return len(files)


def done_marker(output_dir: Path, video_id: str, work_id: str) -> Path:
    """The file whose presence says a video's work ``work_id`` is complete."""
    return output_dir / video_id / f"_done-{work_id}"


def mark_done(output_dir: Path, video_id: str, work_id: str, summary: dict[str, Any]) -> None:
    """Write the completion marker (atomically), after every chunk of the video is committed.

    Raises:
        StoreError: It cannot be written.
    """
    write_json_atomic(done_marker(output_dir, video_id, work_id), summary)


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` with :func:`write_atomic`.

    Raises:
        StoreError: It cannot be written.
    """
    write_bytes_atomic(path, json.dumps(value, indent=2, default=str).encode())


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Make ``path`` appear whole or not at all, and survive a power cut once this returns.

    ``write`` writes the content to the file path it is given: a hidden temporary name in
    ``path``'s folder (created if missing). That file is fsynced, renamed over ``path``, and
    the folder fsynced so that the rename itself is on disk. Every file the pipeline writes
    goes through here.

    Raises:
        OSError: It cannot be written; the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """:func:`write_atomic` of ``data``, for readers such as a browser reloading a page or a
    player loading a track: they see the old file or the new one, never half of one.

    Raises:
        StoreError: It cannot be written.
    """
    try:
        write_atomic(path, lambda temporary: temporary.write_bytes(data))
    except OSError as error:
        raise StoreError(f"cannot write {path}: {error.strerror or error}") from error


def write_video_facts(output_dir: Path, video_id: str, video_path: str, facts: dict[str, Any]) -> None:
    """Record what a decode learnt about a video in ``output_dir/<video_id>/_video.json``.

    A record from a decode that read the video to its end is not replaced by one from a decode
    that stopped early (``max_frames``), which knows less.

    Args:
        facts: :class:`pipeline.decode.VideoFacts` as a dict (the columns of
            :data:`VIDEOS_SCHEMA` between ``video_path`` and ``decoded_at``).

    Raises:
        StoreError: It cannot be written.
    """
    path = output_dir / video_id / VIDEO_FACTS_FILE
    record = {
        "video_id": video_id,
        "video_path": video_path,
        **facts,
        "decoded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if facts.get("frames_decoded") is None:
        old = read_json(path)
        if old is not None and old.get("frames_decoded") is not None:
            return
    write_json_atomic(path, record)


def read_videos(output_dir: str | Path) -> pd.DataFrame:
    """One row per video of ``output_dir`` with its facts (see :data:`VIDEOS_SCHEMA`), read from
    the per-video records, so it is current even mid-run; ordered by ``video_path``.

    Videos captioned before this table existed have no row; their results are unaffected.
    """
    table = _videos_table(Path(output_dir))
    return table_to_pandas(table).sort_values("video_path", kind="stable").reset_index(drop=True)


def write_videos_table(output_dir: Path) -> Path | None:
    """Gather every video's facts into ``output_dir/_videos.parquet`` (atomically); best effort.

    Concurrent runs on one ``output_dir`` (shards) take turns through an ``flock`` on the folder,
    and each gathers after writing its own records, so the last one leaves a complete table.

    Returns:
        The path written, or ``None`` when it could not be written (a warning says why).
    """
    path = output_dir / VIDEOS_TABLE
    try:
        descriptor = os.open(output_dir, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            table = _videos_table(output_dir)
            write_atomic(path, lambda temporary: pq.write_table(table, temporary))
        finally:
            os.close(descriptor)  # closing drops the flock
    except OSError as error:
        log.warning("%s not written: %s", path, error.strerror or error)
        return None
    return path


def _videos_table(output_dir: Path) -> pa.Table:
    records = [
        record
        for path in sorted(output_dir.glob(f"*/{VIDEO_FACTS_FILE}"))
        if (record := read_json(path)) is not None
    ]
    rows = [{name: record.get(name) for name in VIDEOS_SCHEMA.names} for record in records]
    return pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _fsync(path: Path) -> None:
    """Flush a file's or folder's data and metadata to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_results(output_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """All result rows in ``output_dir`` as a DataFrame (empty, with the columns, if none).

    Integer columns load as pandas' nullable ``Int64``, so ``frame_index``, ``shot_index`` and
    ``duplicate_of`` stay integers where some rows are null (a plain ``pd.read_parquet`` turns
    them into floats).

    Args:
        output_dir: A run's ``output_dir``.
        columns: Read only these columns (e.g. leave out ``thumbnail``); default all.
    """
    files = sorted(p for p in Path(output_dir).glob("*/*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        table = SCHEMA.empty_table()
        table = table.select(columns) if columns is not None else table
    else:
        # schema=: files written before a column existed read it as null instead of dropping it.
        table = pq.ParquetDataset(files, schema=SCHEMA).read(columns=columns)
    return table_to_pandas(table)


def table_to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as a DataFrame whose integer columns are nullable ``Int64`` (not float)."""
    import pandas as pd

    def nullable_integers(arrow_type: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
        return pd.Int64Dtype() if pa.types.is_integer(arrow_type) else None

    return table.to_pandas(types_mapper=nullable_integers)


def read_metadata(parquet_file: str | Path) -> dict[str, Any]:
    """The ``pipeline.*`` schema metadata of one result file, decoded."""
    raw = pq.read_schema(parquet_file).metadata or {}
    return {
        key.decode().removeprefix("pipeline."): json.loads(value)
        for key, value in raw.items()
        if key.startswith(b"pipeline.")
    }


def read_configs(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The metadata (see :func:`read_metadata`) of each ``config_id`` in ``output_dir``, from its
    newest result file: the composed ``config``, ``model_files``, ``model_sha256`` and the
    package ``versions``."""
    newest: dict[str, tuple[int, Path]] = {}
    for path in Path(output_dir).glob("*/*.parquet"):
        parts = path.stem.split("-")
        if path.name.startswith((".", "_")) or len(parts) < 3 or not parts[2].isdigit():
            continue
        config_id, written_ns = parts[1], int(parts[2])
        if config_id not in newest or written_ns > newest[config_id][0]:
            newest[config_id] = (written_ns, path)
    configs = {}
    for config_id, (_, path) in sorted(newest.items()):
        try:
            configs[config_id] = read_metadata(path)
        except (OSError, ValueError, pa.ArrowException):
            continue
    return configs
