"""The run summary: what a run did, written when it starts and finished when it ends.

A run that holds the lock on ``output_dir`` records itself in ``_runs/<start><shard>.json``
and ``_last_run<shard>.json`` (``<shard>`` is ``-shard<i>of<n>`` for sharded runs, else empty),
as JSON for machines. The record is true at every moment:

- it is written with ``state: running`` (start time, pid, host, command line, prompts, model;
  ``config_id`` once the model's files are found) before the run does anything, so a run that
  never finishes (``kill -9``, a power cut, a summary that could not be written at the end)
  leaves ``running`` behind, never the previous night's ``exit_code``; readers show a
  ``running`` record whose process is gone as *did not finish* (:func:`run_state`);
- it is finished (``state: finished``, ``exit_code``, the counts) when the run ends, whatever
  ends it: success, a failure, a signal or a stall;
- where even the ``running`` record cannot be written, the previous ``_last_run.json`` is
  removed rather than left to speak for this run.

The report (:mod:`pipeline.report`) and ``python -m pipeline.status`` read the records back
with :func:`read_runs`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import StoreError
from pipeline.files import read_json, write_json_atomic
from pipeline.paths import in_place_of_a_file, printable
from pipeline.runlog import run_stamp
from pipeline.shapes import (
    Fields,
    between,
    count,
    flag,
    identifier,
    list_of,
    misfit,
    moment,
    number,
    optional,
    record_of,
    text,
)
from pipeline.store import RUNS_DIR
from pipeline.words import plural

log = logging.getLogger(__name__)

LAST_RUN = "_last_run"
RUNNING = "running"
FINISHED = "finished"
DID_NOT_FINISH = "did not finish"
PROGRESS_EVERY_S = 30.0  # how often a running record is rewritten with what is committed
CLOCK_SLACK_S = 60.0  # how far ahead of this machine's clock a record's start may be before it is not believed


@dataclass
class VideoOutcome:
    """What happened to one video in a run (``status``: todo, then done, skipped or error;
    or ``waiting``: left for the next run; ``note`` says why a video waits or was skipped
    without an error: ``done``, or the video of the same content it repeats). ``frames`` and
    ``rows`` count what this run committed (a frame answered but not yet written is not in
    them)."""

    path: str
    video_id: str
    status: str = "todo"
    error: str | None = None
    note: str | None = None
    frames: int = 0
    frames_already_done: int = 0
    rows: int = 0
    wall_s: float = 0.0


@dataclass
class WorkerStats:
    """Frames one captioning worker (the local engine, or one Ray actor) answered in a run.

    Attributes:
        worker: ``local`` or ``actor-<i>``.
        processes: ``host:pid`` of each process that served it (a restarted actor has two).
        frames: Frames it answered.
        busy_s: From the run's start to its last answer.
    """

    worker: str
    processes: list[str] = field(default_factory=list)
    frames: int = 0
    busy_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures, with frames/s."""
        rate = self.frames / self.busy_s if self.busy_s else 0.0
        return {**asdict(self), "busy_s": round(self.busy_s, 3), "frames_per_s": round(rate, 3)}


