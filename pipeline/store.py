"""Store stage: the one place that knows the Parquet schema, writes it and reads it back.

Results live in ``output_dir`` as Parquet chunk files under one folder per video::

    output_dir/<video_id>/part-<config_id>-<time>-<random>.parquet     answers (status ok)
    output_dir/<video_id>/errors-<config_id>-<time>-<random>.parquet   error records
    output_dir/<video_id>/_done-<work_id>                              the video is complete
    output_dir/<video_id>/_verified.json                               chunks read in full, unchanged since
    output_dir/_quarantine/<video_id>/...                               damaged chunks and strays, moved aside
    output_dir/_runs/<start>.json                                       each run's record (pipeline.summary)

(:mod:`pipeline.chunks` names the chunk files and says which files are chunks;
:mod:`pipeline.committed` reads back what a video has committed, verifies its chunks, moves
damaged ones and strays aside and writes the done markers.)

Per-video facts (duration, frame rate, size, codec, frames decoded) are
:mod:`pipeline.video_facts`'s.

Every file is written by :func:`pipeline.files.write_atomic`: under a hidden temporary name in its folder,
flushed to disk and renamed into place, so a reader (``pd.read_parquet(output_dir)``) never
sees a half-written file, even mid-run, and a killed run loses at most the chunk it was
writing. The unit of work is the key
``(video_id, frame_index, prompt_id, config_id)``; a re-run reads the committed keys back and
does only what is missing. Bookkeeping files start with ``_`` or ``.``, which Parquet readers
skip.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.chunks import (
    ChunkName,
    chunk_files,
    read_whole_since,
    result_files,
    strays,
    twins,
    verified_stamps,
    video_folders,
)
from pipeline.errors import StoreError
from pipeline.files import check_file, write_atomic
from pipeline.paths import cannot_write, in_the_way, room_or_rights, user_path

if TYPE_CHECKING:  # pandas loads only where results are read back, not on a run's start
    import pandas as pd

log = logging.getLogger(__name__)

# The folder of the runs' records (written by pipeline.summary): a folder holding it is one a run wrote to.
RUNS_DIR = "_runs"

QUARANTINE = "_quarantine"  # damaged chunks and strays, moved aside by pipeline.committed


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
    answer_json: str | None = None


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
        # A schema prompt's answer as compact JSON once it validated (the raw text stays in
        # ``answer``); null for plain prompts, answers cut or invalid, and older rows.
        ("answer_json", pa.string()),
    ]
)
assert SCHEMA.names == [f.name for f in fields(ResultRow)]
# Names a structured prompt's property may not take (pipeline.structured.check_schemas): the
# columns, and the one a reader adds beside them (the cue's end of pipeline.export).
RESERVED_NAMES = (*SCHEMA.names, "end_s")


def prepare_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` and check that it can be written.

    Raises:
        StoreError: It cannot be created or written: one line with what stands in the way (a
            file at its name or a parent's), or what it lacks (permissions, space), and the fix.
    """
    path = user_path(output_dir).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:  # what stands in the way is output_dir or above it: the user's to choose
        blocked = in_the_way(path)
        fix, reason = (None, blocked) if blocked else (room_or_rights(error, path), error.strerror or str(error))
        raise StoreError(
            f"output_dir {path} is not writable ({reason}); {f'{fix}, or ' if fix else ''}choose another output_dir"
        ) from error
    return path


def write_chunk(
    output_dir: Path, video_id: str, kind: str, config_id: str, rows: list[ResultRow],
    metadata: dict[str, Any], before_commit: Callable[[], object] | None = None,
) -> Path:
    """Commit rows as a new chunk file ``output_dir/<video_id>/<kind>-<config_id>-....parquet``,
    with a checksum per page (read back by :func:`pipeline.committed.verify_chunks`).

    Args:
        output_dir: The dataset folder.
        video_id: The video's id (its folder).
        kind: ``part`` for answers, ``errors`` for error records.
        config_id: The settings the rows were made with.
        rows: The rows.
        metadata: JSON-able values stored in the file's schema metadata (``pipeline.<key>``).
        before_commit: Called with the file written, just before it appears under its name;
            what it raises leaves nothing behind (the run's lock check).

    Raises:
        StoreError: The file cannot be written (disk full, permissions); nothing partial stays.
    """
    table = pa.Table.from_pylist([asdict(r) for r in rows], schema=SCHEMA)
    table = table.replace_schema_metadata(
        {f"pipeline.{key}": json.dumps(value, default=str) for key, value in metadata.items()}
    )
    final = output_dir / video_id / ChunkName.new(kind, config_id).file_name
    try:
        write_atomic(
            final, lambda temporary: pq.write_table(table, temporary, write_page_checksum=True), before_commit
        )
    except OSError as error:
        line = cannot_write(final, error)
        raise StoreError(f"{line} (committed results are intact: the next run does the rest)") from error
    return final


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


