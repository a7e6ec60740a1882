"""A self-contained HTML page of a run's results: thumbnails, timecodes and answers side by side.

``python -m pipeline.report output_dir=DIR [video_id=ID] [out=PATH]`` writes
``DIR/_report.html`` (``DIR/_report-<video_id>.html`` for one video); the leading underscore
keeps Parquet readers away from it. The page has no external assets: thumbnails are inline
``data:`` URIs and there is no script, so it opens offline from disk.

Each video gets a section with its summary line, any video-level errors and a contact sheet:
one card per sampled frame with its thumbnail, its timecode (an in-page anchor), a link that
opens the video at that time (a ``file://`` URI with a ``#t=`` media fragment) and every
prompt's answer.
"""

from __future__ import annotations

import base64
import html
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.results import load_results, printable, thumbnail_bytes, video_summary

USAGE = "usage: python -m pipeline.report output_dir=DIR [video_id=ID] [out=PATH]"
_KEYS = ("output_dir", "video_id", "out")


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 3rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; word-break: break-all; }
table.videos { border-collapse: collapse; } table.videos td, table.videos th {
  padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
.summary { color: #444; } .bad { color: #b00020; font-weight: 600; }
.video-error { background: #fde7ea; border-left: 4px solid #b00020; padding: .5rem .8rem;
  margin: .5rem 0; white-space: pre-wrap; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(34rem, 1fr));
  gap: .8rem; }
.frame { display: flex; gap: .8rem; border: 1px solid #ddd; border-radius: 6px; padding: .6rem; }
.frame:target { outline: 3px solid #1565c0; }
.frame.has-error { border-color: #b00020; background: #fff6f7; }
.thumb { flex: 0 0 256px; }
.thumb img { display: block; max-width: 256px; height: auto; border-radius: 3px; }
.no-thumb { width: 256px; height: 144px; background: #eee; color: #777; display: flex;
  align-items: center; justify-content: center; }
.when { margin-top: .3rem; font-size: .9em; }
.when a.tc { font-family: monospace; font-weight: 600; }
.answers { flex: 1; min-width: 0; }
.qa { margin-bottom: .5rem; } .prompt { color: #555; font-size: .85em; }
.answer, .error-text { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 12em;
  overflow-y: auto; }
.qa.error .error-text { color: #b00020; font-weight: 600; }
.stats { color: #777; font-size: .8em; }
"""


def render_report(df: pd.DataFrame, title: str) -> str:
    """The report page for result rows.

    Args:
        df: Rows from :func:`pipeline.results.load_results` (any subset of videos).
        title: The page's title and heading.

    Returns:
        A complete HTML document.
    """
    summary = video_summary(df)
    rows_of = dict(tuple(df.groupby("video_id", sort=False)))
    sections = "".join(
        _video_section(video_id, rows_of[video_id], stats) for video_id, stats in summary.iterrows()
    )
    body = (_overview(summary) + sections) if sections else "<p>No results yet.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{_esc(title)}</h1>\n{body}</body></html>\n"
    )


def write_report(
    output_dir: str | Path, out_path: str | Path | None = None, video_id: str | None = None
) -> Path:
    """Write the report page of the results in ``output_dir``.

    Relative ``video_path`` values are resolved against the current folder for the links that
    open the video, so call this from where the run was started.

    Args:
        output_dir: A run's ``output_dir``.
        out_path: Where to write; default ``output_dir/_report.html`` (or
            ``output_dir/_report-<video_id>.html`` with ``video_id``).
        video_id: Report on this video only.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: ``output_dir`` is not a folder.
        ValueError: ``video_id`` is not in ``output_dir``.
        OSError: The page cannot be written.
    """
    output_dir = Path(output_dir).expanduser().resolve()
    df = load_results(output_dir)
    if video_id is not None:
        if not df["video_id"].eq(video_id).any():
            known = ", ".join(sorted(df["video_id"].unique())) or "none"
            raise ValueError(f"video_id={video_id} is not in {output_dir} (it has: {known})")
        df = df[df["video_id"] == video_id]
    default_name = "_report.html" if video_id is None else f"_report-{video_id}.html"
    out = Path(out_path).expanduser() if out_path else output_dir / default_name
    page = render_report(df, f"Captions in {output_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so a browser reloading the page never sees half of it.
    temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(page, encoding="utf-8")
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.report``: parse ``key=value`` arguments and write the report.

    Returns:
        0 when written, 1 on bad arguments or a failure (one line on stderr says which).
    """
    args = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return 0
    try:
        options = _parse(args)
    except ValueError as error:
        print(f"error: {error}\n{USAGE}", file=sys.stderr)
        return 1
    try:
        path = write_report(options["output_dir"], options.get("out"), options.get("video_id"))
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _parse(args: list[str]) -> dict[str, str]:
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in _KEYS or not value:
            expected = ", ".join(f"{k}=..." for k in _KEYS)
            raise ValueError(f"bad argument {arg!r}; expected one of {expected}")
        options[key] = value
    if "output_dir" not in options:
        raise ValueError("output_dir=DIR is required")
    return options


def _overview(summary: pd.DataFrame) -> str:
    rows = "".join(
        f'<tr><td><a href="#{_video_anchor(video_id)}">{_esc(stats["video_path"])}</a></td>'
        f"<td>{stats['frames']}</td><td>{_errors(stats['error_rows'])}</td></tr>"
        for video_id, stats in summary.iterrows()
    )
    return (
        '<table class="videos"><tr><th>video</th><th>frames</th><th>errors</th></tr>'
        f"{rows}</table>\n"
    )


def _video_section(video_id: str, rows: pd.DataFrame, stats: pd.Series) -> str:
    answers = rows[rows["frame_index"].notna()]
    video_errors = "".join(
        f'<div class="video-error">video error: {_esc(error)}</div>'
        for error in rows.loc[rows["frame_index"].isna(), "error"]
    )
    # With rows of several settings (config_id) for one video, each answer names its own.
    several_configs = rows["config_id"].nunique() > 1
    cards = "".join(
        _frame_card(video_id, frame_rows, several_configs)
        for _, frame_rows in answers.groupby("frame_index", sort=False)
    )
    return (
        f'<section id="{_video_anchor(video_id)}"><h2>{_esc(stats["video_path"])}</h2>\n'
        f'<p class="summary">{_summary_line(stats, rows)}</p>\n{video_errors}'
        f'<div class="sheet">{cards}</div></section>\n'
    )


def _summary_line(stats: pd.Series, rows: pd.DataFrame) -> str:
    models = ", ".join(sorted(rows["model"].dropna().unique()))
    parts = [
        f"video id {_esc(rows['video_id'].iloc[0])}",
        _count(stats["frames"], "frame"),
        _count(stats["prompts"], "prompt"),
        f"{stats['ok_rows']} ok",
        _errors(stats["error_rows"]),
        f"{stats['prompt_tokens']:,} prompt + {stats['completion_tokens']:,} completion tokens",
        f"latency mean {_ms(stats['latency_mean_ms'])}, p95 {_ms(stats['latency_p95_ms'])}",
        f"model {_esc(models)}",
    ]
    return " · ".join(parts)


def _frame_card(video_id: str, rows: pd.DataFrame, several_configs: bool) -> str:
    first = rows.iloc[0]
    frame_index = int(first["frame_index"])
    timestamp_s = float(first["timestamp_s"])
    anchor = f"{_video_anchor(video_id)}-f{frame_index}"
    timecode = _esc(first["timecode"])
    video_uri = Path(first["video_path"]).expanduser().resolve().as_uri()
    video_link = _esc(f"{video_uri}#t={timestamp_s:.3f}")
    # Rows of one frame share one thumbnail; any row's will do.
    thumbnail = next(filter(None, (thumbnail_bytes(row) for _, row in rows.iterrows())), None)
    if thumbnail:
        data = base64.b64encode(thumbnail).decode("ascii")
        picture = (
            f'<a href="{video_link}"><img src="data:image/jpeg;base64,{data}" '
            f'alt="frame {frame_index} at {timecode}"></a>'
        )
    else:
        picture = '<div class="no-thumb">no thumbnail</div>'
    answers = "".join(_answer(row, several_configs) for _, row in rows.iterrows())
    has_error = " has-error" if rows["status"].eq("error").any() else ""
    return (
        f'<article class="frame{has_error}" id="{anchor}"><div class="thumb">{picture}'
        f'<div class="when"><a class="tc" href="#{anchor}">{timecode}</a> frame {frame_index}'
        f'<br><a href="{video_link}">▶ play the video from here</a></div></div>'
        f'<div class="answers">{answers}</div></article>\n'
    )


def _answer(row: pd.Series, several_configs: bool) -> str:
    if row["status"] == "error":
        text = f'<div class="error-text">error: {_esc(row["error"])}</div>'
    else:
        text = f'<div class="answer">{_esc(row["answer"])}</div>'
    stats = f"{row['completion_tokens']} tokens · {_ms(row['latency_ms'])}"
    if several_configs:
        stats = f"{_esc(row['model'])} config {_esc(row['config_id'])} · {stats}"
    return (
        f'<div class="qa {_esc(row["status"])}">'
        f'<div class="prompt">{_esc(row["prompt"])}</div>{text}'
        f'<div class="stats">{stats}</div></div>'
    )


def _video_anchor(video_id: str) -> str:
    return f"v{_esc(video_id)}"


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _errors(n: Any) -> str:
    return f'<span class="bad">{_count(n, "error")}</span>' if n else _count(n, "error")


def _ms(value: Any) -> str:
    return "–" if pd.isna(value) else f"{value:,.0f} ms"


def _esc(value: Any) -> str:
    return "" if pd.isna(value) else html.escape(printable(str(value)), quote=True)


if __name__ == "__main__":
    sys.exit(main())
