"""Work a night owes after its captions: the report and the exports, kept as markers in
``output_dir`` until they are written.

A run that starts captioning with ``report=true`` makes ``_report-due``, and with ``export=``
makes ``_export-due`` (the formats owed, merged with any already owed); each marker goes once
its files are written. A run killed before then, or whose export failed (a full disk), leaves
the marker, and the next run writes what is owed, whether or not it captions anything.
``python -m pipeline.report`` and ``python -m pipeline.export``, writing to the night's place,
settle it too, unless a run is under way (:func:`under_way`: its later captions would be
missing from them). ``python -m pipeline.status`` shows what is owed.

Shards of one night (``shard=i num_shards=n``) run at once on one ``output_dir``: what is owed
is written by the last of them to finish captioning (:func:`last_to_finish`), so that it holds
every shard's videos; one that ends while a sibling still captions leaves it owed, for that
sibling to write. A sibling killed on this host (its record says running, its process is gone)
is not waited for. A marker is dropped only if it is still the file that was there when the
run looked (:class:`Looked`), before it wrote: one that a run owed again meanwhile stays.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import StoreError
from pipeline.files import read_json, write_json_atomic
from pipeline.paths import in_place_of_a_file
from pipeline.shapes import Fields, epoch_s, list_of, misfit, one_of, optional
from pipeline.store import result_files
from pipeline.summary import RUNNING, RunRecord, RunSummary, ahead_of_the_clock, read_runs

log = logging.getLogger(__name__)

REPORT_DUE = "_report-due"
EXPORT_DUE = "_export-due"
# Where a night writes them: the report's page and the exports' folder in ``output_dir``.
REPORT_PAGE = "_report.html"
EXPORT_DIR = "_export"
# A shard's record says this (true) once it commits no more captions: only what is owed is left.
CAPTIONING_ENDED = "captioning_ended"
# Every export format (pipeline.export writes them); a night owes any of them, or ``all``.
FORMATS = ("vtt", "srt", "jsonl", "csv")
# What a marker must hold to be read (:func:`_read_marker`); one that does not fit reads as one
# that does not read: the report owed since an unknown time, every export format owed.
MARKER_FIELDS: dict[str, Fields] = {
    REPORT_DUE: {"since": optional(epoch_s)},
    EXPORT_DUE: {"since": optional(epoch_s), "formats": optional(list_of(one_of(*FORMATS, "all")))},
}


def owe_report(output_dir: Path, since: float) -> None:
    """Record that a report is due (``since``: the start of the run that owes it).

    Raises:
        StoreError: The marker cannot be written.
    """
    before = _read_marker(output_dir / REPORT_DUE) or {}
    write_json_atomic(output_dir / REPORT_DUE, {"since": before.get("since") or since})


def owe_export(output_dir: Path, formats: list[str], since: float) -> None:
    """Record that exports of ``formats`` are due, beside any already owed.

    Raises:
        StoreError: The marker cannot be written.
    """
    before = _read_marker(output_dir / EXPORT_DUE) or {}
    merged = list(dict.fromkeys([*owed_export(output_dir), *formats]))
    write_json_atomic(output_dir / EXPORT_DUE, {"formats": merged, "since": before.get("since") or since})


def owed_export(output_dir: Path) -> list[str]:
    """The export formats owed (none: ``[]``; a marker that does not read owes them all).

    Raises:
        StoreError: Something other than a file stands at the marker's name.
    """
    marker = _read_marker(output_dir / EXPORT_DUE)
    if marker is None:
        return []
    return marker.get("formats") or ["all"]


def owed(output_dir: Path) -> dict[str, dict[str, Any] | None]:
    """What is owed, for ``status``, and a run's check before it captions: ``report`` and
    ``export``, each ``None`` when nothing is, else its marker (``since``: the start of the run
    that first owed it; ``formats``).

    Raises:
        StoreError: Something other than a file stands at a marker's name (a folder
            ``_export-due``): one line, with the fix.
    """
    found = {kind: _read_marker(output_dir / name) for kind, name in (("report", REPORT_DUE), ("export", EXPORT_DUE))}
    if found["export"] is not None:
        found["export"]["formats"] = owed_export(output_dir)
    return found


def behind(output_dir: Path) -> dict[str, float]:
    """The report and the export in the night's place that may miss captions committed after
    they were written (nights with ``report=false`` or without ``export=`` owe none, so they stay
    as they were): ``report`` and ``export``, each when its oldest file was written (seconds
    since the epoch), where a result chunk is newer. Times are the files' own (one clock, the
    file system's). What is owed is not listed: it is written anyway."""
    newest_ns = max((path.stat().st_mtime_ns for path in result_files(output_dir)), default=None)
    if newest_ns is None:
        return {}
    due = owed(output_dir)
    places = {"report": [output_dir / REPORT_PAGE], "export": _files_under(output_dir / EXPORT_DIR)}
    late = {}
    for kind, paths in places.items():
        written_ns = min((path.stat().st_mtime_ns for path in paths if path.is_file()), default=None)
        if written_ns is not None and written_ns < newest_ns and due[kind] is None:
            late[kind] = written_ns / 1e9
    return late