def results_folder(output_dir: str | Path) -> Path:
    """``output_dir`` as an absolute path, once it is known to be a folder a run wrote to.

    Raises:
        FileNotFoundError: It is not a folder, or no run wrote to it (neither a run record nor
            a result chunk): a mistyped path reads as no results, not as an empty night.
    """
    path = user_path(output_dir).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"output_dir {path} is not a folder; run the pipeline first or pass its output_dir")
    if not (path / RUNS_DIR).is_dir() and not result_files(path):
        raise FileNotFoundError(
            f"output_dir {path} holds no run of the pipeline (no {RUNS_DIR}/ folder, no result "
            "chunks); run the pipeline first or pass its output_dir"
        )
    return path


class DamagedChunk(Exception):
    """A chunk file that is not whole (:func:`read_chunk`); the message says why."""


_OWNERS = ("video_id", "config_id")  # whose rows a chunk holds: its folder's and its name's
_KEY = ("frame_index", "prompt_id", "config_id")  # a row's key within its video's folder
_STRAY = "not a chunk (no name a run writes: a copy or a backup?)"
_STRAY_FIX = "(keep what you want of it outside output_dir: a plain pd.read_parquet(output_dir) reads every file)"


def read_chunk(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One chunk file read back whole, as the night and every reader read it: its page
    checksums checked (a chunk written before it had them: every page read decoded), and
    every row of its folder's video and of its name's ``config_id`` (a chunk copied in from
    another video's folder holds none of this video's keys). A column the file predates reads
    as null.

    Args:
        path: A chunk file (:func:`pipeline.chunks.chunk_files`).
        columns: Read only these (default all).

    Raises:
        DamagedChunk: It does not read so, or is no file (a named pipe).
    """
    wanted = None if columns is None else list(dict.fromkeys([*columns, *_OWNERS]))
    try:
        check_file(path)  # a named pipe named like a chunk would block pyarrow's open for ever
        table = pq.read_table(path, columns=wanted, schema=SCHEMA, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as error:
        why = (str(error).splitlines() or [type(error).__name__])[0].split(f"'{path}': ")[-1]
        raise DamagedChunk(why) from error
    name = ChunkName.parse(path.name)
    for column, owner in zip(_OWNERS, (path.parent.name, name.config_id if name else None)):
        # null: a file written before the column existed (an older version's rows without config_id)
        others = sorted(str(value) for value in set(table.column(column).to_pylist()) - {owner, None})
        if others:
            raise DamagedChunk(f"it holds rows of {column} {others[0]}, not {owner}: copied in from elsewhere?")
    return table if columns is None else table.select(columns)


def chunk_keys(table: pa.Table) -> set[tuple[Any, ...]]:
    """The keys of a chunk's rows within its video (:func:`read_chunk` of at least the
    ``frame_index``, ``prompt_id`` and ``config_id`` columns)."""
    return set(zip(*(table.column(column).to_pylist() for column in _KEY)))


def read_results(
    output_dir: str | Path, columns: list[str] | None = None, damaged: list[tuple[Path, str]] | None = None
) -> pd.DataFrame:
    """All result rows in ``output_dir`` as a DataFrame (empty, with the columns, if none),
    each key once.

    Integer columns load as pandas' nullable ``Int64``, so ``frame_index``, ``shot_index`` and
    ``duplicate_of`` stay integers where some rows are null (a plain ``pd.read_parquet`` turns
    them into floats).

    Only chunks are read (:mod:`pipeline.chunks`), each whole (:func:`read_chunk`), as the
    night reads them: all of it, unless the night read it whole and it has not changed since
    (:func:`pipeline.chunks.verified_stamps`). Left out, and the rest read: a chunk that is not whole (damaged on disk),
    a chunk holding keys that another holds (:func:`pipeline.chunks.twins`) and anything else
    in a video's folder (a stray). A run over the video moves each aside and does its frames
    again (:mod:`pipeline.committed`); a reader changes nothing.

    Args:
        output_dir: A run's ``output_dir``.
        columns: Read only these columns (e.g. leave out ``thumbnail``); default all.
        damaged: Where to add each file left out as ``(path, why)``; without it, each is a
            WARNING that names it and the fix.
    """
    wanted = None if columns is None else list(dict.fromkeys([*columns, *_KEY]))
    tables = []
    left_out: list[tuple[Path, str, str]] = []  # path, why, what a run over its video does
    for folder in video_folders(Path(output_dir)):
        left_out += [(path, _STRAY, _STRAY_FIX) for path in strays(folder)]
        read = {}
        verified = verified_stamps(folder)
        for path in chunk_files(folder):
            try:
                table = read_chunk(path, wanted if read_whole_since(path, verified) else None)
                read[path] = table if wanted is None else table.select(wanted)
            except DamagedChunk as error:
                left_out.append((path, f"damaged ({error})", "and captions those frames again"))
        for twin, kept in twins({path: chunk_keys(table) for path, table in read.items()}).items():
            del read[twin]
            why = f"holds answers that {kept} also holds (a copy of it?)"
            left_out.append((twin, why, "and captions again what it alone holds"))
        tables += [table.select(columns) if columns is not None else table for table in read.values()]
    for path, why, fix in left_out:
        if damaged is not None:
            damaged.append((path, why))
            continue
        log.warning(
            "%s: %s, left out of what is read; a run over its video (video_id %s) moves it to %s/ %s",
            path, why, path.parent.name, QUARANTINE, fix,
        )
    if not tables:
        tables = [SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)]
    return table_to_pandas(pa.concat_tables(tables))


def table_to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as a DataFrame whose integer columns are nullable ``Int64`` (not float)."""
    import pandas as pd

    def nullable_integers(arrow_type: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
        return pd.Int64Dtype() if pa.types.is_integer(arrow_type) else None

    return table.to_pandas(types_mapper=nullable_integers)


def read_metadata(parquet_file: str | Path) -> dict[str, Any]:
    """The ``pipeline.*`` schema metadata of one result file, decoded (``OSError``: it cannot be
    read, or is no file: :func:`pipeline.files.check_file`)."""
    check_file(Path(parquet_file))
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
    for path in result_files(Path(output_dir)):
        name = ChunkName.parse(path.name)
        if name is None:
            continue
        if name.config_id not in newest or name.written_ns > newest[name.config_id][0]:
            newest[name.config_id] = (name.written_ns, path)
    configs = {}
    for config_id, (_, path) in sorted(newest.items()):
        try:
            configs[config_id] = read_metadata(path)
        except (OSError, ValueError, pa.ArrowException):
            continue
    return configs


def read_prompts(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every prompt asked in ``output_dir`` (``prompt_id``, ``text``, ``schema``), once each, in
    the order first asked: the chunk files by the time they were written, each one's prompts in
    the order its run asked them (files older than that record hold none)."""
    asked: dict[str, dict[str, Any]] = {}
    for path in sorted(result_files(Path(output_dir)), key=_written_ns):
        try:
            check_file(path)
            recorded = (pq.read_schema(path).metadata or {}).get(b"pipeline.prompts")
            prompts = json.loads(recorded) if recorded else []
        except (OSError, ValueError, pa.ArrowException):
            continue
        for prompt in prompts if isinstance(prompts, list) else []:
            if isinstance(prompt, dict) and "prompt_id" in prompt:
                asked.setdefault(str(prompt["prompt_id"]), prompt)
    return list(asked.values())


def _written_ns(path: Path) -> float:
    name = ChunkName.parse(path.name)
    return name.written_ns if name is not None else float("inf")


def read_prompt_schemas(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each schema prompt answered in ``output_dir``, by ``prompt_id``
    (:func:`read_prompts`; a ``prompt_id`` covers its schema, so every file that has it agrees)."""
    return prompt_schemas(read_prompts(output_dir))


def prompt_order(prompts: list[dict[str, Any]]) -> list[str]:
    """The ``prompt_id`` of each of ``prompts`` (:func:`read_prompts`), in the order first asked."""
    return [str(prompt["prompt_id"]) for prompt in prompts]


def prompt_schemas(prompts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each schema prompt of ``prompts`` (:func:`read_prompts`), by ``prompt_id``."""
    return {str(prompt["prompt_id"]): prompt["schema"] for prompt in prompts if isinstance(prompt.get("schema"), dict)}
