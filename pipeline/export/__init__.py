"""Subtitle tracks and flat files of a run's answers: WebVTT, SRT, JSONL and CSV.

``python -m pipeline.export output_dir=DIR format=vtt|srt|jsonl|csv[,...] [video=PATH|NAME|ID]
[layout=by_video|beside] [out=DIR]`` writes under ``DIR/_export/`` (the leading underscore keeps
Parquet readers away)::

    _export/<video stem>/<video stem>.prompt<N>.vtt   a track per video and prompt (layout=by_video)
    _export/<video stem>/<video stem>.prompt<N>.srt
    _export/tracks.csv                                which track holds which video and prompt
    _export/captions.jsonl, _export/captions.csv      every row, with its cue's end time

With ``layout=beside`` the tracks sit in the videos' own folders below their common folder, to be
copied beside the videos (:mod:`pipeline.export.names` has the naming rules).

A track's cues follow the video: each answer shows from its frame's ``timestamp_s`` until the
next sampled frame of the video; with ``sampler=scene``, until the shot's end where that comes
first (a fallback frame's answer ends at the next fallback frame). The last answer shows until
the video's end when the video was decoded to its end, so any player (VLC, a browser's
``<track>``) shows the answers over the video. An answer cut by ``generation.max_tokens``
(``finish_reason == "length"``) ends with `` …``; a failed answer shows as
``[no answer: <reason>]``.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.decode import format_timecode
from pipeline.export.cues import LAST_CUE_S, cue_ends, with_cue_ends
from pipeline.export.flat import csv_bytes, jsonl
from pipeline.export.names import (
    CAPTIONS_CSV,
    CAPTIONS_JSONL,
    LAYOUTS,
    TRACKS_INDEX,
    beside_places,
    fit_name,
    indexed_files,
    select_video,
    video_folders,
)
from pipeline.files import write_bytes_atomic
from pipeline.options import OptionError, asks_help, parse_options
from pipeline.owed import EXPORT_DIR, FORMATS, settle_export
from pipeline.paths import Chosen, user_path, what_stands_at
from pipeline.results import config_label, printable, prompt_numbers, typed_answers
from pipeline.runlog import console_logging, say_error
from pipeline.signals import printing_command, show
from pipeline.store import (
    StoreError,
    prompt_order,
    prompt_schemas,
    read_prompts,
    read_results,
    results_folder,
)
from pipeline.summary import read_runs
from pipeline.video_facts import read_videos
from pipeline.video_files import row_videos, video_files
from pipeline.words import plural, visible

__all__ = [
    "CUT_MARK", "EXPORT_DIR", "FORMATS", "LAST_CUE_S", "LAYOUTS", "TRACK_FORMATS", "Cue", "Exported", "Track",
    "cue_ends", "export", "main", "parse_formats", "render_srt", "render_vtt", "tracks_of",
    "with_cue_ends", "write_tracks",
]

USAGE = (
    "usage: python -m pipeline.export output_dir=DIR format=vtt|srt|jsonl|csv[,...] "
    "[video=PATH|NAME|ID] [layout=by_video|beside] [out=DIR]"
)
_KEYS = ("output_dir", "format", "video", "video_id", "layout", "out")
TRACK_FORMATS = ("vtt", "srt")
CUT_MARK = " …"

# Rows as the flat files carry them: every column but the thumbnail, plus the cue's end (and,
# after these, the typed columns of the answers' schemas: pipeline.results.typed_answers).
FLAT_COLUMNS = [
    "video_path", "video_id", "frame_index", "timestamp_s", "end_s", "timecode", "prompt_id",
    "prompt", "answer", "answer_json", "finish_reason", "status", "error", "model", "config_id",
    "prompt_tokens", "completion_tokens", "latency_ms", "sample_reason", "shot_index",
    "shot_start_s", "duplicate_of",
]
_READ_COLUMNS = [c for c in FLAT_COLUMNS if c != "end_s"]


@dataclass(frozen=True)
class Cue:
    """One answer on screen.

    Attributes:
        frame_index: The frame it is about.
        start_s: Its frame's ``timestamp_s``.
        end_s: When the next sampled frame (or the shot, or the video) begins.
        text: What it shows: the answer (`` …`` appended where cut by ``max_tokens``) or
            ``[no answer: <reason>]``, with control characters made visible.
    """

    frame_index: int
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Track:
    """The answers to one prompt about one video, made with one ``config_id``, as cues.

    Attributes:
        number: The prompt's number, as the report numbers the prompts (from 1).
        label: What the file name says of the prompt: ``prompt<number>``, and
            ``-<config_id>`` where the video has answers under several settings.
        folder: The video's folder in the ``by_video`` layout.
        beside: The video's folder below the videos' common one, and the stem its tracks
            take, in the ``beside`` layout.
    """

    video_id: str
    video_path: str
    config_id: str
    model: str
    prompt_id: str
    prompt: str
    cues: list[Cue]
    number: int
    label: str
    folder: str
    beside: tuple[str, str]

    def path(self, fmt: str, layout: str = "by_video") -> str:
        """Where :func:`export` writes it in ``layout``, relative to the export folder (``/``)."""
        if layout == "beside":
            folder, stem = self.beside
            return f"{folder}/{self.file_name(fmt, stem)}".lstrip("/")
        return f"{self.folder}/{self.file_name(fmt, self.folder)}"

    def file_name(self, fmt: str, stem: str) -> str:
        """``<stem>.<label>.<fmt>``, as players look for a track of ``<stem>.<extension>``."""
        return fit_name(stem, f".{self.label}.{fmt}")

    def relative_path(self, fmt: str) -> str:
        """Where :func:`export` writes it by default, relative to ``output_dir`` (with ``/``)."""
        return f"{EXPORT_DIR}/{self.path(fmt)}"


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote.

    Attributes:
        folder: The export folder.
        files: Every file written.
        tracks: The subtitle tracks (each written once per track format asked for).
        rows: Rows in the flat files (0 when neither ``jsonl`` nor ``csv`` was asked for).
    """

    folder: Path
    files: list[Path]
    tracks: list[Track]
    rows: int