def _files_under(folder: Path) -> list[Path]:
    """Every file of an export folder (its tracks in the videos' folders too)."""
    return [path for path in folder.rglob("*") if path.is_file()] if folder.is_dir() else []


def paid(output_dir: Path, marker: str) -> None:
    """Drop a marker once what it owed is written."""
    (output_dir / marker).unlink(missing_ok=True)


def settle_report(output_dir: Path) -> None:
    """The report was written where a night writes it, by ``python -m pipeline.report``: it is
    no longer owed, unless a run is under way (one line says so: that run writes it).

    Raises:
        StoreError: Something other than a file stands at the marker's name.
        OSError: The marker cannot be removed.
    """
    if _read_marker(output_dir / REPORT_DUE) is None:
        return
    if runs := under_way(output_dir):
        log.warning("the report stays owed: %s", runs_under_way(runs))
        return
    paid(output_dir, REPORT_DUE)


def settle_export(output_dir: Path, written: list[str], every: list[str]) -> None:
    """Exports of ``written`` formats were written where a night writes them, by
    ``python -m pipeline.export``: only the other formats owed stay owed (``every``: what
    ``all`` stands for), unless a run is under way (one line says so: that run writes them).

    Raises:
        StoreError: The marker cannot be rewritten.
        OSError: It cannot be removed.
    """
    owed_now = owed_export(output_dir)
    if not owed_now:
        return
    if runs := under_way(output_dir):
        log.warning("the export %s stays owed: %s", ",".join(owed_now), runs_under_way(runs))
        return
    left = [f for f in (every if "all" in owed_now else owed_now) if f not in written]
    if not left:
        paid(output_dir, EXPORT_DUE)
        return
    before = _read_marker(output_dir / EXPORT_DUE) or {}
    write_json_atomic(output_dir / EXPORT_DUE, {"formats": left, "since": before.get("since")})


def under_way(output_dir: Path) -> list[dict[str, Any]]:
    """The records of the runs that may still be under way on ``output_dir``: those that say
    ``running`` (:func:`~pipeline.summary.run_state`: one of this host whose process is gone did
    not finish) and after which no run started that could not have run beside them (the lock
    lets only shards of one ``num_shards`` run at once), so that a record left ``running`` on
    another host by a killed run stops counting at the next run of its shard, or of another
    sharding. A record dated ahead of this machine's clock
    (:func:`~pipeline.summary.ahead_of_the_clock`) is not waited for: no later run could be
    placed after it until the clock passes its date, so it would hold what is owed until then."""
    runs = read_runs(output_dir)  # oldest first
    return [
        run for at, run in enumerate(runs)
        if run["state"] == RUNNING and not ahead_of_the_clock(run)
        and all(_beside(run, later) for later in runs[at + 1 :])
    ]


def runs_under_way(runs: list[dict[str, Any]]) -> str:
    """Words for the runs :func:`under_way` found, and who writes what is owed: ``the run started
    2026-12-05T01:00:02+00:00 (pid 4242 on gpu-1) is under way and writes it when it ends; if
    that run is gone (a machine that went down), the next run writes it``."""
    named = "; ".join(f"{r.get('started', '?')} (pid {r.get('pid', '?')} on {r.get('host', '?')})" for r in runs)
    one = len(runs) == 1
    return (
        f"the run{'' if one else 's'} started {named} {'is' if one else 'are'} under way and "
        f"write{'s' if one else ''} it when {'it ends' if one else 'the last ends'}; if "
        f"{'that run is' if one else 'they are'} gone (a machine that went down), the next run writes it"
    )


def still_captioning(output_dir: Path, shard: int, num_shards: int) -> list[str]:
    """The other shards of ``num_shards`` with a run under way (:func:`under_way`) that has not
    ended its captioning (``shard 1 of 2``)."""
    shards = (_shard_of(run) for run in under_way(output_dir) if not run.get(CAPTIONING_ENDED))
    return [f"shard {other} of {n}" for other, n in shards if n == num_shards and other != shard]


