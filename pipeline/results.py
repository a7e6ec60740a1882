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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.store import read_results
from pipeline.thumbnails import decode_thumbnail

THUMBNAIL = "thumbnail"

# C0 controls (but tab and newline) and DEL become their visible Control Pictures (U+2400...):
# random-weight models emit them, and HTML or subtitle players would drop or mangle them (a CR
# turns into LF).
_CONTROL_PICTURES = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)} | {0x7F: 0x2421}

SUMMARY_COLUMNS = [
    "video_path",
    "frames",
    "prompts",
    "ok_rows",
    "error_rows",
    "prompt_tokens",
    "completion_tokens",
    "latency_mean_ms",
    "latency_p95_ms",
]


def load_results(output_dir: str | Path) -> pd.DataFrame:
    """Every result row in ``output_dir``, by video and time (a video's error records last).

    Args:
        output_dir: A run's ``output_dir``.

    Returns:
        One row per answer or error record; always has a ``thumbnail`` column (all null for
        runs made without thumbnails).

    Raises:
        FileNotFoundError: ``output_dir`` is not a folder.
    """
    path = Path(output_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"output_dir {path} is not a folder; run the pipeline first or pass its output_dir"
        )
    df = read_results(path)
    order = ["video_path", "timestamp_s", "frame_index"]
    return df.sort_values(order, kind="stable").reset_index(drop=True)


def video_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per-video counts, tokens and latency.

    Latency statistics cover answered rows (``status == "ok"``) only; error records carry no
    meaningful latency.

    Args:
        df: Rows from :func:`load_results`.

    Returns:
        One row per ``video_id`` (the index), ordered by ``video_path``, with the columns
        ``video_path``, ``frames``, ``prompts``, ``ok_rows``, ``error_rows``,
        ``prompt_tokens``, ``completion_tokens``, ``latency_mean_ms`` and ``latency_p95_ms``.
    """
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS, index=pd.Index([], name="video_id"))
    rows = df.assign(
        ok=df["status"].eq("ok"),
        failed=df["status"].eq("error"),
        ok_latency_ms=df["latency_ms"].where(df["status"].eq("ok")),
    )
    summary = rows.groupby("video_id", sort=False).agg(
        video_path=("video_path", "first"),
        frames=("frame_index", "nunique"),
        prompts=("prompt_id", "nunique"),
        ok_rows=("ok", "sum"),
        error_rows=("failed", "sum"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        latency_mean_ms=("ok_latency_ms", "mean"),
        latency_p95_ms=("ok_latency_ms", lambda s: s.quantile(0.95)),
    )
    return summary.sort_values("video_path", kind="stable")[SUMMARY_COLUMNS]


def printable(text: str) -> str:
    """``text`` with control characters (but tab and newline) replaced by visible symbols.

    This is the answer text exactly as the report page and the subtitle tracks show it.
    """
    return text.translate(_CONTROL_PICTURES)


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
