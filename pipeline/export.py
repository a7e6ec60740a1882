"""Subtitle tracks and flat files of a run's answers: WebVTT, SRT, JSONL and CSV.

``python -m pipeline.export output_dir=DIR format=vtt|srt|jsonl|csv[,...] [video_id=ID] [out=DIR]``
writes under ``DIR/_export/`` (the leading underscore keeps Parquet readers away)::

    _export/<video_id>/<video stem>.<prompt_id>.<config_id>.vtt   a track per video, prompt and settings
    _export/<video_id>/<video stem>.<prompt_id>.<config_id>.srt
    _export/tracks.csv                                            which track holds which video and prompt
    _export/captions.jsonl, _export/captions.csv                  every row, with its cue's end time

A track's cues follow the video: each answer shows from its frame's ``timestamp_s`` until the
next sampled frame of the video; with ``sampler=scene``, until the shot's end where that comes
first (a fallback frame's answer ends at the next fallback frame). The last answer shows until
the video's end when the video was decoded to its end, so any player (VLC, a browser's
``<track>``) shows the answers over the video. An answer cut by ``generation.max_tokens``
(``finish_reason == "length"``) ends with `` …``; a failed answer shows as
``[no answer: <reason>]``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.decode import format_timecode
from pipeline.files import write_bytes_atomic
from pipeline.options import OptionError, parse_options
from pipeline.results import printable, typed_answers
from pipeline.runlog import say_error
from pipeline.store import StoreError, read_prompt_schemas, read_results, read_videos
from pipeline.structured import json_value
from pipeline.words import plural

USAGE = (
    "usage: python -m pipeline.export output_dir=DIR format=vtt|srt|jsonl|csv[,...] "
    "[video_id=ID] [out=DIR]"
)
_KEYS = ("output_dir", "format", "video_id", "out")
FORMATS = ("vtt", "srt", "jsonl", "csv")
TRACK_FORMATS = ("vtt", "srt")
EXPORT_DIR = "_export"
TRACKS_INDEX = "tracks.csv"
CUT_MARK = " …"
# When a video's end is unknown (older runs, or decoding stopped at max_frames), the last answer
# shows for the median gap between the track's frames, or this long with a single frame.
LAST_CUE_S = 1.0

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
    """The answers to one prompt about one video, made with one ``config_id``, as cues."""

    video_id: str
    video_path: str
    config_id: str
    model: str
    prompt_id: str
    prompt: str
    cues: list[Cue]

    def file_name(self, fmt: str) -> str:
        """``<video stem>.<prompt_id>.<config_id>.<fmt>``: the video's name first, so the file
        says which video it belongs to when copied elsewhere."""
        return f"{_safe_stem(self.video_path)}.{self.prompt_id}.{self.config_id}.{fmt}"

    def relative_path(self, fmt: str) -> str:
        """Where :func:`export` writes it, relative to ``output_dir`` (with ``/``)."""
        return f"{EXPORT_DIR}/{self.video_id}/{self.file_name(fmt)}"


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


def cue_ends(frames: pd.DataFrame, video_end_s: float | None) -> pd.Series:
    """When each sampled frame's answers stop showing.

    Args:
        frames: One row per sampled frame of one video and ``config_id`` (``timestamp_s``,
            ``shot_index``, ``shot_start_s``), in time order.
        video_end_s: The video's end (``duration_s`` of a video decoded to its end), or ``None``
            when unknown.

    Returns:
        ``end_s`` by the frames' index: the next frame's time; with shots, the next shot's start
        where the next frame is the first of the following shot; the last frame's, the video's
        end (else its time plus the median gap, or :data:`LAST_CUE_S`, capped by
        ``video_end_s``). Always after the frame's own time.
    """
    starts = frames["timestamp_s"].astype(float).to_numpy()
    ends = [math.nan] * len(starts)
    shots = frames["shot_index"].tolist()
    shot_starts = frames["shot_start_s"].tolist()
    for i in range(len(starts) - 1):
        end = starts[i + 1]
        this_shot, next_shot = shots[i], shots[i + 1]
        if not pd.isna(this_shot) and not pd.isna(next_shot) and next_shot == this_shot + 1:
            next_start = shot_starts[i + 1]
            if not pd.isna(next_start) and starts[i] < next_start < end:
                end = float(next_start)
        ends[i] = end
    if len(starts):
        last = starts[-1]
        if video_end_s is not None and video_end_s > last:
            ends[-1] = video_end_s
        else:
            gaps = [b - a for a, b in itertools.pairwise(starts) if b > a]
            ends[-1] = last + (float(pd.Series(gaps).median()) if gaps else LAST_CUE_S)
    # A cue needs a length a player can show: at least a millisecond.
    return pd.Series([max(end, start + 0.001) for start, end in zip(starts, ends)], index=frames.index)


def tracks_of(df: pd.DataFrame, videos: pd.DataFrame | None = None) -> list[Track]:
    """The subtitle tracks of result rows: one per video, ``config_id`` and prompt.

    Args:
        df: Rows from :func:`pipeline.results.load_results` or :func:`pipeline.store.read_results`.
        videos: Per-video facts (:func:`pipeline.store.read_videos`); without them the last cue
            of each track gets the median gap. Unused where ``df`` already has ``end_s``
            (:func:`with_cue_ends`).
    """
    ends = df if "end_s" in df.columns else with_cue_ends(df, videos)
    answered = ends[ends["frame_index"].notna()]
    tracks = []
    for (video_id, config_id, prompt_id), rows in answered.groupby(
        ["video_id", "config_id", "prompt_id"], sort=True
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
        tracks.append(
            Track(
                video_id=str(video_id),
                video_path=_video_path(ends, str(video_id)),
                config_id=str(config_id),
                model=str(first["model"]),
                prompt_id=str(prompt_id),
                prompt=str(first["prompt"]),
                cues=cues,
            )
        )
    return tracks


def with_cue_ends(df: pd.DataFrame, videos: pd.DataFrame | None = None) -> pd.DataFrame:
    """``df`` with an ``end_s`` column: when each answer's cue ends (see :func:`cue_ends`); null
    for video-level error records."""
    out = df.copy()
    out["end_s"] = math.nan
    answered = out[out["frame_index"].notna()]
    video_end = _video_ends(videos)
    for (video_id, _config_id), rows in answered.groupby(["video_id", "config_id"], sort=False):
        frames = (
            rows.sort_values(["timestamp_s", "frame_index"], kind="stable")
            .drop_duplicates("frame_index")
            .set_index("frame_index")
        )
        ends = cue_ends(frames, video_end.get(str(video_id)))
        out.loc[rows.index, "end_s"] = rows["frame_index"].map(ends).astype(float).to_numpy()
    return out


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
    video_id: str | None = None,
    out: str | Path | None = None,
) -> Exported:
    """Write the answers in ``output_dir`` as subtitle tracks and flat files.

    Args:
        output_dir: A run's ``output_dir``.
        formats: Any of :data:`FORMATS`.
        video_id: Export this video only (flat files go in its folder).
        out: The export folder; default ``output_dir/_export``.

    Returns:
        What was written. Track files of the formats asked for that no longer belong to a track
        (of the videos exported) are removed.

    Raises:
        FileNotFoundError: ``output_dir`` is not a folder.
        ValueError: An unknown format, or ``video_id`` is not in ``output_dir``.
        StoreError: A file cannot be written.
    """
    formats = parse_formats(list(formats))
    if not formats:
        raise ValueError(f"give at least one format: {', '.join(FORMATS)}")
    root = Path(output_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"output_dir {root} is not a folder; run the pipeline first or pass its output_dir"
        )
    folder = Path(out).expanduser().resolve() if out else root / EXPORT_DIR
    df = load_rows(root)
    if video_id is not None:
        if not df["video_id"].eq(video_id).any():
            known = ", ".join(sorted(df["video_id"].dropna().unique())) or "none"
            raise ValueError(f"video_id={video_id} is not in {root} (it has: {known})")
        df = df[df["video_id"] == video_id]
    videos = read_videos(root)
    df = with_cue_ends(df, videos)
    tracks = tracks_of(df, videos)
    files: list[Path] = []
    for fmt in (f for f in formats if f in TRACK_FORMATS):
        files += write_tracks(folder, tracks, fmt, df["video_id"].dropna().unique())
    if any(f in TRACK_FORMATS for f in formats):
        files.append(_write_tracks_index(folder, tracks, formats, video_id))
    flat = df[FLAT_COLUMNS + [c for c in df.columns if c not in _READ_COLUMNS and c != "end_s"]]
    flat_folder = folder if video_id is None else folder / video_id
    if "jsonl" in formats:
        files.append(_write(flat_folder / "captions.jsonl", _jsonl(flat)))
    if "csv" in formats:
        files.append(_write(flat_folder / "captions.csv", _csv(flat.to_dict("records"), list(flat.columns))))
    rows = len(flat) if {"jsonl", "csv"} & set(formats) else 0
    return Exported(folder=folder, files=files, tracks=tracks, rows=rows)


def write_tracks(folder: Path, tracks: list[Track], fmt: str, video_ids: Iterable[str]) -> list[Path]:
    """Write each track as a ``fmt`` file under ``folder/<video_id>/`` and remove the ``fmt``
    files of ``video_ids`` that no longer belong to a track; the index is the caller's.

    Raises:
        StoreError: A file cannot be written.
    """
    render = render_vtt if fmt == "vtt" else render_srt
    files = []
    for track in tracks:
        path = folder / track.video_id / track.file_name(fmt)
        write_bytes_atomic(path, render(track).encode("utf-8"))
        files.append(path)
    written = set(files)
    for video_id in video_ids:
        for path in (folder / str(video_id)).glob(f"*.{fmt}"):
            if path not in written:
                path.unlink(missing_ok=True)
    return files


def load_rows(output_dir: Path) -> pd.DataFrame:
    """Every result row but the thumbnails, by video, settings and time, with the typed columns
    of the answers' schemas (:func:`pipeline.results.typed_answers`)."""
    df = typed_answers(read_results(output_dir, columns=_READ_COLUMNS), read_prompt_schemas(output_dir))
    order = ["video_path", "video_id", "config_id", "timestamp_s", "frame_index", "prompt_id"]
    return df.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.export``: parse ``key=value`` arguments and export.

    Returns:
        0 when written, 1 on bad arguments or a failure (one line on stderr says which).
    """
    args = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in args):
        print(USAGE)
        return 0
    try:
        options = parse_options(args, _KEYS, ("output_dir", "format"))
        formats = parse_formats(options["format"])
    except (OptionError, ValueError) as error:
        say_error(f"{error}; {USAGE}")
        return 1
    try:
        done = export(options["output_dir"], formats, options.get("video_id"), options.get("out"))
    except (ValueError, OSError, StoreError) as error:
        say_error(str(error))
        return 1
    tracks = len(done.tracks) if set(formats) & set(TRACK_FORMATS) else 0
    counts = f"{plural(len(done.files), 'file')} ({plural(tracks, 'track')}, {plural(done.rows, 'row')})"
    print(f"wrote {counts} to {done.folder}")
    return 0


# -- helpers --------------------------------------------------------------------------------


def _video_ends(videos: pd.DataFrame | None) -> dict[str, float]:
    """Each video's end, where it was decoded to its end."""
    if videos is None or videos.empty:
        return {}
    complete = videos[videos["frames_decoded"].notna() & videos["duration_s"].notna()]
    return {str(v): float(d) for v, d in zip(complete["video_id"], complete["duration_s"])}


