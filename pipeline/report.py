"""An HTML report of a run's results: the night at a glance, then thumbnails, timecodes and answers.

``python -m pipeline.report output_dir=DIR [video_id=ID] [out=PATH] [page_frames=N] [inline=true]``
writes ``DIR/_report.html`` (``DIR/_report-<video_id>.html`` for one video) and its files in
``DIR/_report_files/`` (named after the page); the leading underscore keeps Parquet readers
away. The pages have no script and load nothing from the network, so they open offline.

- **Header**: the run's context: model and the SHA-256 of its files, prompts, sampler and
  generation settings, counts (videos, frames, answers, answers cut by ``max_tokens``,
  failures) and the last run's wall time and frames/s (``_last_run.json``, ``_runs/``).
- **Overview**: a row per video: duration, frames, coverage, answers, errors, latency, its
  subtitle tracks and its pages.
- **A section per video**: its summary, errors, a player (the video with its answers as
  subtitles, when the file is there and its codec plays in browsers), and a contact sheet: a
  card per sampled frame with its thumbnail, timecode (an in-page anchor), a link that opens the
  video at that time (``file://…#t=``) and every prompt's answer.
- **Scale**: each thumbnail is stored once, as a file named by its content, and referenced
  (``loading="lazy"``); up to ``page_frames`` frames (default 500) all sections go on one page,
  above that each video gets its own pages of ``page_frames`` cards. ``inline=true`` makes one
  self-contained page instead (thumbnails inlined), for mailing a small report.

The report also writes each video's WebVTT tracks (:mod:`pipeline.export`) and links them.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from pipeline.errors import UserError
from pipeline.export import (
    EXPORT_DIR,
    Track,
    parse_options,
    render_vtt,
    tracks_of,
    with_cue_ends,
    write_tracks,
)
from pipeline.files import write_bytes_atomic
from pipeline.results import (
    counts,
    coverage,
    load_results,
    printable,
    thumbnail_bytes,
    video_summary,
)
from pipeline.store import StoreError, read_configs, read_videos

__all__ = ["PAGE_FRAMES", "main", "printable", "render_report", "write_report"]

log = logging.getLogger(__name__)

USAGE = (
    "usage: python -m pipeline.report output_dir=DIR [video_id=ID] [out=PATH] [page_frames=N] "
    "[inline=true]"
)
_KEYS = ("output_dir", "video_id", "out", "page_frames", "inline")
PAGE_FRAMES = 500
# Codecs that browsers' <video> decodes (MPEG-4 Part 2, e.g. OpenCV's mp4v, is not one).
BROWSER_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
# A track larger than this is linked from the player, not embedded in the page.
EMBED_TRACK_BYTES = 2 << 20

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 3rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.5rem; word-break: break-all; }
nav.pages { margin: .8rem 0; } nav.pages a, nav.pages strong { margin-right: .5rem; }
.run { background: #f5f7fa; border: 1px solid #dde3ea; border-radius: 6px; padding: .6rem 1rem; }
.run dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
.run dt { color: #555; } .run dd { margin: 0; } .run ol { margin: 0; padding-left: 1.2rem; }
.mono, .sha { font-family: monospace; font-size: .9em; }
table.videos { border-collapse: collapse; margin-top: 1rem; } table.videos td,
table.videos th { padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
table.videos td.n { text-align: right; font-variant-numeric: tabular-nums; }
.summary { color: #444; } .bad { color: #b00020; font-weight: 600; } .cut { color: #a15c00; }
.video-error { background: #fde7ea; border-left: 4px solid #b00020; padding: .5rem .8rem;
  margin: .5rem 0; white-space: pre-wrap; }
.player video { max-width: 640px; width: 100%; background: #000; }
.note { color: #666; font-size: .9em; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(34rem, 1fr));
  gap: .8rem; }
.frame { display: flex; gap: .8rem; border: 1px solid #ddd; border-radius: 6px; padding: .6rem;
  content-visibility: auto; contain-intrinsic-size: auto 180px; }
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


@dataclass
class _Context:
    """What the pages are made from, beyond the rows: where they go and what they link."""

    output_dir: Path | None = None
    assets: Path | None = None  # the page's files: thumbnails and video pages; None: inline
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    videos: pd.DataFrame | None = None
    tracks: dict[str, list[Track]] = field(default_factory=dict)
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # file name -> JPEG

    def facts(self, video_id: str) -> dict[str, Any] | None:
        if self.videos is None or self.videos.empty:
            return None
        found = self.videos[self.videos["video_id"] == video_id]
        return None if found.empty else {str(k): v for k, v in found.iloc[0].items()}


def render_report(df: pd.DataFrame, title: str) -> str:
    """One self-contained report page for result rows (thumbnails inlined, every section on it).

    Args:
        df: Rows from :func:`pipeline.results.load_results` (any subset of videos).
        title: The page's title and heading.

    Returns:
        A complete HTML document.
    """
    context = _Context()
    return _Pages(df, title, context, page_frames=None).index(Path("."))


def write_report(
    output_dir: str | Path,
    out_path: str | Path | None = None,
    video_id: str | None = None,
    page_frames: int = PAGE_FRAMES,
    inline: bool = False,
) -> Path:
    """Write the report of the results in ``output_dir`` (and each video's VTT tracks).

    Relative ``video_path`` values are resolved against the current folder for the links that
    open the video, so call this from where the run was started.

    Args:
        output_dir: A run's ``output_dir``.
        out_path: The main page; default ``output_dir/_report.html`` (or
            ``output_dir/_report-<video_id>.html`` with ``video_id``). Its files go in the
            folder beside it named ``<page name>_files``.
        video_id: Report on this video only.
        page_frames: Up to this many frames, every section is on the main page; above, each
            video gets pages of this many frames.
        inline: One self-contained page, thumbnails inlined, whatever the size.

    Returns:
        The main page's path.

    Raises:
        FileNotFoundError: ``output_dir`` is not a folder.
        UserError: ``video_id`` is not in ``output_dir``, ``page_frames`` < 1, or a file cannot
            be written (:class:`~pipeline.errors.StoreError`).
        OSError: A file cannot be read.
    """
    if page_frames < 1:
        raise UserError(f"page_frames must be >= 1, got {page_frames}")
    output_dir = Path(output_dir).expanduser().resolve()
    df = load_results(output_dir)
    if video_id is not None:
        if not df["video_id"].eq(video_id).any():
            known = ", ".join(sorted(df["video_id"].dropna().unique())) or "none"
            raise UserError(f"video_id={video_id} is not in {output_dir} (it has: {known})")
        df = df[df["video_id"] == video_id]
    default_name = "_report.html" if video_id is None else f"_report-{video_id}.html"
    out = Path(out_path).expanduser().resolve() if out_path else output_dir / default_name
    assets = out.with_name(f"{out.stem}_files")
    videos = read_videos(output_dir)
    tracks = tracks_of(with_cue_ends(df, videos))
    if tracks:
        try:  # the track files the report links; a read-only output_dir still gets a report
            write_tracks(output_dir / EXPORT_DIR, tracks, "vtt", df["video_id"].dropna().unique())
        except (OSError, StoreError) as error:
            log.warning("subtitle tracks not written, so not linked: %s", error)
    context = _Context(
        output_dir=output_dir,
        assets=None if inline else assets,
        configs=read_configs(output_dir),
        runs=_runs(output_dir),
        videos=videos,
        tracks=_by_video(tracks),
    )
    pages = _Pages(df, f"Captions in {output_dir}", context, page_frames=None if inline else page_frames)
    written: set[Path] = set()
    for path, page in pages.all(out):
        write_bytes_atomic(path, page.encode("utf-8"))
        written.add(path)
    for name, data in context.thumbnails.items():
        path = assets / "thumbs" / name
        if not (path.is_file() and path.stat().st_size == len(data)):
            write_bytes_atomic(path, data)
        written.add(path)
    # Files of an earlier report that this one no longer references.
    if assets.is_dir():
        for path in assets.rglob("*"):
            if path.is_file() and path not in written and not path.name.startswith("."):
                path.unlink(missing_ok=True)
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
        options = parse_options(args, _KEYS, ("output_dir",))
        page_frames = int(options.get("page_frames", PAGE_FRAMES))
        inline = _flag(options.get("inline", "false"))
    except (UserError, ValueError) as error:
        print(f"error: {error}\n{USAGE}", file=sys.stderr)
        return 1
    try:
        path = write_report(
            options["output_dir"], options.get("out"), options.get("video_id"), page_frames, inline
        )
    except (UserError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


# -- pages ----------------------------------------------------------------------------------


class _Pages:
    """The report's pages for rows ``df``: the main page and, when paged, each video's pages."""

    def __init__(self, df: pd.DataFrame, title: str, context: _Context, page_frames: int | None) -> None:
        self.df = df
        self.title = title
        self.context = context
        self.summary = video_summary(df)
        self.stats_of: dict[str, pd.Series] = {str(k): row for k, row in self.summary.iterrows()}
        self.rows_of = dict(tuple(df.groupby("video_id", sort=False)))
        ends = with_cue_ends(df, context.videos)
        self.ends = dict(zip(zip(ends["video_id"], ends["config_id"], ends["frame_index"]), ends["end_s"]))
        frames = int(counts(df)["frames"])
        self.paged = page_frames is not None and context.assets is not None and frames > page_frames
        self.page_frames = page_frames or max(frames, 1)
        self._frames_of: tuple[str | None, list[list[dict[str, Any]]]] = (None, [])

    def all(self, out: Path) -> Iterable[tuple[Path, str]]:
        """``(path, html)`` of every page, the main page ``out`` first."""
        yield out, self.index(out.parent)
        if not self.paged:
            return
        assert self.context.assets is not None
        for video_id in self.summary.index:
            for number in range(1, self._page_count(video_id) + 1):
                path = self.context.assets / self._page_name(video_id, number)
                yield path, self.video_page(video_id, number, out)

    def index(self, base: Path) -> str:
        """The main page, whose folder is ``base``."""
        body = [_header(self.df, self.context)]
        if self.summary.empty:
            body.append("<p>No results yet.</p>")
        else:
            body.append(self._overview(base))
            if not self.paged:
                body += [self._section(v, base, 1) for v in self.summary.index]
            else:
                body.append(
                    f'<p class="note">{self.page_frames:,} frames a page: each video has its own '
                    "pages, linked above.</p>"
                )
        return _document(self.title, "".join(body))

    def video_page(self, video_id: str, number: int, index: Path) -> str:
        """Page ``number`` of one video's section, in the assets folder."""
        assert self.context.assets is not None
        base = self.context.assets
        back = _href(index, base)
        nav = self._nav(video_id, number, base, back)
        path = str(self.stats_of[video_id]["video_path"])
        body = f'<p><a href="{back}">← all videos</a></p>{nav}{self._section(video_id, base, number)}{nav}'
        count = self._page_count(video_id)
        return _document(path if count == 1 else f"{path} ({number}/{count})", body)

    # -- parts ---------------------------------------------------------------------------------

    def _page_count(self, video_id: str) -> int:
        return max(1, math.ceil(int(self.stats_of[video_id]["frames"]) / self.page_frames))

    @staticmethod
    def _page_name(video_id: str, number: int) -> str:
        return f"{video_id}.html" if number == 1 else f"{video_id}-{number}.html"

    def _video_href(self, video_id: str, base: Path, number: int = 1) -> str:
        if not self.paged:
            return f"#{_video_anchor(video_id)}"
        assert self.context.assets is not None
        return _href(self.context.assets / self._page_name(video_id, number), base)

    def _nav(self, video_id: str, number: int, base: Path, back: str) -> str:
        count = self._page_count(video_id)
        if count == 1:
            return ""
        links = [
            f"<strong>{n}</strong>" if n == number else f'<a href="{self._video_href(video_id, base, n)}">{n}</a>'
            for n in range(1, count + 1)
        ]
        return f'<nav class="pages">page {" ".join(links)}</nav>'

    def _overview(self, base: Path) -> str:
        cover = (
            coverage(self.df, self.context.videos)
            if self.context.videos is not None and not self.context.videos.empty
            else pd.DataFrame()
        )
        rows = []
        for video_id, stats in self.stats_of.items():
            facts = cover.loc[video_id] if video_id in cover.index else None
            duration = _duration(facts["duration_s"]) if facts is not None else "–"
            gap = _duration(facts["max_gap_s"]) if facts is not None and facts["frames_sampled"] else "–"
            pages = ""
            if self.paged:
                count = self._page_count(str(video_id))
                pages = " ".join(
                    f'<a href="{self._video_href(str(video_id), base, n)}">{n}</a>' for n in range(1, count + 1)
                )
            rows.append(
                f'<tr><td><a href="{self._video_href(str(video_id), base)}">{_esc(stats["video_path"])}</a></td>'
                f'<td class="n">{duration}</td><td class="n">{stats["frames"]:,}</td><td class="n">{gap}</td>'
                f'<td class="n">{stats["ok_rows"]:,}</td><td class="n">{_cut(stats["cut_answers"])}</td>'
                f'<td class="n">{_errors(stats["error_rows"])}</td>'
                f'<td class="n">{_ms(stats["latency_mean_ms"])}</td>'
                f"<td>{self._track_links(str(video_id), base)}</td>"
                + (f"<td>{pages}</td>" if self.paged else "")
                + "</tr>"
            )
        head = (
            "<tr><th>video</th><th>duration</th><th>frames</th><th>longest gap</th><th>answers</th>"
            "<th>cut</th><th>errors</th><th>latency</th><th>subtitles</th>"
            + ("<th>pages</th>" if self.paged else "")
            + "</tr>"
        )
        return f'<table class="videos">{head}{"".join(rows)}</table>\n'

    def _track_links(self, video_id: str, base: Path) -> str:
        context = self.context
        if context.output_dir is None:
            return ""
        links = []
        for number, track in enumerate(context.tracks.get(video_id, []), start=1):
            vtt_path = context.output_dir / track.relative_path("vtt")
            if vtt_path.is_file():
                label = f"VTT {number}" if len(context.tracks[video_id]) > 1 else "VTT"
                links.append(f'<a href="{_href(vtt_path, base)}" title="{_esc(track.prompt)}">{label}</a>')
            srt_path = context.output_dir / track.relative_path("srt")
            if srt_path.is_file():
                links.append(f'<a href="{_href(srt_path, base)}">SRT</a>')
        return " ".join(links)

    def _frames(self, video_id: str, answers: pd.DataFrame) -> list[list[dict[str, Any]]]:
        """The video's answered rows as plain dicts, grouped by frame; made once per video, not
        once per page of it (the pages of a video come one after another)."""
        if self._frames_of[0] != video_id:
            # Plain dicts: pandas' per-row access costs far more than the page itself.
            groups: dict[Any, list[dict[str, Any]]] = {}
            for record in answers.to_dict("records"):
                groups.setdefault(record["frame_index"], []).append({str(k): v for k, v in record.items()})
            self._frames_of = (video_id, list(groups.values()))
        return self._frames_of[1]

    def _section(self, video_id: str, base: Path, number: int) -> str:
        rows = self.rows_of[video_id]
        stats = self.stats_of[video_id]
        answers = rows[rows["frame_index"].notna()]
        video_errors = "".join(
            f'<div class="video-error">video error: {_esc(error)}</div>'
            for error in rows.loc[rows["frame_index"].isna(), "error"]
        )
        # With rows of several settings (config_id) for one video, each answer names its own.
        several_configs = rows["config_id"].nunique() > 1
        first = (number - 1) * self.page_frames
        cards = "".join(
            self._frame_card(video_id, frame_rows, several_configs, base)
            for frame_rows in self._frames(video_id, answers)[first : first + self.page_frames]
        )
        player = self._player(video_id, rows, base) if number == 1 else ""
        tracks = self._track_links(video_id, base)
        tracks_line = f'<p class="note">subtitle tracks: {tracks}</p>' if tracks and number == 1 else ""
        return (
            f'<section id="{_video_anchor(video_id)}"><h2>{_esc(stats["video_path"])}</h2>\n'
            f'<p class="summary">{self._summary_line(stats, rows)}</p>\n{video_errors}{player}'
            f'{tracks_line}<div class="sheet">{cards}</div></section>\n'
        )

    def _summary_line(self, stats: pd.Series, rows: pd.DataFrame) -> str:
        models = ", ".join(sorted(rows["model"].dropna().unique()))
        facts = self.context.facts(str(rows["video_id"].iloc[0]))
        parts = [f"video id {_esc(rows['video_id'].iloc[0])}"]
        if facts is not None:
            parts.append(
                f"{_duration(facts['duration_s'])}, {facts['width']}×{facts['height']}, "
                f"{facts['fps']:g} fps, {_esc(facts['codec'] or 'unknown codec')}"
            )
        parts += [
            _count(stats["frames"], "frame"),
            _count(stats["prompts"], "prompt"),
            f"{stats['ok_rows']:,} ok",
            _cut(stats["cut_answers"]),
            _errors(stats["error_rows"]),
            f"{stats['prompt_tokens']:,} prompt + {stats['completion_tokens']:,} completion tokens",
            f"latency mean {_ms(stats['latency_mean_ms'])}, p95 {_ms(stats['latency_p95_ms'])}",
            f"model {_esc(models)}",
        ]
        return " · ".join(parts)

    def _player(self, video_id: str, rows: pd.DataFrame, base: Path) -> str:
        """The video with its answers as subtitle tracks, when the file is here and plays."""
        path = Path(rows["video_path"].iloc[0]).expanduser().resolve()
        tracks = self.context.tracks.get(video_id, [])
        if not path.is_file() or self.context.output_dir is None:
            return ""
        facts = self.context.facts(video_id)
        codec = (facts or {}).get("codec") or ""
        if codec and codec not in BROWSER_CODECS:
            return (
                f'<p class="note player">The video ({_esc(codec)}) does not play in browsers; open it '
                "in a player such as VLC with its subtitle track (links below).</p>"
            )
        sources = []
        for number, track in enumerate(tracks):
            vtt = render_vtt(track).encode("utf-8")
            if len(vtt) <= EMBED_TRACK_BYTES:
                # A data: URI, so the track loads in pages opened from disk (Chromium blocks
                # file:// tracks there).
                src = "data:text/vtt;base64," + base64.b64encode(vtt).decode("ascii")
            else:
                src = _href(self.context.output_dir / track.relative_path("vtt"), base)
            default = " default" if number == 0 else ""
            sources.append(
                f'<track kind="subtitles" srclang="en" label="{_esc(_shorten(track.prompt, 60))}" '
                f'src="{src}"{default}>'
            )
        return (
            f'<div class="player"><video controls preload="none" src="{_esc(path.as_uri())}">'
            f"{''.join(sources)}</video></div>\n"
        )

    def _frame_card(
        self, video_id: str, rows: list[dict[str, Any]], several_configs: bool, base: Path
    ) -> str:
        first = rows[0]
        frame_index = int(first["frame_index"])
        timestamp_s = float(first["timestamp_s"])
        anchor = f"{_video_anchor(video_id)}-f{frame_index}"
        timecode = _esc(first["timecode"])
        video_uri = Path(first["video_path"]).expanduser().resolve().as_uri()
        video_link = _esc(f"{video_uri}#t={timestamp_s:.3f}")
        # Rows of one frame share one thumbnail; any row's will do.
        thumbnail = next(filter(None, (thumbnail_bytes(row) for row in rows)), None)
        if thumbnail:
            picture = (
                f'<a href="{video_link}"><img src="{self._thumbnail_src(thumbnail, base)}" '
                f'loading="lazy" alt="frame {frame_index} at {timecode}"></a>'
            )
        else:
            picture = '<div class="no-thumb">no thumbnail</div>'
        answers = "".join(_answer(row, several_configs) for row in rows)
        has_error = " has-error" if any(row["status"] == "error" for row in rows) else ""
        end_s = self.ends.get((video_id, first["config_id"], first["frame_index"]))
        until = f" until {_seconds(end_s)}" if end_s is not None and not pd.isna(end_s) else ""
        return (
            f'<article class="frame{has_error}" id="{anchor}"><div class="thumb">{picture}'
            f'<div class="when"><a class="tc" href="#{anchor}">{timecode}</a> frame {frame_index}'
            f'<span class="note">{until}</span>'
            f'<br><a href="{video_link}">▶ play the video from here</a></div></div>'
            f'<div class="answers">{answers}</div></article>\n'
        )

    def _thumbnail_src(self, data: bytes, base: Path) -> str:
        if self.context.assets is None:
            return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        name = hashlib.sha256(data).hexdigest()[:24] + ".jpg"
        self.context.thumbnails[name] = data
        return _href(self.context.assets / "thumbs" / name, base)


# -- the header -----------------------------------------------------------------------------


def _header(df: pd.DataFrame, context: _Context) -> str:
    """The run's context: model, prompts, settings, counts, failures, wall time, frames/s."""
    found = counts(df)
    items: list[tuple[str, str]] = []
    models = sorted(df["model"].dropna().unique())
    for config_id, metadata in context.configs.items():
        if not df["config_id"].eq(config_id).any():
            continue
        items.append((f"settings {config_id}" if len(context.configs) > 1 else "model", _model_line(metadata)))
        items.append(("sampler", _sampler_line(metadata)))
        items.append(("generation", _generation_line(metadata)))
    if not context.configs and models:
        items.append(("model", _esc(", ".join(models))))
    prompts = (
        df[df["frame_index"].notna()]
        .groupby(["prompt_id", "prompt"], sort=False)["status"]
        .agg(answers=lambda s: int(s.eq("ok").sum()), rows="size")
        .reset_index()
    )
    if len(prompts):
        items.append(
            ("prompts", ("<ol>" + "".join(
                f'<li>{_esc(p.prompt)} <span class="note">({p.answers:,} answers, id {_esc(p.prompt_id)})</span></li>'
                for p in prompts.itertuples()
            ) + "</ol>"))
        )
    items.append(
        (
            "results",
            (
                f"{_count(found['videos'], 'video')} · {_count(found['frames'], 'frame')} · "
                f"{_count(found['answers'], 'answer')} ({_cut(found['cut_answers'])} at max_tokens) · "
                f"{_errors(found['failed_answers'], 'failed answer')} · "
                f"{_errors(found['failed_videos'], 'failed video')}"
            ),
        )
    )
    if context.runs:
        items.append(("last run", _run_line(context.runs[-1])))
        if len(context.runs) > 1:
            frames = sum(int(r.get("frames") or 0) for r in context.runs)
            wall = sum(float(r.get("wall_s") or 0.0) for r in context.runs)
            items.append(
                ("all runs", f"{len(context.runs)} runs recorded: {frames:,} frames in {_duration(wall)}")
            )
    rows = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in items)
    return f'<header class="run"><dl>{rows}</dl></header>\n'