def parse_formats(value: Any) -> list[str]:
    """The export formats in ``value``: ``"vtt"``, ``"vtt,srt"``, ``"all"``, a list of those,
    or nothing (``None``, ``""``, ``[]``: no export).

    Raises:
        ValueError: An unknown format.
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    formats: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower().lstrip(".")
            if not name:
                continue
            if name == "all":
                formats.extend(FORMATS)
            elif name in FORMATS:
                formats.append(name)
            else:
                raise ValueError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)} or all")
    return list(dict.fromkeys(formats))


def tracks_of(df: pd.DataFrame, videos: pd.DataFrame | None = None, asked: Sequence[str] = ()) -> list[Track]:
    """The subtitle tracks of result rows: one per video, ``config_id`` and prompt, named
    (numbers, labels, folders) from all of ``df``'s videos and prompts.

    Args:
        df: Rows from :func:`pipeline.results.load_results` or :func:`pipeline.store.read_results`.
        videos: Per-video facts (:func:`pipeline.video_facts.read_videos`); without them the last cue
            of each track gets the median gap. Unused where ``df`` already has ``end_s``
            (:func:`with_cue_ends`).
        asked: The output folder's prompts in the order first asked
            (:func:`pipeline.store.prompt_order`), which numbers them; without it, the
            order they first appear in the rows.
    """
    ends = df if "end_s" in df.columns else with_cue_ends(df, videos)
    # A missing config_id (a file written before it was kept) makes tracks of its own; a row
    # without a video or prompt makes none.
    answered = ends[ends["frame_index"].notna() & ends["video_id"].notna() & ends["prompt_id"].notna()]
    # Numbered as the report numbers its prompts and their tracks; rows in load_results' order
    # (videos by path, frames by time, a frame's prompts as asked) for prompts not in ``asked``.
    numbers = prompt_numbers(ends.sort_values(["video_path", "timestamp_s", "frame_index"], kind="stable"), asked)
    paths = _video_paths(ends)
    folders, places = video_folders(paths), beside_places(paths)
    settings = answered.groupby("video_id")["config_id"].nunique(dropna=False)
    tracks = []
    for (video_id, config_id, prompt_id), rows in answered.groupby(
        ["video_id", "config_id", "prompt_id"], sort=True, dropna=False
    ):
        rows = rows.sort_values("timestamp_s", kind="stable")
        cues = [
            Cue(int(frame_index), float(start_s), float(end_s), _cue_text(row))
            for frame_index, start_s, end_s, row in zip(
                rows["frame_index"].tolist(), rows["timestamp_s"].tolist(), rows["end_s"].tolist(),
                rows.itertuples(),
            )
        ]
        first = rows.iloc[0]
        number = numbers[str(prompt_id)]
        tracks.append(
            Track(
                video_id=str(video_id),
                video_path=paths[str(video_id)],
                config_id=config_label(config_id),
                model=str(first["model"]),
                prompt_id=str(prompt_id),
                prompt=str(first["prompt"]),
                cues=cues,
                number=number,
                label=f"prompt{number}" + (f"-{_label_part(config_id)}" if settings[video_id] > 1 else ""),
                folder=folders[str(video_id)],
                beside=places[str(video_id)],
            )
        )
    return sorted(tracks, key=lambda t: (t.video_path, t.video_id, t.config_id, t.number))


def render_vtt(track: Track) -> str:
    """The track as WebVTT (W3C WebVTT: header, NOTE blocks, cues with ``HH:MM:SS.mmm``).

    Cue text is escaped (``&``, ``<``, ``>``), so an answer can never close a cue, start a tag
    or hold ``-->``; line breaks are kept, blank lines dropped (a blank line would end the cue).
    """
    notes = [
        f"video: {track.video_path}",
        f"video_id: {track.video_id}",
        f"prompt: {track.prompt}",
        f"model: {track.model}",
        f"config_id: {track.config_id}",
        "made by: python -m pipeline.export",
    ]
    out = io.StringIO()
    out.write("WEBVTT\n\n")
    for note in notes:
        # A comment is not parsed for markup; it only must not hold "-->".
        out.write(f"NOTE {_one_line(note).replace('-->', '→')}\n\n")
    for cue in track.cues:
        out.write(f"frame-{cue.frame_index}\n")
        out.write(f"{_timestamp(cue.start_s, '.')} --> {_timestamp(cue.end_s, '.')}\n")
        out.write(f"{_vtt_escape(_lines(cue.text))}\n\n")
    return out.getvalue()


def render_srt(track: Track) -> str:
    """The track as SubRip: numbered cues with ``HH:MM:SS,mmm``.

    SRT has no escaping: ``-->`` in an answer becomes ``→``, blank lines are dropped; players may
    read ``<i>``-like text in an answer as a tag.
    """
    out = io.StringIO()
    for number, cue in enumerate(track.cues, start=1):
        out.write(f"{number}\n{_timestamp(cue.start_s, ',')} --> {_timestamp(cue.end_s, ',')}\n")
        out.write(f"{_lines(cue.text).replace('-->', '→')}\n\n")
    return out.getvalue()


def export(
    output_dir: str | Path,
    formats: Sequence[str],
    video: str | None = None,
    out: str | Path | None = None,
    layout: str = "by_video",
) -> Exported:
    """Write the answers in ``output_dir`` as subtitle tracks and flat files.

    Args:
        output_dir: A run's ``output_dir``.
        formats: Any of :data:`FORMATS`.
        video: Export this video only (its index and flat files go in its ``by_video``
            folder): its video_id, path, file name or stem.
        out: The export folder; default ``output_dir/_export``.
        layout: ``by_video`` or ``beside`` (:mod:`pipeline.export.names`).

    Returns:
        What was written. Track files of the formats asked for that no longer belong to a track
        (of the videos exported) are removed: in ``by_video``, any in the video's folder; in
        ``beside``, those the previous export listed in its index.

    Raises:
        FileNotFoundError: ``output_dir`` is not a folder a run wrote to.
        ValueError: An unknown format or layout, or ``video`` names no video or several.
        StoreError: A file cannot be written.
    """
    formats = parse_formats(list(formats))
    if not formats:
        raise ValueError(f"give at least one format: {', '.join(FORMATS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout={layout}; choose {' or '.join(LAYOUTS)}")
    root = results_folder(output_dir)
    folder = user_path(out).resolve() if out else root / EXPORT_DIR
    chosen = Chosen(folder, "choose another out=") if out else None  # else a name the export keeps
    prompts = read_prompts(root)  # their schemas type the answers, their order numbers them
    videos = read_videos(root)
    df = with_cue_ends(load_rows(root, prompt_schemas(prompts)), videos)
    tracks = tracks_of(df, videos, prompt_order(prompts))  # named from every video, whichever is exported
    index_folder = folder
    if video is not None:
        video_id = select_video(df, video, lambda: video_files(row_videos(df), read_runs(root)))
        index_folder = folder / video_folders(_video_paths(df))[video_id]
        df = df[df["video_id"] == video_id]
        tracks = [t for t in tracks if t.video_id == video_id]
    video_ids = df["video_id"].dropna().unique()
    index = index_folder / TRACKS_INDEX
    files: list[Path] = []
    track_formats = [f for f in formats if f in TRACK_FORMATS]
    for fmt in track_formats:
        files += write_tracks(folder, tracks, fmt, video_ids, layout, index, chosen)
    if track_formats:
        files.append(_write(index, _tracks_index(tracks, track_formats, layout), chosen))
    flat = df[FLAT_COLUMNS + [c for c in df.columns if c not in _READ_COLUMNS and c != "end_s"]]
    if "jsonl" in formats:
        files.append(_write(index_folder / CAPTIONS_JSONL, jsonl(flat), chosen))
    if "csv" in formats:
        rows_csv = csv_bytes(flat.to_dict("records"), list(flat.columns))
        files.append(_write(index_folder / CAPTIONS_CSV, rows_csv, chosen))
    rows = len(flat) if {"jsonl", "csv"} & set(formats) else 0
    return Exported(folder=folder, files=files, tracks=tracks, rows=rows)


def write_tracks(
    folder: Path,
    tracks: list[Track],
    fmt: str,
    video_ids: Iterable[str],
    layout: str = "by_video",
    index: Path | None = None,
    chosen: Chosen | None = None,
) -> list[Path]:
    """Write each track as a ``fmt`` file under ``folder`` in ``layout``, and remove the
    ``fmt`` files of ``video_ids`` that no longer belong to a track: those the previous
    ``index`` lists (a video whose folder was renamed because another now shares its stem, a
    prompt gone), and in ``by_video`` any other in their folders. ``beside`` touches nothing
    else: its folders hold other files, possibly the videos themselves. The index is the
    caller's.

    Raises:
        StoreError: A file cannot be written.
    """
    render = render_vtt if fmt == "vtt" else render_srt
    files = []
    for track in tracks:
        path = folder / track.path(fmt, layout)
        write_bytes_atomic(path, render(track).encode("utf-8"), chosen)
        files.append(path)
    written = set(files)
    ids = {str(v) for v in video_ids}
    stale = [folder / name for name in indexed_files(index, fmt, ids)]
    if layout == "by_video":
        stale += [p for t in tracks if t.video_id in ids for p in (folder / t.folder).glob(f"*.{fmt}")]
    for path in stale:
        if path not in written and what_stands_at(path) is None:  # a file of ours: no pipe, folder or device
            path.unlink(missing_ok=True)
            if layout == "by_video" and path.parent != folder:
                with contextlib.suppress(OSError):  # a folder of ours left empty (a renamed video's)
                    path.parent.rmdir()
    return files


def load_rows(output_dir: Path, schemas: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every result row but the thumbnails, by video, settings and time, with the typed columns
    of the answers' ``schemas`` (:func:`pipeline.results.typed_answers`); a frame's rows in the
    order its prompts were asked."""
    df = typed_answers(read_results(output_dir, columns=_READ_COLUMNS), schemas)
    order = ["video_path", "video_id", "config_id", "timestamp_s", "frame_index"]
    return df.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