def _video_path(df: pd.DataFrame, video_id: str) -> str:
    paths = df.loc[df["video_id"] == video_id, "video_path"].dropna()
    return str(min(paths.unique())) if len(paths) else video_id


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


def _safe_stem(video_path: str) -> str:
    stem = Path(video_path).stem or "video"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:60] or "video"


def _plain(value: Any) -> Any:
    """A JSON/CSV value: nulls (None, NaN, NA) become None, numpy scalars Python ones."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _jsonl(flat: pd.DataFrame) -> bytes:
    """One JSON object per row; ``answer_json`` as the parsed value itself, not its text."""
    lines = (
        json.dumps(
            {k: json_value(v) if k == "answer_json" else _plain(v) for k, v in record.items()},
            ensure_ascii=False,
        )
        for record in flat.to_dict("records")
    )
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def _csv(records: Iterable[Mapping[Any, Any]], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _plain(record.get(k)) for k in columns})
    return out.getvalue().encode("utf-8")


def _write_tracks_index(
    folder: Path, tracks: list[Track], formats: Sequence[str], video_id: str | None
) -> Path:
    columns = ["video_path", "video_id", "config_id", "model", "prompt_id", "prompt", "cues"]
    columns += [f for f in formats if f in TRACK_FORMATS]
    records = [
        {
            "video_path": t.video_path, "video_id": t.video_id, "config_id": t.config_id,
            "model": t.model, "prompt_id": t.prompt_id, "prompt": t.prompt, "cues": len(t.cues),
            **{f: f"{t.video_id}/{t.file_name(f)}" for f in formats if f in TRACK_FORMATS},
        }
        for t in tracks
    ]
    path = folder / TRACKS_INDEX if video_id is None else folder / video_id / TRACKS_INDEX
    return _write(path, _csv(records, columns))


def _write(path: Path, data: bytes) -> Path:
    write_bytes_atomic(path, data)
    return path


if __name__ == "__main__":
    sys.exit(main())
