"""Per-video facts: what a decode learnt of each video (duration, frame rate, size, codec, frames
decoded), kept in ``output_dir/<video_id>/_video.json`` when the video is decoded and gathered by
every run that decoded something into ``output_dir/_videos.parquet`` (one row per video)."""

from __future__ import annotations

import fcntl
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.files import read_json, write_atomic, write_json_atomic
from pipeline.paths import cannot_write
from pipeline.shapes import Check, Fields, count, misfit, number, optional, text
from pipeline.store import table_to_pandas

log = logging.getLogger(__name__)

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

# What a ``_video.json`` must hold to be read (:func:`_facts_of`): each column's type, a count or
# a time >= 0; the video's id and path (and the id its folder's name).
_CHECKS: dict[pa.DataType, Check] = {pa.string(): text, pa.int64(): count, pa.float64(): number}
FACTS_FIELDS: Fields = {
    **{column.name: optional(_CHECKS[column.type]) for column in VIDEOS_SCHEMA},
    "video_id": text,
    "video_path": text,
}
# The records found not to fit, said once a process.
_SKIPPED: set[Path] = set()


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
        old, _ = _facts_of(path)
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
        log.warning("the table of videos is not written: %s", cannot_write(path, error))
        return None
    return path


def _videos_table(output_dir: Path) -> pa.Table:
    """Every video's facts, one row each. A ``_video.json`` that does not read, or does not fit
    :data:`FACTS_FIELDS`, is left out, with one warning naming it (once a process)."""
    records, skipped = [], []
    for path in sorted(output_dir.glob(f"*/{VIDEO_FACTS_FILE}")):
        record, why = _facts_of(path)
        if record is not None:
            records.append(record)
        elif why is not None and path not in _SKIPPED:
            skipped.append(f"{path} ({why})")
            _SKIPPED.add(path)
    if skipped:
        log.warning("not a video's record, skipped: %s; move or rename %s (the next decode of the video "
                    "writes it again)", ", ".join(skipped), "it" if len(skipped) == 1 else "them")
    rows = [{name: record.get(name) for name in VIDEOS_SCHEMA.names} for record in records]
    return pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)


def _facts_of(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The record of ``path`` where it fits :data:`FACTS_FIELDS`, else ``None`` and why (``None``
    too where there is no file to read)."""
    record = read_json(path)
    if record is None:
        return None, "not a JSON object" if path.is_file() else None
    why = misfit(record, FACTS_FIELDS)
    if why is None and record["video_id"] != path.parent.name:
        why = f"video_id is {record['video_id']!r}, not its folder's"
    return (record, None) if why is None else (None, why)
