"""Writing the report: the rows and records of an ``output_dir`` gathered, the pages made and
written with their files, files of an earlier report that are no longer used removed."""


from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import UserError
from pipeline.export import EXPORT_DIR, Track, tracks_of, with_cue_ends, write_tracks
from pipeline.files import check_writable, write_bytes_atomic
from pipeline.owed import REPORT_PAGE
from pipeline.paths import Chosen, printable, user_path
from pipeline.ranges import Range
from pipeline.report.data import ReportData, with_run
from pipeline.report.pages import Pages
from pipeline.results import load_results
from pipeline.store import StoreError, prompt_order, prompt_schemas, read_configs, read_prompts
from pipeline.summary import read_runs
from pipeline.video_facts import read_videos
from pipeline.video_files import row_videos, video_files

log = logging.getLogger(__name__)

PAGE_FRAMES = 500


def render_report(df: pd.DataFrame, title: str) -> str:
    """One self-contained report page for result rows (thumbnails inlined, every section on it).

    Args:
        df: Rows from :func:`pipeline.results.load_results` (any subset of videos).
        title: The page's title and heading.

    Returns:
        A complete HTML document.
    """
    return Pages(df, title, ReportData(), page_frames=None).index(Path("."))


def write_report(
    output_dir: str | Path,
    out_path: str | Path | None = None,
    video_id: str | None = None,
    page_frames: int = PAGE_FRAMES,
    inline: bool = False,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write the report of the results in ``output_dir`` (and each video's VTT tracks).

    A relative ``video_path`` (as the night was given it) is placed in the folder the night ran
    in, for the links and the player, wherever this is called from
    (:func:`pipeline.video_files.video_files`).

    Args:
        output_dir: A run's ``output_dir``.
        out_path: The main page; default ``output_dir/_report.html`` (or
            ``output_dir/_report-<video_id>.html`` with ``video_id``). Its files go in the
            folder beside it named ``<page name>_files``.
        video_id: Report on this video only.
        page_frames: Up to this many frames, every section is on the main page; above, each
            video gets pages of this many frames.
        inline: One self-contained page, thumbnails inlined, whatever the size.
        run: The record of the run that writes the report, as it stands
            (:meth:`pipeline.summary.RunRecord.record`): the header shows it as the last run.

    Returns:
        The main page's path.

    Raises:
        FileNotFoundError: ``output_dir`` is not a folder a run wrote to.
        UserError: ``video_id`` is not in ``output_dir``, ``page_frames`` < 1, ``out_path`` ends
            in a slash (a folder), or a file cannot
            be written (:class:`~pipeline.errors.StoreError`; where something other than a file
            stands at the page's name, before anything is written).
        OSError: A file cannot be read.
    """
    Range(1).check("page_frames", page_frames, UserError)
    if isinstance(out_path, str) and out_path.endswith(("/", os.sep)):  # Path() would drop the slash
        raise UserError(
            f"out={out_path} names a folder (it ends in /); give the page's file name, as out={out_path}report.html"
        )
    output_dir = user_path(output_dir).resolve()
    df = load_results(output_dir)
    if video_id is not None:
        video_id = printable(video_id)  # a word that is not UTF-8 as the results would keep it
        if not df["video_id"].eq(video_id).any():
            known = ", ".join(sorted(df["video_id"].dropna().unique())) or "none"
            raise UserError(f"video_id={video_id} is not in {output_dir} (it has: {known})")
        df = df[df["video_id"] == video_id]
    default_name = REPORT_PAGE if video_id is None else f"_report-{video_id}.html"
    out = user_path(out_path).resolve() if out_path else output_dir / default_name
    chosen = Chosen(out, "choose another out=") if out_path else None  # else a name the report keeps
    check_writable(out, chosen)  # before anything is made: a device at out= stays as it is
    assets = out.with_name(f"{out.stem}_files")
    videos = read_videos(output_dir)
    prompts = read_prompts(output_dir)  # their order numbers them; their schemas type the answers
    asked = prompt_order(prompts)
    tracks = tracks_of(with_cue_ends(df, videos), asked=asked)
    if tracks:
        try:  # the track files the report links; a read-only output_dir still gets a report
            write_tracks(output_dir / EXPORT_DIR, tracks, "vtt", df["video_id"].dropna().unique())
        except (OSError, StoreError) as error:
            log.warning("subtitle tracks not written, so not linked: %s", error)
    runs = read_runs(output_dir) if run is None else with_run(read_runs(output_dir), run)
    data = ReportData(
        output_dir=output_dir,
        assets=None if inline else assets,
        configs=read_configs(output_dir),
        runs=runs,
        run=run,
        videos=videos,
        tracks=_by_video(tracks),
        schemas=prompt_schemas(prompts),
        asked=asked,
        files=video_files(row_videos(df[df["frame_index"].notna()]), runs),
    )
    pages = Pages(df, f"Captions in {output_dir}", data, page_frames=None if inline else page_frames)
    written: set[Path] = set()
    for path, page in pages.all(out):
        write_bytes_atomic(path, page.encode("utf-8"), chosen)
        written.add(path)
    for name, jpeg in data.thumbnails.items():
        path = assets / "thumbs" / name
        if not (path.is_file() and path.stat().st_size == len(jpeg)):
            write_bytes_atomic(path, jpeg)
        written.add(path)
    # Files of an earlier report that this one no longer references.
    if assets.is_dir():
        for path in assets.rglob("*"):
            if path.is_file() and path not in written and not path.name.startswith("."):
                path.unlink(missing_ok=True)
    return out


def _by_video(tracks: list[Track]) -> dict[str, list[Track]]:
    grouped: dict[str, list[Track]] = {}
    for track in tracks:
        grouped.setdefault(track.video_id, []).append(track)
    return grouped
