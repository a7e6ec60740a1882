"""Store stage: the one place that knows the Parquet schema, writes it and reads it back.

Results live in ``output_dir`` as Parquet files under one folder per video. Each file is
written under a hidden temporary name and renamed into place, so a reader
(``pd.read_parquet(output_dir)``) never sees a half-written file. Bookkeeping files start
with ``_`` or ``.``, which Parquet readers skip.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class ResultRow:
    """One answer to one prompt about one frame (or one error record)."""

    video_path: str
    video_id: str
    frame_index: Optional[int]
    timestamp_s: Optional[float]
    timecode: Optional[str]
    prompt_id: Optional[str]
    prompt: Optional[str]
    answer: Optional[str]
    model: str
    status: str
    error: Optional[str]
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    sample_reason: Optional[str]
    shot_index: Optional[int]


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
    ]
)
assert SCHEMA.names == [f.name for f in fields(ResultRow)]


class StoreError(Exception):
    """The output folder cannot be written; the message names it and the fix."""


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


def write_rows(
    output_dir: Path, video_id: str, part: str, rows: list[ResultRow], metadata: dict[str, Any]
) -> Path:
    """Write rows as ``output_dir/<video_id>/<part>.parquet``, atomically.

    Args:
        output_dir: The dataset folder.
        video_id: The video's id (its folder).
        part: File stem, unique within the video.
        rows: The rows.
        metadata: JSON-able values stored in the file's schema metadata (``pipeline.<key>``).

    Raises:
        StoreError: The file cannot be written (disk full, permissions); nothing partial stays.
    """
    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
    table = table.replace_schema_metadata(
        {f"pipeline.{key}": json.dumps(value, default=str) for key, value in metadata.items()}
    )
    folder = output_dir / video_id
    final = folder / f"{part}.parquet"
    temporary = folder / f".{part}.{uuid.uuid4().hex}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise StoreError(f"cannot write {final}: {error.strerror or error}") from error
    return final


def read_results(output_dir: str | Path) -> pd.DataFrame:
    """All result rows in ``output_dir`` as a DataFrame (empty, with the columns, if none)."""
    files = sorted(Path(output_dir).glob("*/*.parquet"))
    if not files:
        return SCHEMA.empty_table().to_pandas()
    return pq.ParquetDataset(files).read().to_pandas()


def read_metadata(parquet_file: str | Path) -> dict[str, Any]:
    """The ``pipeline.*`` schema metadata of one result file, decoded."""
    raw = pq.read_schema(parquet_file).metadata or {}
    return {
        key.decode().removeprefix("pipeline."): json.loads(value)
        for key, value in raw.items()
        if key.startswith(b"pipeline.")
    }
