"""Looking at results with pandas: loading an ``output_dir`` and the questions people ask of it.

Used by ``notebooks/analyze_captions.ipynb`` and the HTML report (:mod:`pipeline.report`)::

    from pipeline.results import load_results, video_summary
    df = load_results("data/output")
    video_summary(df)

Rows are those of :data:`pipeline.store.SCHEMA`; ``thumbnail`` holds JPEG bytes (see
:mod:`pipeline.thumbnails`) or null. A row with no ``frame_index`` is a video-level error
record (the video could not be opened or decoded), not an answer.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.paths import user_path
from pipeline.store import read_prompt_schemas, read_results, results_folder
from pipeline.structured import (
    COLUMN_DTYPES,
    canonical_json,
    column_dtypes,
    column_kinds,
    json_value,
    property_choices,
    typed_value,
)
from pipeline.thumbnails import decode_thumbnail
from pipeline.video_facts import read_videos
from pipeline.words import visible

log = logging.getLogger(__name__)

THUMBNAIL = "thumbnail"
# How a schema prompt's answer ended: complete and valid, cut at max_tokens, or not valid.
FINISH_REASONS = ("stop", "length", "invalid")

SUMMARY_COLUMNS = [
    "video_path",
    "frames",
    "prompts",
    "ok_rows",
    "error_rows",
    "cut_answers",
    "prompt_tokens",
    "completion_tokens",
    "latency_mean_ms",
    "latency_p95_ms",
]

# What the report and the exports call the settings of rows whose file holds no config_id
# (written before it was kept).
NO_CONFIG_ID = "not recorded"


def config_label(config_id: Any) -> str:
    """A row's ``config_id`` as pages and tracks name it; rows of a file that holds none have
    :data:`NO_CONFIG_ID`."""
    return NO_CONFIG_ID if pd.isna(config_id) else str(config_id)


COVERAGE_COLUMNS = [
    "video_path",
    "duration_s",
    "frames_decoded",
    "frames_sampled",
    "sampled_share",
    "mean_gap_s",
    "max_gap_s",
]

FRAME_COLUMNS = [
    "video_path",
    "video_id",
    "config_id",
    "frame_index",
    "timecode",
    "timestamp_s",
    "latency_ms",
    "answers",
    "completion_tokens",
    "ms_per_token",
    THUMBNAIL,
]


def load_results(output_dir: str | Path) -> pd.DataFrame:
    """Every result row in ``output_dir``, by video and time (a video's error records last):
    each key once, read from whole chunks only, as a night reads them
    (:func:`pipeline.store.read_results`: a WARNING names each file left out).

    Args:
        output_dir: A run's ``output_dir``.

    Returns:
        One row per answer or error record; always has a ``thumbnail`` column (all null for
        runs made without thumbnails) and an ``answer_json`` column. Beside them, one typed
        column per top-level property of the prompts' schemas (:func:`typed_answers`), so
        that ``df[(df.people > 2) & df.outdoor]`` needs no casting.

    Raises:
        FileNotFoundError: ``output_dir`` is not a folder, or a folder no run wrote to (neither
            a run record nor a result chunk): a mistyped path reads as no results, not as an
            empty night.
    """
    path = results_folder(output_dir)
    df = typed_answers(read_results(path), read_prompt_schemas(path))
    order = ["video_path", "timestamp_s", "frame_index"]
    return df.sort_values(order, kind="stable").reset_index(drop=True)


def load_schemas(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each schema prompt answered in ``output_dir``, by ``prompt_id`` (for
    :func:`schema_summary`)."""
    return read_prompt_schemas(user_path(output_dir))


def typed_answers(df: pd.DataFrame, schemas: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """``df`` with a column per top-level property of ``schemas`` that has a plain type
    (:func:`pipeline.structured.column_dtypes`: integer → ``Int64``, number → ``Float64``,
    boolean → ``boolean``, string or an enum of strings → ``string``), read from
    ``answer_json``; null on the rows of other prompts and where an answer has no value.

    A property that schemas of different nights type apart (:func:`pipeline.structured.column_kinds`:
    an integer in one, an array, a mix of types or no type in another), or that is named like a
    column ``df`` has, gets no column (one WARNING log line per call names them all): its values stay
    in ``answer_json``.

    Args:
        df: Result rows (:func:`pipeline.store.read_results`).
        schemas: ``prompt_id`` → its schema.
    """
    columns: dict[str, tuple[str, set[str]]] = {}  # property → (what it loads as, prompt_ids)
    clashes = set()
    for prompt_id, schema in schemas.items():
        for name, kind in column_kinds(schema).items():
            known = columns.setdefault(name, (kind, set()))
            if {known[0], kind} & COLUMN_DTYPES and (known[0] != kind or name in df.columns):
                clashes.add(name)
            known[1].add(prompt_id)
    columns = {name: known for name, known in columns.items() if known[0] in COLUMN_DTYPES}
    if clashes:
        log.warning(
            "no column for %s %s of the answers' schemas (typed apart by different prompts, or named like a result "
            "column): the values stay in answer_json", "property" if len(clashes) == 1 else "properties",
            ", ".join(repr(name) for name in sorted(clashes)),
        )
    values = df["answer_json"].map(json_value)
    typed = {}
    for name, (dtype, prompt_ids) in columns.items():
        if name in clashes:
            continue
        mine = df["prompt_id"].isin(prompt_ids)
        given = [value.get(name) if ok and isinstance(value, dict) else None for ok, value in zip(mine, values)]
        cells = [typed_value(value, dtype) for value in given]
        unfit = sum(value is not None and cell is None for value, cell in zip(given, cells))
        if unfit:
            log.warning(
                "property %r has %d %s not fit its %s column (an integer beyond 64 bits, a number beyond a "
                "float's range): null there, kept in answer_json",
                name, unfit, "value that does" if unfit == 1 else "values that do", dtype,
            )
        typed[name] = pd.array(cells, dtype=dtype)
    # Not df.assign(**typed): a property named "self" is that method's own first parameter.
    return pd.concat([df, pd.DataFrame(typed, index=df.index)], axis=1) if typed else df


@dataclass(frozen=True)
class SchemaSummary:
    """What the answers to schema prompts say, per prompt and settings (:func:`schema_summary`).

    A prompt answered under several settings (``config_id``: another model, other generation
    settings) gets a row per settings: their answers are never blended.

    Attributes:
        outcomes: One row per schema prompt and settings that answered it (index ``prompt_id``,
            ``config_id``): ``prompt``, ``model`` (the rows' ``model``), ``answers`` (ok rows)
            and the share of them that ended ``stop`` (complete and valid), ``length`` (cut at
            ``generation.max_tokens``) and ``invalid`` (ended, not valid).
        counts: How often each value came: ``prompt_id``, ``config_id``, ``prompt``,
            ``property``, ``value``, ``count``, for boolean properties (``True``, ``False``),
            enums and consts, of one type or mixed: every value the schema allows, in its order,
            ``None`` among them where it allows null (an answer that gives the property as null),
            0 where none came. Values match as JSON does: ``true`` is not ``1``, ``1.0`` is ``1``.
        ranges: ``prompt_id``, ``config_id``, ``prompt``, ``property``, ``values`` (answers with
            one), ``min``, ``median``, ``max``, for integer and number properties.
    """

    outcomes: pd.DataFrame
    counts: pd.DataFrame
    ranges: pd.DataFrame

    def of(self, prompt_id: str, config_id: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The ``counts`` and ``ranges`` rows of one row of ``outcomes``: a null ``config_id``
        (rows of a file that holds none) is a settings of its own, matched as null."""
        counts, ranges = (
            table[table["prompt_id"].eq(prompt_id) & _same_key(table["config_id"], config_id)]
            for table in (self.counts, self.ranges)
        )
        return counts, ranges


def _same_key(column: pd.Series, key: Any) -> pd.Series:
    """Where ``column`` holds ``key``, a null ``key`` matching the nulls (``==`` matches none):
    what a ``groupby(..., dropna=False)`` puts in one group."""
    return column.isna() if pd.isna(key) else column.eq(key).fillna(False).astype(bool)


def schema_summary(df: pd.DataFrame, schemas: Mapping[str, Mapping[str, Any]]) -> SchemaSummary:
    """Per schema prompt and settings (``config_id``): how its answers ended, counts for its
    booleans, enums and consts, min, median and max for its numbers.

    Args:
        df: Rows from :func:`load_results` (with the typed columns).
        schemas: ``prompt_id`` → schema (:func:`load_schemas`).
    """
    ok = df[df["status"].eq("ok")]
    outcomes: list[dict[str, Any]] = []
    counted: list[dict[str, Any]] = []
    ranges: list[dict[str, Any]] = []
    for prompt_id, schema in schemas.items():
        choices = property_choices(schema)
        numeric = [name for name, dtype in column_dtypes(schema).items() if dtype in ("Int64", "Float64")]
        for config_id, rows in ok[ok["prompt_id"].eq(prompt_id)].groupby("config_id", dropna=False):
            key = {"prompt_id": prompt_id, "config_id": config_id, "prompt": rows["prompt"].iloc[0]}
            finish = rows["finish_reason"].value_counts()
            outcomes.append(
                {**key, "model": ", ".join(sorted(rows["model"].dropna().unique())), "answers": len(rows),
                 **{reason: finish.get(reason, 0) / len(rows) for reason in FINISH_REASONS}}
            )
            answers = rows["answer_json"].map(json_value)
            for name, values in choices.items():
                found = Counter(_json_key(answer[name]) for answer in answers
                                if isinstance(answer, dict) and name in answer)
                counted.extend({**key, "property": name, "value": value, "count": found.get(_json_key(value), 0)}
                               for value in values)
            for name in numeric:
                if name in choices or name not in rows.columns:
                    continue  # counted; or typed apart by another night's schema: see typed_answers
                numbers = rows[name].dropna().astype(float)
                ranges.append({**key, "property": name, "values": len(numbers),
                               "min": numbers.min(), "median": numbers.median(), "max": numbers.max()})
    keys = ["prompt_id", "config_id", "prompt"]
    return SchemaSummary(
        outcomes=pd.DataFrame(outcomes, columns=[*keys, "model", "answers", *FINISH_REASONS]).set_index(
            ["prompt_id", "config_id"]
        ),
        counts=pd.DataFrame(counted, columns=[*keys, "property", "value", "count"]),
        ranges=pd.DataFrame(ranges, columns=[*keys, "property", "values", "min", "median", "max"]),
    )


def _json_key(value: Any) -> str | None:
    """``value`` as JSON text that two values share only where JSON holds them equal (``1`` and
    ``1.0``, not ``1`` and ``true``); ``None`` for what JSON has not (a NaN an answer spelled)."""
    try:
        return canonical_json(value)
    except (TypeError, ValueError):
        return None


def counts(df: pd.DataFrame) -> dict[str, int]:
    """The headline counts of result rows.

    Args:
        df: Rows from :func:`load_results` (or a plain ``pd.read_parquet`` of an ``output_dir``).

    Returns:
        ``rows``; ``videos`` (distinct ``video_id``); ``frames``: distinct sampled frames, a
        frame being a ``(video_id, frame_index)`` pair, so frame 0 of two videos is two frames;
        ``prompts``; ``answers`` (ok rows); ``cut_answers`` (ok rows that ended at
        ``generation.max_tokens``, ``finish_reason == "length"``); ``failed_answers`` (error
        rows about a frame); ``failed_videos`` (videos with a video-level error record).
    """
    framed = df[df["frame_index"].notna()]
    ok = df["status"].eq("ok")
    return {
        "rows": len(df),
        "videos": int(df["video_id"].nunique()),
        "frames": len(framed[["video_id", "frame_index"]].drop_duplicates()),
        "prompts": int(framed["prompt_id"].nunique()),
        "answers": int(ok.sum()),
        "cut_answers": int((ok & df["finish_reason"].eq("length")).sum())
        if "finish_reason" in df.columns
        else 0,
        "failed_answers": int((df["status"].eq("error") & df["frame_index"].notna()).sum()),
        "failed_videos": int(df.loc[df["frame_index"].isna(), "video_id"].nunique()),
    }


def prompt_numbers(df: pd.DataFrame, asked: Sequence[str] = ()) -> dict[str, int]:
    """Each ``prompt_id`` of the rows' answers, numbered from 1 in the order the prompts were
    first asked (``asked``: every prompt of the output folder in that order,
    :func:`pipeline.store.prompt_order`), then any others in the order they first appear in the rows: the
    report's numbered prompt list and its track labels. A prompt keeps its number whatever later
    nights ask and whichever videos ``df`` holds (numbers of prompts not in ``df`` are skipped)."""
    answered = [str(p) for p in df.loc[df["frame_index"].notna(), "prompt_id"].dropna().unique()]
    order = dict.fromkeys([*asked, *answered])
    present = set(answered)
    return {prompt_id: number for number, prompt_id in enumerate(order, start=1) if prompt_id in present}


def video_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per-video counts, tokens and latency.

    Latency statistics cover answered rows (``status == "ok"``) only; error records carry no
    meaningful latency.

    Args:
        df: Rows from :func:`load_results`.

    Returns:
        One row per ``video_id`` (the index), ordered by ``video_path``, with the columns
        ``video_path``, ``frames``, ``prompts``, ``ok_rows``, ``error_rows``, ``cut_answers``
        (ok answers cut by ``max_tokens``), ``prompt_tokens`` (summed over the rows: each
        answer's prompt holds its frame's image, so a frame asked N prompts counts its image N
        times, although the model reads it once), ``completion_tokens``, ``latency_mean_ms``
        and ``latency_p95_ms``.
    """
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS, index=pd.Index([], name="video_id"))
    ok = df["status"].eq("ok")
    finish = df["finish_reason"] if "finish_reason" in df.columns else pd.Series(None, index=df.index)
    rows = df.assign(
        ok=ok,
        failed=df["status"].eq("error"),
        cut=ok & finish.eq("length").fillna(False).astype(bool),
        ok_latency_ms=df["latency_ms"].where(ok),
    )
    summary = rows.groupby("video_id", sort=False, dropna=False).agg(
        video_path=("video_path", "first"),
        frames=("frame_index", "nunique"),
        prompts=("prompt_id", "nunique"),
        ok_rows=("ok", "sum"),
        error_rows=("failed", "sum"),
        cut_answers=("cut", "sum"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        latency_mean_ms=("ok_latency_ms", "mean"),
        latency_p95_ms=("ok_latency_ms", lambda s: s.quantile(0.95)),
    )
    return summary.sort_values("video_path", kind="stable")[SUMMARY_COLUMNS]


def printable(text: str) -> str:
    """``text`` with control characters (but tab and newline) made visible
    (:func:`pipeline.words.visible`): random-weight models emit them, and HTML or subtitle
    players would drop or mangle them (a CR turns into LF).

    This is the answer text exactly as the report page and the subtitle tracks show it.
    """
    return visible(text, keep_lines=True)


def search_answers(df: pd.DataFrame, keyword: str) -> pd.DataFrame:
    """Rows whose answer contains ``keyword``, ignoring case (plain text, not a regex).

    Raises:
        ValueError: ``keyword`` is empty.
    """
    if not keyword:
        raise ValueError("give a keyword to search the answers for")
    return df[df["answer"].str.contains(keyword, case=False, regex=False, na=False)]


def slowest(df: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` answers that took longest (by ``latency_ms``), slowest first."""
    return df[df["frame_index"].notna()].nlargest(n, "latency_ms")


def slowest_frames(df: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` frames the model took longest over, slowest first.

    A frame's time is the ``latency_ms`` of its last answer: the engine counts it from the
    frame's admission into the model (after any wait in the queue of decoded frames) to that
    answer; its questions are answered together, so the times of its answers are not added.
    Frames in flight together share the model, so it includes steps spent on their tokens too.

    Returns:
        One row per ``(video_id, config_id, frame_index)`` with :data:`FRAME_COLUMNS`:
        ``answers`` (ok answers), ``completion_tokens`` (over its answers) and
        ``ms_per_token`` (frame time over the longest answer's tokens), and the thumbnail.
    """
    framed = df[df["frame_index"].notna()]
    if framed.empty:
        return pd.DataFrame(columns=FRAME_COLUMNS)
    thumbnails = framed[THUMBNAIL] if THUMBNAIL in framed.columns else pd.Series(None, index=framed.index)
    framed = framed.assign(ok=framed["status"].eq("ok"), **{THUMBNAIL: thumbnails})
    # dropna=False: rows of files that hold no config_id (null) are frames too.
    frames = framed.groupby(["video_id", "config_id", "frame_index"], sort=False, dropna=False).agg(
        video_path=("video_path", "first"),
        timecode=("timecode", "first"),
        timestamp_s=("timestamp_s", "first"),
        latency_ms=("latency_ms", "max"),
        answers=("ok", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        longest_answer_tokens=("completion_tokens", "max"),
        **{THUMBNAIL: (THUMBNAIL, "first")},
    )
    longest = frames["longest_answer_tokens"].astype("Float64").replace(0, np.nan)
    frames["ms_per_token"] = (frames["latency_ms"] / longest).astype(float)
    frames = frames.reset_index().nlargest(n, "latency_ms")
    return frames[FRAME_COLUMNS].reset_index(drop=True)


def coverage(df: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """How much of each video the answers cover, from the rows and the per-video facts alone
    (no video is opened).

    Args:
        df: Rows from :func:`load_results`.
        videos: Facts from :func:`load_videos` (``output_dir/_videos.parquet``).

    Returns:
        One row per video with facts (the index: ``video_id``), with :data:`COVERAGE_COLUMNS`:
        ``frames_sampled`` (distinct frames with a row), ``sampled_share`` (of the frames
        decoded), ``mean_gap_s`` (duration over sampled frames) and ``max_gap_s`` (the longest
        stretch without a sampled frame, from the start to the first, between two, or from the
        last to the end). Videos captioned before facts were kept have no row.
    """
    framed = df[df["frame_index"].notna()]
    rows = []
    for video in videos.to_dict("records"):
        times = sorted(framed.loc[framed["video_id"] == video["video_id"], "timestamp_s"].unique())
        duration_s = float(video["duration_s"])
        edges = [0.0, *times, duration_s]
        sampled = len(times)
        decoded = None if pd.isna(video["frames_decoded"]) else int(video["frames_decoded"])
        rows.append(
            {
                "video_id": video["video_id"],
                "video_path": video["video_path"],
                "duration_s": duration_s,
                "frames_decoded": decoded,
                "frames_sampled": sampled,
                "sampled_share": sampled / decoded if decoded else np.nan,
                "mean_gap_s": duration_s / sampled if sampled else np.nan,
                "max_gap_s": max(b - a for a, b in itertools.pairwise(edges)) if sampled else duration_s,
            }
        )
    table = pd.DataFrame(rows, columns=["video_id", *COVERAGE_COLUMNS]).set_index("video_id")
    table["frames_decoded"] = table["frames_decoded"].astype("Int64")
    table["frames_sampled"] = table["frames_sampled"].astype("Int64")
    return table


def load_videos(output_dir: str | Path) -> pd.DataFrame:
    """Per-video facts of ``output_dir`` (one row per video decoded by a run that kept them):
    duration, fps, size, codec, frames decoded; see :func:`pipeline.video_facts.read_videos`."""
    return read_videos(user_path(output_dir))


def thumbnail_bytes(row: Mapping[str, Any] | pd.Series) -> bytes | None:
    """The JPEG bytes of a result row's thumbnail, or ``None`` where the row has none.

    Args:
        row: A row of :func:`load_results` (a ``Series`` from ``df.iloc[i]``/``iterrows`` or a
            dict).
    """
    data = row.get(THUMBNAIL)
    return bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) and data else None


def thumbnail_image(row: Mapping[str, Any] | pd.Series) -> np.ndarray | None:
    """The thumbnail of a result row as an RGB array, or ``None`` where the row has none.

    Args:
        row: A row of :func:`load_results` (a ``Series`` or a dict).

    Raises:
        ValueError: The stored bytes are not a decodable image.
    """
    data = thumbnail_bytes(row)
    return None if data is None else decode_thumbnail(data)
