"""``python -m pipeline.status output_dir=DIR [runs=N]`` (also ``video-caption status ...``): how
the nights on ``output_dir`` are going, in plain text.

- **Recent runs**, newest first: start, length, how it ended (exit code; ``running`` while its
  process lives; ``did not finish`` when its record says running and the process is gone: killed,
  or its end could not be written), videos done/skipped/failed/waiting, frames, rows, frames/s.
- **Videos**: how many are done; those failing, each with its reason (``retry_failed=true`` tries
  them again); those the last run left waiting, each with why (``min_age_s``).
- **Owed**: a report or exports that a run could not write, which the next run writes.

It reads only: the run records (:mod:`pipeline.summary`), the done markers and error records of
the store, and the markers of what is owed (:mod:`pipeline.owed`); it takes no lock, so it
answers while a night runs.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.committed import missing_chunks
from pipeline.errors import UserError
from pipeline.export import FORMATS, TRACKS_INDEX
from pipeline.options import asks_help, number, parse_options
from pipeline.owed import EXPORT_DIR, behind, owed, runs_under_way, under_way
from pipeline.paths import user_path
from pipeline.runlog import console_logging, say_error
from pipeline.signals import printing_command
from pipeline.store import QUARANTINE, StoreError, read_results
from pipeline.summary import DID_NOT_FINISH, FINISHED, RUNNING, ahead_of_the_clock, engine_lines, read_runs
from pipeline.words import visible

USAGE = "usage: python -m pipeline.status output_dir=DIR [runs=N]"
_KEYS = ("output_dir", "runs")
RECENT_RUNS = 10


def status_lines(output_dir: Path, recent: int = RECENT_RUNS) -> list[str]:
    """The status of ``output_dir`` as lines of text.

    Raises:
        UserError: ``output_dir`` is not a folder.
    """
    if not output_dir.is_dir():
        raise UserError(f"output_dir {output_dir} is not a folder; pass the output_dir of your runs")
    runs = read_runs(output_dir)
    lines = [f"output_dir {output_dir}", ""]
    if runs:
        lines.append(f"Recent runs ({min(recent, len(runs))} of {len(runs)}, newest first):")
        for run in reversed(runs[-recent:]):
            lines += [f"  {_run_line(run)}", *(f"    engine {line}" for line in engine_lines(run))]
    else:
        lines.append("No runs recorded yet.")
    lines += ["", *_video_lines(output_dir, runs), "", *_owed_lines(output_dir)]
    return lines


@printing_command
def main(argv: list[str] | None = None) -> int:
    """Print the status of an ``output_dir``.

    Returns:
        0; 1 on bad arguments, an ``output_dir`` that is not a folder, or an output that cannot
        be written (``>/dev/full``, ``>&-``): one line on stderr.
    """
    args = sys.argv[1:] if argv is None else argv
    if asks_help(args, f"{USAGE}\n\n{__doc__}"):
        return 0
    console_logging()
    try:
        options = parse_options(args, _KEYS, ("output_dir",))
        lines = status_lines(user_path(options["output_dir"]).resolve(),
                             number(options, "runs", RECENT_RUNS, minimum=1))
    except UserError as error:
        say_error(str(error))
        return 1
    print("\n".join(visible(line) for line in lines))  # a name may hold a newline
    return 0


def _run_line(run: dict[str, Any]) -> str:
    started = _time(run["started"])
    state = run["state"]
    pid = run.get("pid")
    frames, rows = run.get("frames") or 0, run.get("rows") or 0
    if state == RUNNING:
        ahead = " (dated ahead of this machine's clock: its host's clock runs fast; not waited for)"
        ending = f"running (pid {pid}){ahead if ahead_of_the_clock(run) else ''}"
        length = f"{_length(started, datetime.now(timezone.utc))} so far"
        work = f"frames {frames}+  rows {rows}+ committed so far"
    elif state == DID_NOT_FINISH:
        ending = f"did not finish (pid {pid} is gone)"
        length = "?"
        work = f"frames {frames}+  rows {rows}+ committed (as last recorded)"
    else:
        ending = f"exit {run.get('exit_code')}"
        finished = _time(run["finished"]) if run.get("finished") else None
        length = _length(started, finished) if finished else f"{float(run.get('wall_s') or 0):.1f} s"
        work = f"frames {frames}  rows {rows}  {float(run.get('frames_per_s') or 0):.2f} frames/s"
    shard = f" {run['shard']}" if run.get("shard") else ""
    more = "" if state == FINISHED else "+"  # a run under way or killed: as last recorded
    counts = ", ".join(
        f"{run.get(f'videos_{key}') or 0}{more} {key}" for key in ("done", "skipped", "failed", "waiting")
    )
    return f"{started:%Y-%m-%d %H:%M:%S} UTC{shard}  {length}  {ending}  videos: {counts}  {work}"


def _video_lines(output_dir: Path, runs: list[dict[str, Any]]) -> list[str]:
    # Done and failing as the last run that told its settings sees them: a video done under
    # other settings or prompts is not done for these (its next run captions it).
    last: dict[str, Any] = next((run for run in reversed(runs) if run.get("work_id")), {})
    markers = list(output_dir.glob(f"*/_done-{last.get('work_id') or '*'}"))
    # A done video whose marker lists chunks that are gone is done no more: its next run captions them.
    reopened = {marker.parent.name: gone for marker in markers if (gone := missing_chunks(marker))}
    done = {marker.parent.name for marker in markers} - set(reopened)
    damaged: list[tuple[Path, str]] = []
    failing = {
        video_id: why for video_id, why in _failing(output_dir, damaged, last.get("config_id")).items()
        if video_id not in done
    }
    waiting = _waiting(runs)
    under = " (under the last run's settings and prompts)" if last else ""
    lines = [f"Videos{under}: {len(done)} done, {len(failing)} failing, {len(waiting)} waiting"]
    if reopened:
        lines.append("  reopened (chunks their done marker lists are gone; the next run captions those frames again):")
        lines += [f"    {video_id}: {', '.join(gone)}" for video_id, gone in sorted(reopened.items())]
    if failing:
        lines.append("  failing (retry_failed=true tries them again):")
        lines += [f"    {path}: {why}" for path, why in sorted(failing.values())]
    if damaged:
        lines.append(
            f"  chunks left out of the results, damaged, copies or strays (a run over the video moves each to "
            f"{QUARANTINE}/ and captions again what only it held):"
        )
        lines += [f"    {path}: {why}" for path, why in damaged]
    if waiting:
        lines.append(
            "  waiting (the last run left them for the next; min_age_s=0 takes them at once):"
        )
        lines += [f"    {path}: {why}" for path, why in waiting]
    return lines


def _failing(
    output_dir: Path, damaged: list[tuple[Path, str]], config_id: str | None
) -> dict[str, tuple[str, str]]:
    """video_id → (path, reason) of each video with an error record (made under ``config_id``,
    where given); chunks that do not read are added to ``damaged``."""
    columns = ["video_id", "video_path", "frame_index", "error", "config_id"]
    try:
        df = read_results(output_dir, columns=columns, damaged=damaged)
    except (OSError, StoreError, ValueError) as error:
        return {"?": ("(error records)", f"cannot be read: {error}")}
    records = df[df["frame_index"].isna() & (config_id is None or df["config_id"].eq(config_id))]
    return {str(v): (str(p), str(e)) for v, p, e in zip(records["video_id"], records["video_path"], records["error"])}


def _waiting(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The videos the current runs left waiting, with why. Current: the last ended run (finished
    or killed) of each shard of the newest sharding; a shard's record older than a later run with
    another ``num_shards`` is not (an unsharded night after sharded ones, or the other way round).
    A video that a later run took (captioned, failed, skipped, or planned to caption: any state
    but waiting) waits no more."""
    ended = [(i, run) for i, run in enumerate(runs) if run["state"] != RUNNING]
    current: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, run in reversed(ended):
        if _num_shards(run) != _num_shards(ended[-1][1]):
            break
        current.setdefault(str(run.get("shard") or ""), (i, run))
    found = []
    for i, run in sorted(current.values(), key=lambda entry: entry[0]):
        taken = {
            str(video.get("path")) for later in runs[i + 1:] for video in later.get("videos") or []
            if video.get("status") != "waiting"
        }
        for video in run.get("videos") or []:
            if video.get("status") == "waiting" and str(video.get("path")) not in taken:
                why = video.get("note") or "not settled"
                if "min_age_s" not in why:
                    why += f" (min_age_s={run.get('min_age_s')})"
                found.append((str(video.get("path")), why))
    return found