@printing_command
def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.export``: parse ``key=value`` arguments and export.

    Returns:
        0 when written, 1 on bad arguments or a failure (one line on stderr says which; an
        output that cannot be written is one: the export stays written).
    """
    args = sys.argv[1:] if argv is None else argv
    if asks_help(args, USAGE):
        return 0
    console_logging()  # a warning while reading (a property with no column) is a [hh:mm:ss WARNING] line
    try:
        options = parse_options(args, _KEYS, ("output_dir", "format"))
        formats = parse_formats(options["format"])
        if "video" in options and "video_id" in options:
            raise ValueError("give video= or video_id=, not both")
    except (OptionError, ValueError) as error:
        say_error(f"{error}; {USAGE}")
        return 1
    try:
        done = export(
            options["output_dir"], formats, options.get("video", options.get("video_id")),
            options.get("out"), options.get("layout", "by_video"),
        )
        if not {"out", "video", "video_id", "layout"} & set(options):  # where a night exports
            settle_export(done.folder.parent, formats, list(FORMATS))
    except (ValueError, OSError, StoreError) as error:
        say_error(str(error))
        return 1
    tracks = len(done.tracks) if set(formats) & set(TRACK_FORMATS) else 0
    counts = f"{plural(len(done.files), 'file')} ({plural(tracks, 'track')}, {plural(done.rows, 'row')})"
    return show(visible(f"wrote {counts} to {done.folder}"), visible(f"the export is written: {done.folder}"))


# -- helpers --------------------------------------------------------------------------------


def _video_paths(df: pd.DataFrame) -> dict[str, str]:
    """Each video's path (the first by name where its rows name several; its id where none)."""
    paths = df.dropna(subset=["video_id"]).groupby("video_id")["video_path"].min()
    return {str(v): str(p) if isinstance(p, str) else str(v) for v, p in paths.items()}