@dataclass(frozen=True)
class Looked:
    """Which markers were there when a run looked, before it wrote what they owe: ``(inode,
    mtime_ns)`` of ``_report-due`` and ``_export-due``, ``None`` where there was none. A run that
    owes again in the meantime rewrites its marker, which makes another file."""

    report: tuple[int, int] | None
    export: tuple[int, int] | None


def last_to_finish(
    output_dir: Path, record: RunRecord, summary: RunSummary, shard: int, num_shards: int, report: bool
) -> Looked | None:
    """The markers this run pays now (:class:`Looked`), or ``None`` where a sibling shard still
    captions and will. A run without shards pays at once. A shard first records that it
    captions no more (:data:`CAPTIONING_ENDED`), then looks at the markers, then at its
    siblings: so of two shards that end at the same moment at least one sees the other ended
    (both may write: each file is written atomically), and a marker that a sibling makes after
    the look is not taken for one this run pays. One that leaves something owed says so in one
    line (``report``: whether this run would write the report)."""
    if num_shards > 1:
        record.facts[CAPTIONING_ENDED] = True
        record.update(summary)
    looked = Looked(_marker_id(output_dir / REPORT_DUE), _marker_id(output_dir / EXPORT_DUE))
    captioning = still_captioning(output_dir, shard, num_shards) if num_shards > 1 else []
    if not captioning:
        return looked
    left = (["the report"] if report and looked.report else []) + [
        f"the export {','.join(formats)}" for formats in [owed_export(output_dir)] if looked.export and formats
    ]
    if left:
        log.info(
            "%s %s owed: %s still captioning; the last shard to finish writes %s%s",
            " and ".join(left), "stays" if len(left) == 1 else "stay",
            " and ".join(captioning) + (" is" if len(captioning) == 1 else " are"),
            "it" if len(left) == 1 else "them",
            " (the report if it runs with report=true, else the next run with it)" if "the report" in left else "",
        )
    return None


def pay_export(output_dir: Path, looked: Looked, write: Callable[[list[str]], Path]) -> bool:
    """Write the exports owed when the run looked (this night's and earlier ones') with
    ``write(formats)``, which returns their folder, then drop the marker unless it was owed again
    since; False, after one line, where they cannot be written: they stay owed (the night exits 1)."""
    formats = owed_export(output_dir)
    if looked.export is None or not formats:
        return True
    try:
        log.info("export: %s", write(formats))
    except (OSError, StoreError) as error:
        log.error("export not written: %s; the captions are committed, and the next run writes the export", error)
        return False
    _paid_if_same(output_dir / EXPORT_DUE, looked.export)
    return True


def pay_report(output_dir: Path, looked: Looked, write: Callable[[], Path]) -> None:
    """Write the report where one was owed when the run looked, with ``write()`` (which returns
    its page), then drop the marker unless it was owed again since; a failure is a warning and
    the report stays owed."""
    if looked.report is None:
        return
    try:
        log.info("report: %s", write())
        _paid_if_same(output_dir / REPORT_DUE, looked.report)
    except (OSError, StoreError) as error:
        log.warning("report not written: %s; the next run writes it", error)


def _shard_of(record: dict[str, Any]) -> tuple[int, int]:
    """``(shard, num_shards)`` of a run's record; ``(0, 1)`` for a run without shards."""
    found = re.fullmatch(r"shard(\d+)of(\d+)", str(record.get("shard") or ""))
    return (int(found[1]), int(found[2])) if found else (0, 1)


def _beside(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two runs may hold the lock at once: shards of one ``num_shards``, not the same."""
    (shard, num_shards), (other_shard, other_num) = _shard_of(one), _shard_of(other)
    return num_shards == other_num > 1 and shard != other_shard


def _read_marker(path: Path) -> dict[str, Any] | None:
    """The marker at ``path`` (``{}`` where it does not read or does not fit
    :data:`MARKER_FIELDS`), ``None`` where there is none.

    Raises:
        StoreError: Something other than a file stands at its name.
    """
    kind = in_place_of_a_file(path)
    if kind is not None:
        raise StoreError(f"cannot use {path}: {kind} stands there, where a night keeps what it owes; move or rename it")
    if not path.is_file():
        return None
    marker = read_json(path) or {}
    return {} if misfit(marker, MARKER_FIELDS[path.name]) else marker


def _marker_id(path: Path) -> tuple[int, int] | None:
    """Which marker file is at ``path`` (a rewrite makes another), ``None`` where none reads."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


def _paid_if_same(path: Path, seen: tuple[int, int]) -> None:
    """Drop the marker once what it owed is written, unless a run owed it again since ``seen``."""
    if _marker_id(path) == seen:
        path.unlink(missing_ok=True)