def _model_line(metadata: dict[str, Any]) -> str:
    model = (metadata.get("config") or {}).get("model") or {}
    files = metadata.get("model_files") or {}
    digests = metadata.get("model_sha256") or {}
    parts = [f"<strong>{_esc(model.get('name', '?'))}</strong>"]
    for key, path in files.items():
        digest = digests.get(key)
        sha = f' <span class="sha" title="SHA-256 {_esc(digest)}">sha256 {_esc(digest[:12])}…</span>' if digest else ""
        parts.append(f'<span class="mono">{_esc(Path(str(path)).name)}</span>{sha}')
    return " · ".join(parts)


def _sampler_line(metadata: dict[str, Any]) -> str:
    sampler = dict((metadata.get("config") or {}).get("sampler") or {})
    kind = str(sampler.pop("_target_", "?")).rsplit(".", 1)[-1].removesuffix("Sampler").lower() or "?"
    dedup = sampler.pop("dedup", None)
    settings = [f"{k}={v}" for k, v in sampler.items()]
    if isinstance(dedup, dict) and dedup.get("enabled"):
        settings.append(f"dedup threshold {dedup.get('threshold')}")
    return _esc(kind + (f" ({', '.join(settings)})" if settings else ""))


def _generation_line(metadata: dict[str, Any]) -> str:
    config = metadata.get("config") or {}
    generation = config.get("generation") or {}
    max_frames = config.get("max_frames")
    parts = [f"max_tokens {generation.get('max_tokens', '?')}", f"temperature {generation.get('temperature', '?')}"]
    if max_frames is not None:
        parts.append(f"max_frames {max_frames}")
    return _esc(", ".join(parts))