@dataclass
class RunSummary:
    """What a run did, filled in as it goes."""

    videos: list[VideoOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    log_file: str | None = None
    engines: list[dict[str, Any]] = field(default_factory=list)  # each worker's Captioner.choices()

    def count(self, status: str) -> int:
        """Videos with this status."""
        return sum(v.status == status for v in self.videos)

    @property
    def frames(self) -> int:
        """Frames captioned in this run."""
        return sum(v.frames for v in self.videos)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures plus one entry per video."""
        return {
            "videos_done": self.count("done"),
            "videos_skipped": self.count("skipped"),
            "videos_failed": self.count("error"),
            "videos_waiting": self.count("waiting"),
            "frames": self.frames,
            "rows": sum(v.rows for v in self.videos),
            "wall_s": round(self.wall_s, 3),
            "frames_per_s": round(self.frames / self.wall_s, 3) if self.wall_s else 0.0,
            "workers": [w.as_dict() for w in self.workers.values()],
            "engines": self.engines,
            "log_file": self.log_file,
            "videos": [asdict(v) for v in self.videos],
        }


class RunRecord:
    """The record of one run in ``output_dir`` (written only by the run that holds its lock).

    Args:
        output_dir: The run's ``output_dir``.
        started: When the run started (epoch seconds): its record's name.
        suffix: ``-shard<i>of<n>`` for a shard, else "".
        facts: What is known at the start and stays: ``command``, ``prompts``, ``model``,
            ``config_id`` (``None`` until :meth:`learn` is told it), ``min_age_s`` (JSON-able).
        holds_lock: Whether the run still holds ``output_dir``'s lock; once not, only its own
            ``_runs/`` record is written.
    """

    def __init__(
        self, output_dir: Path, started: float, suffix: str, facts: dict[str, Any],
        holds_lock: Callable[[], bool] = lambda: True,
    ) -> None:
        self.output_dir = output_dir
        self.started = started
        self.suffix = suffix
        self.holds_lock = holds_lock
        self._progress_at: float | None = None
        self._ended: tuple[int, int] = (0, 0)  # videos done and failed at the last write
        self._finished = False
        self._said_unwritten = False
        self._lock = threading.Lock()
        self.facts = {
            "pid": os.getpid(), "host": socket.gethostname(), "cwd": _cwd(), "shard": suffix.lstrip("-") or None,
            **facts,
        }

    @property
    def path(self) -> Path:
        """``_runs/<start><suffix>.json``."""
        return self.output_dir / RUNS_DIR / f"{run_stamp(self.started)}{self.suffix}.json"

    @property
    def last_path(self) -> Path:
        """``_last_run<suffix>.json``."""
        return self.output_dir / f"{LAST_RUN}{self.suffix}.json"

    def record(self, summary: RunSummary, exit_code: int | None) -> dict[str, Any]:
        """The record as it stands: ``running`` without an exit code, else ``finished``."""
        return {
            "state": RUNNING if exit_code is None else FINISHED,
            "started": _iso(self.started),
            "finished": None if exit_code is None else _iso(time.time()),
            "exit_code": exit_code,
            **self.facts,
            **summary.as_dict(),
        }

    def start(self, summary: RunSummary) -> None:
        """Write the ``running`` record. Where it cannot be written, the previous run's
        ``_last_run.json`` is removed (that needs no free space), so it does not speak for this
        run; a warning says so. Anything else there (a folder, a named pipe) is no record, and
        is left as it is: the warning that it could not be written names it."""
        if not self._write(self.record(summary, None)) and in_place_of_a_file(self.last_path) is None:
            try:
                self.last_path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("%s still describes an earlier run: %s", self.last_path, error.strerror or error)

    def learn(self, summary: RunSummary, **facts: Any) -> None:
        """Add facts known only once the run is under way (``config_id`` and ``work_id``, once
        the model's files are found) and write the ``running`` record again with them."""
        self.facts.update(facts)
        self.start(summary)

    def update(self, summary: RunSummary) -> None:
        """Write the ``running`` record again now (after the plan: the videos it skips and
        leaves waiting, which a run killed later would otherwise not record)."""
        with self._lock:
            if not self._finished:
                self._write(self.record(summary, None))

    def progress(self, summary: RunSummary) -> None:
        """Write the ``running`` record again with what is committed so far: after the run's
        first commit, after a commit that follows a video's end, and otherwise at most every
        :data:`PROGRESS_EVERY_S` (so that status, and the record of a run that is killed, show
        its work up to about then)."""
        with self._lock:
            now = time.monotonic()
            ended = (summary.count("done"), summary.count("error"))
            recent = self._progress_at is not None and now - self._progress_at < PROGRESS_EVERY_S
            if self._finished or (recent and ended == self._ended):
                return
            self._progress_at, self._ended = now, ended
            self._write(self.record(summary, None))

    def finish(self, summary: RunSummary, exit_code: int) -> None:
        """Write the finished record; where it cannot be written, the ``running`` one stays.
        No :meth:`progress` writes after it (a write still under way when a stalled run ends)."""
        with self._lock:
            self._finished = True
            self._write(self.record(summary, exit_code))

    def _write(self, record: dict[str, Any]) -> bool:
        written = True
        # A run whose lock was taken from it (``_lock`` deleted) keeps its own record but leaves
        # _last_run.json to the run that may hold the new lock: it would not be the last run.
        for path in (self.path, self.last_path) if self.holds_lock() else (self.path,):
            try:
                write_json_atomic(path, record)
            except StoreError as error:
                if not self._said_unwritten:  # once: a full disk fails every write of the night
                    log.warning("run summary not written: %s", error)
                    self._said_unwritten = True
                written = False
        return written


# The names of run records skipped (no file, or not a record), said once a process (status, the
# report and a night's owed work each read the records).
_SKIPPED: set[Path] = set()

# What a reader takes from a run record (:meth:`RunRecord.record`), and what each must be: a
# record that does not fit is skipped as one that does not read (:func:`read_runs`).
ENGINE_FIELDS: Fields = {
    **dict.fromkeys(("worker", "host", "text_weights", "text_loaded"), optional(text)),
    **dict.fromkeys(("frames_in_flight", "lanes", "clip_threads"), optional(count)),
}
VIDEO_FIELDS: Fields = {
    **dict.fromkeys(("path", "video_id", "status"), text),
    **dict.fromkeys(("error", "note"), optional(text)),
    **dict.fromkeys(("frames", "frames_already_done", "rows"), optional(count)),
    "wall_s": optional(number),
}
RUN_FIELDS: Fields = {
    "started": moment,
    "finished": optional(moment),
    "state": optional(text),
    "exit_code": optional(between(0, 255)),
    "pid": optional(between(1, 2**31 - 1)),  # 0 and -1 are no process: os.kill(0, 0) signals a group
    "captioning_ended": optional(flag),
    **dict.fromkeys(("host", "cwd", "shard", "log_file"), optional(text)),
    **dict.fromkeys(("config_id", "work_id"), optional(identifier)),
    **dict.fromkeys(
        ("frames", "rows", "videos_done", "videos_skipped", "videos_failed", "videos_waiting"), optional(count)
    ),
    **dict.fromkeys(("wall_s", "frames_per_s", "min_age_s"), optional(number)),
    "engines": optional(list_of(record_of(ENGINE_FIELDS))),
    "videos": optional(list_of(record_of(VIDEO_FIELDS))),
}


def read_runs(output_dir: Path) -> list[dict[str, Any]]:
    """Every recorded run of ``output_dir`` (``_runs/*.json``, and ``_last_run*.json`` for folders
    of older versions), oldest first (by ``started``); each with ``state`` filled in by
    :func:`run_state`. A record that does not read, or whose fields do not fit
    :data:`RUN_FIELDS` (``frames: "abc"``, a start without its UTC offset, a pid of 0), is
    skipped, with one warning naming it and why (once a process); so is something other than a
    file at such a name (a named pipe), which is never opened: in ``_runs/`` only (a
    ``_last_run*.json`` repeats a record there, and a run that cannot write it says so itself)."""
    runs: dict[str, dict[str, Any]] = {}
    skipped = []
    for path in [*output_dir.glob(f"{RUNS_DIR}/*.json"), *output_dir.glob(f"{LAST_RUN}*.json")]:
        kind = in_place_of_a_file(path)
        record = read_json(path)
        why = kind if path.parent.name == RUNS_DIR else None
        if kind is None and path.is_file():
            why = "not a JSON object" if record is None else misfit(record, RUN_FIELDS)
        if why is not None:
            if path not in _SKIPPED:
                skipped.append(f"{path} ({why})")
                _SKIPPED.add(path)
            continue
        if record is not None:
            shard = path.stem.partition("-")[2]
            # A _last_run.json repeats a _runs/ record; keep the newest state of a run.
            key = f"{record.get('started')}|{shard}"
            if key not in runs or runs[key].get("state") == RUNNING:
                runs[key] = record
    if skipped:
        log.warning("not a run record, skipped: %s; move or rename %s", ", ".join(skipped),
                    "it" if len(skipped) == 1 else "them")
    for record in runs.values():
        record["state"] = run_state(record)
    return sorted(runs.values(), key=started_s)


def started_s(record: dict[str, Any]) -> float:
    """When a run started (seconds since the epoch), from its record (:data:`RUN_FIELDS`)."""
    return datetime.fromisoformat(record["started"]).timestamp()


def ahead_of_the_clock(record: dict[str, Any]) -> bool:
    """Whether a run's record says it started later than now by this machine's clock (by more
    than :data:`CLOCK_SLACK_S`): a record of a host whose clock runs fast, on a shared
    ``output_dir``, which cannot be placed among the others by its start."""
    return started_s(record) > time.time() + CLOCK_SLACK_S


def run_state(record: dict[str, Any]) -> str:
    """``finished``; ``running`` while its process lives; else ``did not finish`` (killed, or its
    end could not be written). A record of another host that says running is taken at its word.
    Records of versions before the state was kept are finished. ``record`` fits
    :data:`RUN_FIELDS`."""
    if record.get("state") not in (RUNNING, DID_NOT_FINISH):
        return FINISHED
    if record.get("host") not in (None, socket.gethostname()):
        return RUNNING
    pid = record.get("pid")
    return RUNNING if pid is not None and _alive(pid, started_s(record)) else DID_NOT_FINISH


def worked(record: dict[str, Any]) -> bool:
    """Whether a run captioned a frame: a night whose videos all failed, or that found every
    answer there (done, with no frame captioned), made none of the results."""
    return bool(record.get("frames"))


def engine_lines(record: dict[str, Any]) -> list[str]:
    """What a run's engines were decided to run with, as its record keeps them (``engines``:
    the text weights loaded, frames in flight, lanes, CLIP threads; one line per distinct choice,
    with the workers that made it), e.g. ``local on host-1: F16 copy of the text weights, 16 frames
    in flight, 2 lanes, 2 CLIP threads``.
    Status and the report read the decisions from here, not from the config."""
    lines: dict[str, list[str]] = {}
    for engine in record.get("engines") or []:
        weights = "F16 copy of the text weights" if engine.get("text_weights") == "f16" else "text weights as they are"
        counts = [(engine.get("lanes"), "lane"), (engine.get("clip_threads"), "CLIP thread")]
        text = f"{weights}, {engine.get('frames_in_flight', '?')} frames in flight" + "".join(
            f", {plural(n, noun)}" for n, noun in counts if n is not None
        )
        where = " on ".join(str(engine[key]) for key in ("worker", "host") if engine.get(key))
        lines.setdefault(text, []).append(where or "?")
    return [f"{', '.join(workers)}: {text}" for text, workers in lines.items()]


def _cwd() -> str | None:
    """The folder the run works in, which places the relative paths it records (``None``: gone)."""
    try:
        return printable(os.getcwd())
    except OSError:
        return None


def _alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` lives and is the one that started at ``started`` (a pid is reused:
    a process that started after the run did is another one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc: the pid is all there is to go by
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= started + 1.0


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat()
