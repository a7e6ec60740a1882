"""The report's pages: rows and :class:`~pipeline.report.data.ReportData` become plain values,
which Jinja2 templates (``templates/``, autoescape on) turn into HTML.

Escaping is the templates' default: no value reaches a page unescaped, and every text value
also has its control characters made visible (:func:`pipeline.results.printable`), as the
subtitle tracks show them.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import pandas as pd

from pipeline.export import render_vtt, with_cue_ends
from pipeline.report.data import ReportData, header
from pipeline.results import (
    FINISH_REASONS,
    config_label,
    counts,
    coverage,
    printable,
    prompt_numbers,
    schema_summary,
    thumbnail_bytes,
    video_summary,
)

# Codecs that browsers' <video> decodes (MPEG-4 Part 2, e.g. OpenCV's mp4v, is not one).
BROWSER_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
# A track larger than this is linked from the player, not embedded in the page.
EMBED_TRACK_BYTES = 2 << 20


def _shown(value: Any) -> Any:
    """What a ``{{ value }}`` prints: nothing for a null, visible control characters in text."""
    if value is None or (not isinstance(value, (str, bytes, list, dict)) and pd.isna(value)):
        return ""
    if isinstance(value, str) and not hasattr(value, "__html__"):  # not markup a template made
        return printable(value)
    return value


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


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("pipeline.report", "templates"),
    autoescape=True,
    finalize=_shown,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_ENV.filters.update(
    number=lambda n: f"{n:,}",
    duration=_duration,
    ms=lambda value: "–" if pd.isna(value) else f"{value:,.0f} ms",
    share=lambda value: f"{value:.0%}",
    figure=lambda value: "–" if pd.isna(value) else f"{value:g}",
)


class Pages:
    """The report's pages for rows ``df``: the main page and, when paged, each video's pages.

    Args:
        df: Rows from :func:`pipeline.results.load_results`.
        title: The main page's title.
        data: What the pages show besides the rows; its ``thumbnails`` fill up as pages are made.
        page_frames: Frames a page; ``None``: every section on the main page.
    """

    def __init__(self, df: pd.DataFrame, title: str, data: ReportData, page_frames: int | None) -> None:
        self.df = df
        self.title = title
        self.data = data
        self.summary = video_summary(df)
        self.stats_of: dict[str, pd.Series] = {str(k): row for k, row in self.summary.iterrows()}
        self.rows_of = {str(k): rows for k, rows in df.groupby("video_id", sort=False, dropna=False)}
        ends = with_cue_ends(df, data.videos)
        keys = zip(ends["video_id"], ends["config_id"].map(config_label), ends["frame_index"])
        self.ends = dict(zip(keys, ends["end_s"]))
        self.numbers = prompt_numbers(df, data.asked)
        frames = int(counts(df)["frames"])
        self.paged = page_frames is not None and data.assets is not None and frames > page_frames
        self.page_frames = page_frames or max(frames, 1)
        self._frames_of: tuple[str | None, list[list[dict[str, Any]]]] = (None, [])

    def all(self, out: Path) -> Iterable[tuple[Path, str]]:
        """``(path, html)`` of every page, the main page ``out`` first."""
        yield out, self.index(out.parent)
        if not self.paged:
            return
        assert self.data.assets is not None
        for video_id in self.stats_of:
            for number in range(1, self._page_count(video_id) + 1):
                yield self.data.assets / self._page_name(video_id, number), self.video_page(video_id, number, out)

    def index(self, base: Path) -> str:
        """The main page, whose folder is ``base``."""
        cover = (
            coverage(self.df, self.data.videos)
            if self.data.videos is not None and not self.data.videos.empty
            else pd.DataFrame()
        )
        videos = []
        for video_id in self.stats_of:
            view = self._video(video_id, base, 1, with_frames=not self.paged)
            facts = cover.loc[video_id] if video_id in cover.index else None
            view["duration"] = None if facts is None else facts["duration_s"]
            view["max_gap_s"] = None if facts is None or not facts["frames_sampled"] else facts["max_gap_s"]
            videos.append(view)
        return _ENV.get_template("index.html.j2").render(
            title=self.title, head=header(self.df, self.data), videos=videos, paged=self.paged,
            page_frames=self.page_frames, structured=self._structured(),
        )

    def _structured(self) -> list[dict[str, Any]]:
        """Per schema prompt and settings (:func:`pipeline.results.schema_summary`): its number and
        text (and its settings and model where several answered it), how its answers ended, the
        counts of each boolean and enum value, the range of each number."""
        summary = schema_summary(self.df, self.data.schemas)
        settings = summary.outcomes.index.get_level_values("prompt_id").value_counts()
        sections = []
        for (prompt_id, config_id), outcome in summary.outcomes.iterrows():
            counted, ranges = summary.of(prompt_id, config_id)
            sections.append({
                "number": self.numbers.get(str(prompt_id)), "prompt": outcome["prompt"],
                "config_id": config_label(config_id) if settings[prompt_id] > 1 else None, "model": outcome["model"],
                "answers": outcome["answers"], "ends": {reason: outcome[reason] for reason in FINISH_REASONS},
                "counts": [
                    {"property": name, "values": list(zip(values["value"], values["count"]))}
                    for name, values in counted.groupby("property", sort=False)
                ],
                "ranges": ranges.to_dict("records"),
            })
        return sections

    def video_page(self, video_id: str, number: int, index: Path) -> str:
        """Page ``number`` of one video's section, in the assets folder."""
        assert self.data.assets is not None
        path = str(self.stats_of[video_id]["video_path"])
        count = self._page_count(video_id)
        return _ENV.get_template("video.html.j2").render(
            title=path if count == 1 else f"{path} ({number}/{count})",
            back=_href(index, self.data.assets),
            video=self._video(video_id, self.data.assets, number, with_frames=True),
        )

    # -- a video's values -----------------------------------------------------------------------

    def _video(self, video_id: str, base: Path, number: int, with_frames: bool) -> dict[str, Any]:
        rows = self.rows_of[video_id]
        answers = rows[rows["frame_index"].notna()]
        first = (number - 1) * self.page_frames
        frames = self._frames(video_id, answers)[first : first + self.page_frames] if with_frames else []
        return {
            "video_id": video_id,
            "anchor": _video_anchor(video_id),
            "path": self.stats_of[video_id]["video_path"],
            "stats": self.stats_of[video_id],
            "facts": self.data.facts(video_id),
            "models": ", ".join(sorted(rows["model"].dropna().unique())),
            "errors": list(rows.loc[rows["frame_index"].isna(), "error"]),
            # With rows of several settings (config_id) for one video, each answer names its own.
            "several_configs": rows["config_id"].nunique(dropna=False) > 1,
            "frames": [self._card(video_id, frame_rows, base) for frame_rows in frames],
            "player": self._player(video_id, answers, base) if number == 1 else None,
            "tracks": self._track_links(video_id, base),
            "first_page": number == 1,
            "pages": [
                {"number": n, "href": self._video_href(video_id, base, n), "current": n == number}
                for n in range(1, self._page_count(video_id) + 1)
            ],
        }

    def _page_count(self, video_id: str) -> int:
        return max(1, math.ceil(int(self.stats_of[video_id]["frames"]) / self.page_frames))

    @staticmethod
    def _page_name(video_id: str, number: int) -> str:
        return f"{video_id}.html" if number == 1 else f"{video_id}-{number}.html"

    def _video_href(self, video_id: str, base: Path, number: int = 1) -> str:
        if not self.paged:
            return f"#{_video_anchor(video_id)}"
        assert self.data.assets is not None
        return _href(self.data.assets / self._page_name(video_id, number), base)

    def _track_label(self, video_id: str, prompt_id: str, config_id: str) -> str:
        """The prompt's number in the header's list (where there are several), and the settings
        where the video has tracks of several."""
        label = str(self.numbers[prompt_id]) if len(self.numbers) > 1 else ""
        if len({t.config_id for t in self.data.tracks.get(video_id, [])}) > 1:
            label = f"{label} ({config_id})".strip()
        return label

    def _track_links(self, video_id: str, base: Path) -> list[dict[str, str]]:
        if self.data.output_dir is None:
            return []
        links = []
        for track in self.data.tracks.get(video_id, []):
            label = self._track_label(video_id, track.prompt_id, track.config_id)
            for fmt in ("vtt", "srt"):
                path = self.data.output_dir / track.relative_path(fmt)
                if path.is_file():
                    links.append({
                        "href": _href(path, base), "title": track.prompt if fmt == "vtt" else "",
                        "label": f"{fmt.upper()} {label}".strip(),
                    })
        return links

    def _player(self, video_id: str, answers: pd.DataFrame, base: Path) -> dict[str, Any] | None:
        """The video with its answers as subtitle tracks, when the file is here (found where the
        night read it: :func:`~pipeline.video_files.video_files`), was read and plays in
        browsers (``codec`` set: it does not play)."""
        if answers.empty or self.data.output_dir is None:
            return None  # nothing was read of it (an unreadable file): no empty player
        path, playable = self.data.video_file(video_id, answers["video_path"].iloc[0])
        if not playable:
            return None
        codec = (self.data.facts(video_id) or {}).get("codec") or ""
        if codec and codec not in BROWSER_CODECS:
            return {"codec": codec}
        tracks = []
        # In the order of the header's numbered prompts: the first is the default track.
        for track in sorted(self.data.tracks.get(video_id, []), key=lambda t: (self.numbers[t.prompt_id], t.config_id)):
            vtt = render_vtt(track).encode("utf-8")
            if len(vtt) <= EMBED_TRACK_BYTES:
                # A data: URI, so the track loads in pages opened from disk (Chromium blocks
                # file:// tracks there).
                src = "data:text/vtt;base64," + base64.b64encode(vtt).decode("ascii")
            else:
                src = _href(self.data.output_dir / track.relative_path("vtt"), base)
            number = self._track_label(video_id, track.prompt_id, track.config_id)
            tracks.append({"label": f"{number}. {_shorten(track.prompt, 60)}" if number else
                           _shorten(track.prompt, 60), "src": src})
        return {"codec": "", "src": path.as_uri(), "tracks": tracks}

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

    def _card(self, video_id: str, rows: list[dict[str, Any]], base: Path) -> dict[str, Any]:
        # Answers in the order of the header's numbered prompts, each with its number where
        # there are several: two prompts of one text (different schemas) stay apart.
        rows = sorted(
            rows, key=lambda row: (self.numbers.get(str(row["prompt_id"]), 0), config_label(row["config_id"]))
        )
        for row in rows:
            row["number"] = self.numbers.get(str(row["prompt_id"])) if len(self.numbers) > 1 else None
        first = rows[0]
        frame_index = int(first["frame_index"])
        video_uri = self.data.video_file(video_id, first["video_path"])[0].as_uri()
        # Rows of one frame share one thumbnail; any row's will do.
        thumbnail = next(filter(None, (thumbnail_bytes(row) for row in rows)), None)
        end_s = self.ends.get((video_id, config_label(first["config_id"]), first["frame_index"]))
        for row in rows:
            row["config_id"] = config_label(row["config_id"])
        return {
            "anchor": f"{_video_anchor(video_id)}-f{frame_index}",
            "frame_index": frame_index,
            "timecode": first["timecode"],
            "video_link": f"{video_uri}#t={float(first['timestamp_s']):.3f}",
            "thumbnail": self._thumbnail_src(thumbnail, base) if thumbnail else None,
            "until": None if end_s is None or pd.isna(end_s) else float(end_s),
            "has_error": any(row["status"] == "error" for row in rows),
            "rows": rows,
        }

    def _thumbnail_src(self, data: bytes, base: Path) -> str:
        if self.data.assets is None:
            return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        name = hashlib.sha256(data).hexdigest()[:24] + ".jpg"
        self.data.thumbnails[name] = data
        return _href(self.data.assets / "thumbs" / name, base)


def _href(target: Path, base: Path) -> str:
    """A relative URL from a page in ``base`` to ``target``."""
    return quote(Path(os.path.relpath(target, base)).as_posix())




def _video_anchor(video_id: str) -> str:
    return f"v{video_id}"


def _shorten(text: str, width: int) -> str:
    flat = " ".join(printable(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