def _run_line(run: dict[str, Any]) -> str:
    started = str(run.get("started", "?"))[:19].replace("T", " ")
    failed = int(run.get("videos_failed") or 0)
    failed_text = f'<span class="bad">{failed:,} failed</span>' if failed else "0 failed"
    return (
        f"{_esc(started)} UTC · videos: {int(run.get('videos_done') or 0):,} done, "
        f"{int(run.get('videos_skipped') or 0):,} skipped, {failed_text} · "
        f"{_count(int(run.get('frames') or 0), 'frame')} in {_duration(float(run.get('wall_s') or 0.0))} wall"
        f" · {float(run.get('frames_per_s') or 0.0):.2f} frames/s · exit {_esc(run.get('exit_code', '?'))}"
    )


def _runs(output_dir: Path) -> list[dict[str, Any]]:
    """The recorded runs (``_runs/*.json``, with ``_last_run*.json`` for older folders), oldest
    first."""
    runs: dict[str, dict[str, Any]] = {}
    for path in [*output_dir.glob("_runs/*.json"), *output_dir.glob("_last_run*.json")]:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            runs.setdefault(f"{record.get('started')}|{path.stem.partition('-')[2]}", record)
    return sorted(runs.values(), key=lambda r: str(r.get("started", "")))


# -- small helpers --------------------------------------------------------------------------


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{_esc(title)}</h1>\n{body}</body></html>\n"
    )