def _num_shards(run: dict[str, Any]) -> str:
    """The ``<n>`` of a shard's record (``shard<i>of<n>``), "" for an unsharded run."""
    return str(run.get("shard") or "").partition("of")[2]


def _owed_lines(output_dir: Path) -> list[str]:
    due = owed(output_dir)
    runs = under_way(output_dir)  # their later captions would be missing from a report written now
    lines = []
    if due["report"] is not None:
        now = f", or python -m pipeline.report output_dir={output_dir}"
        lines.append(f"  the report (owed since the run of {_since(due['report'])}): "
                     + (runs_under_way(runs) if runs else f"the next run with report=true writes it{now}"))
    if due["export"] is not None:
        formats = ",".join(due["export"]["formats"])
        now = f", or python -m pipeline.export output_dir={output_dir} format={formats}"
        lines.append(f"  the export {formats} (owed since the run of {_since(due['export'])}): "
                     + (runs_under_way(runs) if runs else f"the next run writes it{now}"))
    late = _late_lines(output_dir)
    head = ["Owed:", *lines] if lines else ["Owed: nothing" + ("" if late else " (report and exports are up to date)")]
    return head + (["Out of date:", *late] if late else [])


def _late_lines(output_dir: Path) -> list[str]:
    """A line for the report and the export that miss captions committed since they were
    written (:func:`pipeline.owed.behind`), with the command that writes each again."""
    lines = []
    for kind, written in behind(output_dir).items():
        if kind == "report":
            what, asked, again = "the report", "report=true", f"python -m pipeline.report output_dir={output_dir}"
        else:
            formats = ",".join(_export_formats(output_dir / EXPORT_DIR)) or "all"
            again = f"python -m pipeline.export output_dir={output_dir} format={formats}"
            what, asked = "the export", "export="
        lines.append(f"  {what} (written {_since({'since': written})}) lacks captions committed since "
                     f"(nights without {asked}): {again} writes it again")
    return lines


def _export_formats(folder: Path) -> list[str]:
    """The formats an export folder holds, by its files' suffixes (its index aside)."""
    held = {path.suffix[1:] for path in folder.rglob("*") if path.name != TRACKS_INDEX and path.is_file()}
    return [fmt for fmt in FORMATS if fmt in held]


def _since(marker: dict[str, Any]) -> str:
    since = marker.get("since")  # a marker that fits (pipeline.owed.MARKER_FIELDS), or a file's time
    if since is None:
        return "?"
    return f"{datetime.fromtimestamp(since, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def _time(iso: str) -> datetime:
    """A time of a run record (:data:`~pipeline.summary.RUN_FIELDS`: with its offset) in UTC."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc)


def _length(started: datetime, ended: datetime) -> str:
    seconds = max((ended - started).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d} min"


if __name__ == "__main__":
    sys.exit(main())