def _label_part(config_id: Any) -> str:
    """A track's ``config_id`` as its file name holds it (no space where none was recorded)."""
    return "no-config-id" if pd.isna(config_id) else str(config_id)


def _cue_text(row: Any) -> str:
    if row.status != "ok":
        return f"[no answer: {row.error if isinstance(row.error, str) else 'unknown error'}]"
    answer = row.answer if isinstance(row.answer, str) else ""
    text = answer.strip() or "[empty answer]"
    if row.finish_reason == "length":
        text += CUT_MARK
    # Line breaks stay line breaks (CR LF and CR too); other control characters become visible.
    return printable(text.replace("\r\n", "\n").replace("\r", "\n"))


def _lines(text: str) -> str:
    """Non-empty lines of ``text``, joined by newlines (a blank line would end a cue)."""
    lines = (line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line) or "[empty answer]"


def _one_line(text: str) -> str:
    return " ".join(printable(text).split())


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _timestamp(seconds: float, separator: str) -> str:
    return format_timecode(max(seconds, 0.0), separator)


def _tracks_index(tracks: list[Track], formats: Sequence[str], layout: str) -> bytes:
    columns = ["video_path", "video_id", "config_id", "model", "number", "prompt_id", "prompt", "cues"]
    columns += list(formats)
    records = [
        {
            "video_path": t.video_path, "video_id": t.video_id, "config_id": t.config_id,
            "model": t.model, "number": t.number, "prompt_id": t.prompt_id, "prompt": t.prompt,
            "cues": len(t.cues), **{f: t.path(f, layout) for f in formats},
        }
        for t in tracks
    ]
    return csv_bytes(records, columns)


def _write(path: Path, data: bytes, chosen: Chosen | None) -> Path:
    write_bytes_atomic(path, data, chosen)
    return path