def _by_video(tracks: list[Track]) -> dict[str, list[Track]]:
    grouped: dict[str, list[Track]] = {}
    for track in tracks:
        grouped.setdefault(track.video_id, []).append(track)
    return grouped


def _href(target: Path, base: Path) -> str:
    """A relative URL from a page in ``base`` to ``target``."""
    return quote(Path(os.path.relpath(target, base)).as_posix())


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise UserError(f"inline must be true or false, got {value!r}")


def _answer(row: dict[str, Any], several_configs: bool) -> str:
    if row["status"] == "error":
        text = f'<div class="error-text">error: {_esc(row["error"])}</div>'
    else:
        text = f'<div class="answer">{_esc(row["answer"])}</div>'
    tokens = f"{row['completion_tokens']} tokens"
    if row.get("finish_reason") == "length":
        tokens += ' <span class="cut">(cut at max_tokens)</span>'
    stats = f"{tokens} · {_ms(row['latency_ms'])}"
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
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _errors(n: Any, noun: str = "error") -> str:
    return f'<span class="bad">{_count(n, noun)}</span>' if n else _count(n, noun)


def _cut(n: Any) -> str:
    return f'<span class="cut">{n:,} cut</span>' if n else "0 cut"


def _ms(value: Any) -> str:
    return "–" if pd.isna(value) else f"{value:,.0f} ms"


def _seconds(value: float) -> str:
    return f"{value:.3f} s"


def _duration(seconds: Any) -> str:
    if seconds is None or pd.isna(seconds):
        return "–"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _shorten(text: str, width: int) -> str:
    flat = " ".join(printable(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _esc(value: Any) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else html.escape(
        printable(str(value)), quote=True
    )


if __name__ == "__main__":
    sys.exit(main())
