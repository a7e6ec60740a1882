"""Planning a run: which found videos it captions, which it skips and which it leaves.

Each video of the shard gets its content id. A video whose work is already complete (a
``_done`` marker, whose chunks are all there and read whole: see
:func:`~pipeline.committed.verify_chunks`) or that failed before (an error record;
``retry_failed=true`` retries it; its record goes with the retry's first write:
:meth:`VideoTask.retire`) is skipped without being opened, so re-running a finished night does
nothing, quickly, and loads no model. A file that has not settled (still being
copied in: :class:`~pipeline.inputs.Readiness`) is left for the next run; an entry that cannot
be read gets one error record, once (filed by the run loop, :mod:`pipeline.run`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.committed import (
    Committed,
    done_marker,
    error_files,
    missing_chunks,
    read_committed,
    remove_error_records,
    verify_chunks,
    video_failures_by_path,
)
from pipeline.inputs import Readiness, check_shard, in_shard, os_reason, path_id, video_id_of
from pipeline.paths import printable
from pipeline.store import ResultRow
from pipeline.summary import VideoOutcome

log = logging.getLogger(__name__)

# What the last look at each found file left waiting saw (pipeline.inputs.Readiness).
WAITING_FILE = "_waiting.json"


@dataclass
class VideoTask:
    """One video of a run: its outcome so far and the run loop's bookkeeping while it is in
    flight (from :meth:`Pipeline.plan`, for :meth:`Pipeline.run` and the dry run's lines)."""

    outcome: VideoOutcome
    path: Path
    committed: Committed = field(default_factory=Committed)
    pending_rows: list[ResultRow] = field(default_factory=list)
    pending_frames: int = 0
    sent: int = 0
    answered: int = 0
    decoded_all: bool = False
    in_model_since: float | None = None  # when its first frame entered the model (epoch s)
    record_id: str | None = None  # where its error record goes, if not under its video_id
    failed: dict[tuple[int, str], str] = field(default_factory=dict)  # (frame, prompt_id) → this run's error
    retired: list[Path] = field(default_factory=list)  # error files its new outcome replaces: see retire()

    def retire(self) -> None:
        """Remove the error files that the video's new outcome replaces (a retry's, or a record
        of an earlier reason), as the run's first write for it begins (the run loop's writer
        thread calls this before each write): a night that ends before then (a setting the
        model refuses, a signal) leaves them, and none of their keys is written beside them."""
        for path in self.retired:
            path.unlink(missing_ok=True)
        self.retired = []


class Planner:
    """Plans the videos of one run against what ``output_dir`` holds.

    Args:
        output_dir: The run's ``output_dir``.
        config_id: Id of the settings that shape answers.
        work_id: What a done marker vouches for (:class:`~pipeline.run.Pipeline`'s ``work_id``).
        prompt_ids: The prompts the run asks: an error record of the answers to another prompt
            does not hold a video back (:meth:`~pipeline.committed.Committed.holding_error`).
        retry_failed: Retry videos and frames that failed before.
        min_age_s: A found video not seen unchanged for this many seconds is left for the next run.
        read_only: Plan without touching ``output_dir`` (a dry run): no error record removed,
            no damaged chunk moved aside, no done marker dropped (``retry_failed`` must be off).
        searched: Whether a path lies where this night's folders and globs search
            (:func:`~pipeline.inputs.searched_by`); a path that failed there before and is found
            no more loses its error record. ``None``: no path is judged so.
    """

    def __init__(
        self,
        output_dir: Path,
        config_id: str,
        work_id: str,
        prompt_ids: frozenset[str],
        retry_failed: bool,
        min_age_s: float,
        read_only: bool,
        searched: Callable[[Path], bool] | None = None,
    ) -> None:
        if read_only and retry_failed:
            raise ValueError("a read-only plan cannot retry failed videos (it would remove their records)")
        self.output_dir = output_dir
        self.config_id = config_id
        self.work_id = work_id
        self.prompt_ids = prompt_ids
        self.retry_failed = retry_failed
        self.min_age_s = min_age_s
        self.read_only = read_only
        self.searched = searched
        self._failed_at: dict[str, list[str]] | None = None  # video_failures_by_path, once a plan

    def plan(
        self, videos: list[Path], shard: int, num_shards: int, on_video: Callable[[], None]
    ) -> list[VideoTask]:
        """Look at every video of shard ``shard`` of ``num_shards`` (:func:`~pipeline.inputs.in_shard`)
        and its committed work; skipped and unreadable ones are settled here.

        A second path with the content (or, unreadable, the path) of an earlier one is
        skipped: both would write the same keys. A path whose earlier content failed and that
        now holds other content loses that content's error record, and so does a path that failed
        (filed under the path) where this night searches and that it finds no more. A damaged
        chunk is moved aside and its keys are done again, also for a video that was done, as are
        those of a chunk that a done video's marker lists and that is gone.

        Raises:
            ConfigError: ``shard`` is not in ``0..num_shards-1``.
        """
        check_shard(shard, num_shards)
        readiness = Readiness(self.output_dir / WAITING_FILE, self.min_age_s)
        self._failed_at = None
        tasks = []
        first_path_of: dict[str, str] = {}
        for path in videos:
            on_video()
            if in_shard(path, shard, num_shards):
                tasks.append(self._plan_one(path, readiness, first_path_of))
        if not self.read_only:
            readiness.save()
            if shard == 0:  # once for all shards, which find the same videos
                self._forget_gone_paths(videos)
        return tasks

    def _plan_one(self, path: Path, readiness: Readiness, first_path_of: dict[str, str]) -> VideoTask:
        outcome = VideoOutcome(path=printable(path), video_id="")
        task = VideoTask(outcome=outcome, path=path)
        outcome.note = readiness.unsettled(path)
        if outcome.note is not None:
            outcome.status = "waiting"
            log.info("waiting %s: %s", outcome.path, outcome.note)
            return task
        failure = None
        try:
            outcome.video_id = video_id_of(path)
        except OSError as error:
            outcome.video_id = path_id(path)
            failure = os_reason(path, error)
        if outcome.video_id in first_path_of:
            outcome.status = "skipped"
            outcome.note = f"same content as {first_path_of[outcome.video_id]}"
            log.info("skipped %s: %s", outcome.path, outcome.note)
            return task
        first_path_of[outcome.video_id] = outcome.path
        if failure is not None:
            self._plan_failure(task, failure)
            return task
        self._forget_path_failure(task)
        self._forget_replaced_content(task)
        marker = done_marker(self.output_dir, outcome.video_id, self.work_id)
        if self.retry_failed:
            task.retired = error_files(self.output_dir, outcome.video_id, self.config_id)
            if task.retired and marker.is_file():
                marker.unlink()  # done by an older version despite failed frames
        damaged = [] if self.read_only else verify_chunks(self.output_dir, outcome.video_id, self.config_id)
        if marker.is_file():  # something else there is no marker: writing one says what it is
            moved = {chunk.name for chunk in damaged}
            missing = missing_chunks(marker)  # a chunk moved aside that it does not list takes nothing of its work
            gone = [name for name in missing or [] if name not in moved]
            if self.read_only or not (missing if missing is not None else moved):
                outcome.status = "skipped"
                outcome.note = "done"
                return task
            if gone:
                log.warning(
                    "%s was done, but chunks its done marker lists are gone (%s): its missing frames are done again",
                    outcome.path, ", ".join(gone),
                )
            marker.unlink()
        task.committed = read_committed(
            self.output_dir, outcome.video_id, self.config_id, not self.read_only, leave_out=task.retired
        )
        held = task.committed.holding_error(self.prompt_ids)
        if held is not None:
            outcome.status = "skipped"
            outcome.error = f"failed before: {held}"
        return task

    def _forget_path_failure(self, task: VideoTask) -> None:
        """A path that failed before (filed under the path: it vanished or could not be read)
        and reads now: its old error record is no longer true."""
        where = path_id(task.path)
        if not self.read_only and (self.output_dir / where).is_dir():
            if remove_error_records(self.output_dir, where, self.config_id):
                log.info("%s reads again: its earlier error record is removed", task.outcome.path)

    def _forget_replaced_content(self, task: VideoTask) -> None:
        """A path whose earlier content failed as a whole (a copy cut short, filed under that
        content's id) and that holds other content now: that record no longer describes what is
        at the path, and no ``retry_failed`` would reach it."""
        if self.read_only:
            return
        for old in self._failures_by_path().pop(task.outcome.path, []):
            if old != task.outcome.video_id and remove_error_records(self.output_dir, old, self.config_id):
                log.info("%s changed since it failed: its earlier error record is removed", task.outcome.path)

    def _forget_gone_paths(self, videos: list[Path]) -> None:
        """A path that failed before (filed under the path: it vanished) where this night's
        folders and globs search, and that they no longer find (renamed, moved away, deleted):
        its record describes nothing there, and no path would read again to remove it. Another
        night's inputs are not this night's to judge."""
        if self.searched is None:
            return
        found = {os.path.abspath(video) for video in videos}
        for where, failed in self._failures_by_path().items():
            path = Path(where)
            if os.path.abspath(path) in found or os.path.lexists(path) or not self.searched(path):
                continue
            if path_id(path) in failed and remove_error_records(self.output_dir, path_id(path), self.config_id):
                log.info("%s is no longer there: its earlier error record is removed", where)

    def _failures_by_path(self) -> dict[str, list[str]]:
        """:func:`~pipeline.committed.video_failures_by_path`, read once a plan (where needed)."""
        if self._failed_at is None:
            self._failed_at = video_failures_by_path(self.output_dir, self.config_id)
        return self._failed_at

    def _plan_failure(self, task: VideoTask, reason: str) -> None:
        """An entry that cannot be read: one error record per entry and reason, not one a night
        (a new reason replaces the old record as the run writes it; ``retry_failed=true`` looks
        again)."""
        video_id = task.outcome.video_id
        before = None
        if not self.retry_failed:
            before = read_committed(self.output_dir, video_id, self.config_id, not self.read_only).video_error
        if before == reason:
            task.outcome.status = "skipped"
            task.outcome.error = f"failed before: {reason}"
            return
        if not self.read_only and (self.retry_failed or before is not None):
            task.retired = error_files(self.output_dir, video_id, self.config_id)
        task.outcome.status = "error"
        task.outcome.error = reason
