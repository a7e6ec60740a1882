"""The one bookkeeping loop over videos: plan → an executor decodes and captions → commit.

A run first *plans* (:mod:`pipeline.plan`): what is done or failed before is skipped without
being opened, a file still arriving is left for the next run. Then an
executor (:mod:`pipeline.executors`) decodes and samples the remaining videos, leaving out
frames that already have every answer, captions the frames, and hands back a stream of
events: a :class:`~pipeline.executors.base.Captioned` per frame and a
:class:`~pipeline.executors.base.Decoded` per video. :class:`Pipeline` turns that stream into
rows, commits them in chunks of ``checkpoint_frames`` frames on a writer thread (a killed run
loses at most one chunk per video in flight), writes the done markers and error records, and
counts into a :class:`~pipeline.summary.RunSummary`. A video is done only when every
answer it needs is in: one whose frames failed (an error answer) is a failed video, retried
by ``retry_failed=true``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.caption import Answer, Question, make_questions
from pipeline.checksums import model_sha256
from pipeline.committed import answers_failed, answers_failed_by_prompt, mark_done
from pipeline.config import settings_id
from pipeline.decode import format_timecode
from pipeline.errors import StoreError
from pipeline.executors.base import Captioned, Decoded, DecodeJob, Executor, FrameJob, Work
from pipeline.executors.frames import VideoDecoder
from pipeline.inputs import holds_other_content, path_id
from pipeline.plan import Planner, VideoTask
from pipeline.progress import Progress
from pipeline.sampling import Sampler
from pipeline.signals import Stopped, check_stopped
from pipeline.store import RESERVED_NAMES, ResultRow, write_chunk
from pipeline.structured import PromptEntry, check_schemas
from pipeline.summary import RunSummary, WorkerStats
from pipeline.video_facts import write_video_facts, write_videos_table
from pipeline.words import plural

log = logging.getLogger(__name__)

# Why a video found changed by its decoder (:attr:`Decoded.changed`) or before a chunk is filed
# waits for the next run.
CHANGED_NOTE = "changed since the night was planned (a copy under way?); left for the next run"


def unique_prompts(prompts: Sequence[PromptEntry]) -> list[PromptEntry]:
    """The prompt entries with repeats (the same text and schema) left out, in order, each
    repeat logged: a repeat would write every key twice.

    Raises:
        ConfigError: An entry is bad, or a schema cannot work (:func:`pipeline.structured.check_schemas`):
            not an object, not valid JSON Schema, a property named like a result column or typed
            apart by two prompts.
    """
    questions = make_questions(prompts)
    first: dict[str, tuple[PromptEntry, Question]] = {}
    for entry, question in zip(prompts, questions):
        first.setdefault(question.prompt_id, (entry, question))
    times = Counter(q.prompt_id for q in questions)
    for prompt_id, (_, question) in first.items():
        if times[prompt_id] > 1:
            log.info("prompt %r is given %d times; it is asked once", question.text, times[prompt_id])
    schemas = [(q.text, json.loads(q.schema_json)) for _, q in first.values() if q.schema_json is not None]
    check_schemas(schemas, RESERVED_NAMES)
    return [entry for entry, _ in first.values()]


class Pipeline:
    """Captions videos with one model and commits the answers to ``output_dir``.

    Args:
        sampler: Chooses the frames.
        prompts: Asked about every frame (a repeat is asked once: :func:`unique_prompts`).
        output_dir: Where Parquet goes (created, checked writable and locked by the caller).
        config_id: Id of the settings that shape answers (model, generation, sampler).
        prefetch_frames: Decoded frames queued ahead of the model (``engine.prefetch_frames``).
        max_frames: Cap on samples per video.
        start_s: Only samples at or after this time of each video.
        end_s: Only samples before this time of each video (``None``: to the end).
        checkpoint_frames: Frames per committed chunk (``checkpoint_frames`` of the config).
        retry_failed: Retry videos and frames that failed before.
        metadata: Stored in every Parquet file's schema metadata, beside ``prompts``: each
            question's ``prompt_id``, ``text`` and ``schema`` (null for a plain prompt).
        thumbnail: Makes a frame's ``thumbnail`` bytes (``None``: rows have none).
        min_age_s: A found video not seen unchanged for this many seconds is left for the next
            run (:class:`~pipeline.inputs.Readiness`).
        read_only: Plan without touching ``output_dir`` (a dry run): no error record removed,
            no damaged chunk moved aside, no done marker dropped (``retry_failed`` must be off).
        before_write: Called on the writer thread before each write to ``output_dir``, and
            again just before a chunk appears under its name (the command line's
            :meth:`~pipeline.lock.RunLock.check`); what it raises stops the run.
        on_commit: Called on the writer thread after each commit of rows, once the videos'
            counts include them (the command line's :meth:`~pipeline.summary.RunRecord.progress`).
        progress_interval_s: Off a terminal, a progress line this often (``None``: none).
        searched: Whether a path lies where the night's ``video=`` folders and globs search
            (:func:`~pipeline.inputs.searched_by`; ``None``: no path is judged so).
    """

    def __init__(
        self,
        sampler: Sampler,
        prompts: Sequence[PromptEntry],
        output_dir: Path,
        config_id: str,
        *,
        prefetch_frames: int,
        checkpoint_frames: int,
        max_frames: int | None = None,
        start_s: float = 0.0,
        end_s: float | None = None,
        retry_failed: bool = False,
        metadata: dict[str, Any] | None = None,
        thumbnail: Callable[[np.ndarray], bytes] | None = None,
        min_age_s: float = 0.0,
        read_only: bool = False,
        before_write: Callable[[], None] | None = None,
        on_commit: Callable[[], None] | None = None,
        progress_interval_s: float | None = None,
        searched: Callable[[Path], bool] | None = None,
    ) -> None:
        self.decoder = VideoDecoder(sampler, max_frames, thumbnail, start_s, end_s)
        self.questions: list[Question] = make_questions(unique_prompts(prompts))
        self._prompt_ids = frozenset(q.prompt_id for q in self.questions)
        self.output_dir = output_dir
        self.config_id = config_id
        # What a video's done marker vouches for: the window and the cap limit which of the
        # config's samples are asked about, so a wider run later adds the missing ones.
        self.work_id = settings_id({
            "config": config_id, "prompts": sorted(self._prompt_ids),
            "max_frames": max_frames, "start_s": start_s, "end_s": end_s,
        })
        self.checkpoint_frames = max(checkpoint_frames, 1)
        self.prefetch_frames = prefetch_frames
        self.min_age_s = min_age_s
        self.before_write = before_write
        self.on_commit = on_commit
        self.progress_interval_s = progress_interval_s
        self.planner = Planner(
            output_dir, config_id, self.work_id, self._prompt_ids, retry_failed, min_age_s, read_only,
            searched,
        )
        prompts_asked = [
            {"prompt_id": q.prompt_id, "text": q.text, "schema": q.schema_json and json.loads(q.schema_json)}
            for q in self.questions
        ]
        self.metadata = {**(metadata or {}), "versions": package_versions(), "prompts": prompts_asked}
        self.model_name = ""
        # When work last came back (time.monotonic()), while the plan reads the videos or the run
        # waits on the executor, and what it waits on; None otherwise. The command line's stall
        # watch reads them (pipeline.watchdog).
        self.last_progress_s: float | None = None
        self.waiting_on = "the model or the decoder"
        self._writes: list[Future[Any]] = []

    # -- planning (no model needed) ---------------------------------------------------------

    def plan(self, videos: list[Path], shard: int = 0, num_shards: int = 1) -> list[VideoTask]:
        """Look at every video of the shard and its committed work (:meth:`Planner.plan`), under
        the stall watch (each video read is progress)."""
        self.waiting_on = "reading the videos"
        try:
            return self.planner.plan(videos, shard, num_shards, on_video=self._progressed)
        finally:
            self.last_progress_s = None
            self.waiting_on = "the model or the decoder"

    def _progressed(self) -> None:
        self.last_progress_s = time.monotonic()

    def _fail(self, task: VideoTask, reason: str) -> None:
        task.outcome.status = "error"
        task.outcome.error = reason

    # -- the run ----------------------------------------------------------------------------

    def run(
        self, tasks: list[VideoTask], executor: Executor | None, summary: RunSummary | None = None
    ) -> RunSummary:
        """Do the planned work.

        Args:
            tasks: From :meth:`plan`.
            executor: A started executor (a set-up captioner runs locally as
                ``LocalExecutor(captioner)``); may be ``None`` when no video needs the model.
            summary: Filled in as the run goes, so that a run that stops early still says
                what it did; ``None``: a new one (of ``tasks``).

        Raises:
            StoreError: Results cannot be written (the run stops; committed chunks stay).
            EngineError: The model failed.
            Stopped: A signal stopped the run; the frames answered so far are committed first.
        """
        started = time.perf_counter()
        if summary is None:
            summary = RunSummary(videos=[t.outcome for t in tasks])
        try:
            self._run(tasks, executor, summary, started)
        finally:
            summary.wall_s = time.perf_counter() - started
        return summary

    def _run(
        self, tasks: list[VideoTask], executor: Executor | None, summary: RunSummary, started: float
    ) -> None:
        todo = [t for t in tasks if t.outcome.status == "todo"]
        failed_at_plan = [t for t in tasks if t.outcome.status == "error"]
        show = sys.stderr is not None and sys.stderr.isatty()  # None: started with stderr closed (2>&-)
        counted = show or self.progress_interval_s is not None
        expected: list[int | None] = [self.expected_frames(t) if counted else None for t in todo]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer, Progress(
            expected, enabled=show, interval_s=self.progress_interval_s
        ) as progress:
            self._writer = writer
            self._writes = []
            self._progress = progress
            if executor is not None:
                self.model_name = executor.model_name
                self.metadata["model_files"] = executor.model_files
                summary.engines = executor.engine_choices
                # The first task of the (one, first-in first-out) writer thread, so that every
                # write has the digests while the model already captions: a first run hashes
                # gigabytes (about 1 s a GB on the GPU machine), once per file.
                self._writes.append(writer.submit(self._hash_model_files, executor.model_files))
            for task in failed_at_plan:
                self._submit_error_record(task)
            if todo:
                if executor is None:
                    raise RuntimeError("videos to caption but no executor")
                work = Work(
                    jobs=[self._job(i, t) for i, t in enumerate(todo)],
                    decoder=self.decoder,
                    questions=self.questions,
                    prefetch_frames=self.prefetch_frames,
                )
                self.last_progress_s = time.monotonic()
                try:
                    # Closed on the way out, whatever ends the loop: the engine's frames in flight
                    # end now, before the caller closes the executor, not whenever (or never)
                    # the generator is collected.
                    with closing(executor.run(work)) as events:
                        for event in events:
                            self.last_progress_s = time.monotonic()
                            if isinstance(event, Decoded):
                                progress.video_decoded(event.video_index, event.sent)
                                self._take_decoded(todo[event.video_index], event)
                            else:
                                self._take_answers(todo[event.job.video_index], event)
                                self._count_worker(summary, event, time.perf_counter() - started)
                                progress.frame_answered()
                            _raise_first_error(self._writes)
                            check_stopped()
                except Stopped:
                    for task in todo:  # what is answered is kept: the writer commits it on the way out
                        self._submit_chunk(task)
                    raise
                finally:
                    self.last_progress_s = None
            for future in self._writes:
                future.result()
        if todo:
            self._write(write_videos_table, self.output_dir)

    def finish_writes(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the writes submitted so far: a stalled run's way out,
        from another thread, while the run's own thread waits on the model for good."""
        deadline = time.monotonic() + timeout_s
        for future in list(self._writes):
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as error:  # noqa: BLE001  (the run is ending: say so and go on)
                log.warning("a write did not finish: %s", error or type(error).__name__)
                return

    def _hash_model_files(self, files: dict[str, str]) -> None:
        self.metadata["model_sha256"] = model_sha256(files)

    def _job(self, index: int, task: VideoTask) -> DecodeJob:
        done = self._answered_frames(task)
        partial = {
            frame: tuple(i for i, q in enumerate(self.questions) if q.prompt_id not in prompts)
            for frame, prompts in task.committed.answered.items()
            if frame not in done and self._prompt_ids & prompts
        }
        return DecodeJob(index, task.path, task.outcome.video_id, done, partial)

    def _answered_frames(self, task: VideoTask) -> frozenset[int]:
        """The video's frames whose every question of this run earlier runs answered."""
        return frozenset(f for f, prompts in task.committed.answered.items() if self._prompt_ids <= prompts)

    def _take_decoded(self, task: VideoTask, event: Decoded) -> None:
        task.decoded_all = True
        task.sent = event.sent
        task.outcome.frames_already_done = event.already_done
        if event.changed:
            self._leave_changed(task)
        if event.facts is not None:
            self._submit_write(
                write_video_facts, self.output_dir, task.outcome.video_id, task.outcome.path, asdict(event.facts)
            )
        if event.error is not None:
            if not os.path.exists(task.path):  # a fact about the path: the same bytes elsewhere are no failure
                task.record_id = path_id(task.path)
            self._fail(task, event.error)
        self._finish_if_complete(task)

    def expected_frames(self, task: VideoTask) -> int | None:
        """About how many of a planned video's frames will go to the model (``None``: known once
        it is decoded): the progress bar's total, and a dry run's count."""
        expected = self.decoder.expected_samples(task.path)
        if expected is None:
            return None
        return max(0, expected - len(self._answered_frames(task)))

    def _take_answers(self, task: VideoTask, event: Captioned) -> None:
        frame_index = event.job.sample.frame.index
        already = task.committed.answered.get(frame_index, set())
        new = [a for a in event.answers if a.question.prompt_id not in already]
        for answer in new:
            if answer.error:
                task.failed[(frame_index, answer.question.prompt_id)] = answer.error
        task.pending_rows.extend(self._row(task, event.job, a) for a in new)
        # A video's own time runs from its first frame entering the model (answers carry how
        # long ago that was) to its last answer, whatever ran before or beside it.
        entered = time.time() - max((a.latency_ms for a in event.answers), default=0.0) / 1000
        task.in_model_since = entered if task.in_model_since is None else min(entered, task.in_model_since)
        task.pending_frames += 1
        task.answered += 1
        if task.pending_frames >= self.checkpoint_frames:
            self._submit_chunk(task)
        self._finish_if_complete(task)

    def _failed_answers(self, task: VideoTask) -> dict[tuple[int, str], str]:
        """The video's error answers to questions of this run, by frame and prompt: from this
        run and committed by earlier ones."""
        failed = {key: why for key, why in task.committed.failed.items() if key[1] in self._prompt_ids}
        return {**failed, **task.failed}

    @staticmethod
    def _count_worker(summary: RunSummary, event: Captioned, elapsed_s: float) -> None:
        stats = summary.workers.setdefault(event.worker, WorkerStats(event.worker))
        if event.process not in stats.processes:
            stats.processes.append(event.process)
        stats.frames += 1
        stats.busy_s = elapsed_s

    def _finish_if_complete(self, task: VideoTask) -> None:
        if not (task.decoded_all and task.answered == task.sent):
            return
        self._submit_chunk(task)
        if task.in_model_since is not None:
            task.outcome.wall_s = time.time() - task.in_model_since
        failed = self._failed_answers(task)
        if task.outcome.status == "todo" and failed:
            self._fail(task, answers_failed(failed))
            self._submit_error_record(task, answers_failed_by_prompt(failed))
        elif task.outcome.status == "error":
            self._submit_error_record(task)
        elif task.outcome.status == "todo":
            self._submit_write(self._mark_done, task)
        self._progress.video_finished()

    def _leave_changed(self, task: VideoTask) -> None:
        if task.outcome.status != "waiting":  # a write and the decoder's last look may both see it: one line
            task.outcome.status, task.outcome.note = "waiting", CHANGED_NOTE
            log.info("waiting %s: %s", task.outcome.path, CHANGED_NOTE)

    def _submit_chunk(self, task: VideoTask) -> None:
        rows, task.pending_rows, frames, task.pending_frames = task.pending_rows, [], task.pending_frames, 0
        # Frames decoded before the decoder's last look (it looks again when it ends) may come
        # from content written over the planned file since: each chunk is filed only while the
        # path still holds the content its id names.
        status, planned = task.outcome.status, task.outcome.video_id
        if status == "todo" and not task.decoded_all and holds_other_content(task.path, planned):
            self._leave_changed(task)
        if task.outcome.status == "waiting":  # changed under the run: its rows may describe other content
            return
        if rows or frames:
            self._submit_write(self._commit, task, rows, frames)

    def _submit_error_record(self, task: VideoTask, by_prompt: dict[str, str] | None = None) -> None:
        """Commit the video's error record: one for the whole video, or, where its answers
        failed, one for each prompt of ``by_prompt`` (prompt_id → reason)."""
        if by_prompt:
            rows = [self._error_row(task, reason, prompt_id) for prompt_id, reason in by_prompt.items()]
        else:
            rows = [self._error_row(task, task.outcome.error or "unknown error")]
        self._submit_write(self._commit, task, rows, 0)
        log.warning("failed %s: %s", task.outcome.path, task.outcome.error)

    def _commit(self, task: VideoTask, rows: list[ResultRow], frames: int) -> None:
        """Write rows of one video (answers and error rows each to a chunk of their kind); the
        video's counts grow by what was written, so a run that stops says only what it committed."""
        task.retire()  # on the writer thread, before the video's first write of the run
        outcome = task.outcome
        ok = [r for r in rows if r.status == "ok"]
        for kind, chunk in (("part", ok), ("errors", [r for r in rows if r.status != "ok"])):
            if chunk:
                # chunk[0].video_id: an error record of a path that vanished is filed under the path's id
                write_chunk(
                    self.output_dir, chunk[0].video_id, kind, self.config_id, chunk, self.metadata, self.before_write
                )
                outcome.rows += len(chunk)
        outcome.frames += frames
        if self.on_commit is not None:
            self.on_commit()

    def _submit_write(self, write: Callable[..., object], *args: Any) -> None:
        """Queue a write to ``output_dir`` on the writer thread, behind :attr:`before_write`."""
        self._writes.append(self._writer.submit(self._write, write, *args))

    def _write(self, write: Callable[..., object], *args: Any) -> object:
        if self.before_write is not None:
            self.before_write()
        try:
            return write(*args)
        except StoreError:
            if self.before_write is not None:  # a lost lock explains a failed write best
                self.before_write()
            raise

    def _mark_done(self, task: VideoTask) -> None:
        task.retire()
        outcome = task.outcome
        outcome.status = "done"
        mark_done(self.output_dir, outcome.video_id, self.work_id, self.config_id, asdict(outcome))
        log.info(
            "done %s: %s captioned, %d already done, %s, %.1f s",
            outcome.path, plural(outcome.frames, "frame"), outcome.frames_already_done, plural(outcome.rows, "row"),
            outcome.wall_s,
        )

    def _row(self, task: VideoTask, job: FrameJob, answer: Answer) -> ResultRow:
        sample, frame = job.sample, job.sample.frame
        return ResultRow(
            video_path=task.outcome.path,
            video_id=task.outcome.video_id,
            frame_index=frame.index,
            timestamp_s=frame.timestamp_s,
            timecode=format_timecode(frame.timestamp_s),
            prompt_id=answer.question.prompt_id,
            prompt=answer.question.text,
            answer=answer.text,
            model=self.model_name,
            status="error" if answer.error else "ok",
            error=answer.error,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            latency_ms=answer.latency_ms,
            sample_reason=sample.reason,
            shot_index=sample.shot_index,
            config_id=self.config_id,
            thumbnail=job.thumbnail,
            shot_start_s=sample.shot_start_s,
            duplicate_of=sample.duplicate_of,
            finish_reason=answer.finish_reason or None,
            answer_json=answer.value_json,
        )

    def _error_row(self, task: VideoTask, reason: str, prompt_id: str | None = None) -> ResultRow:
        return ResultRow(
            video_path=task.outcome.path,
            video_id=task.record_id or task.outcome.video_id,
            prompt_id=prompt_id,
            model=self.model_name,
            status="error",
            error=reason,
            config_id=self.config_id,
        )


def _raise_first_error(writes: list[Future[Any]]) -> None:
    for future in writes:
        error = future.exception() if future.done() else None
        if error is not None:
            raise error


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the results."""
    versions = {}
    for name in ("video-caption-pipeline", "llama-cpp-python", "numpy", "opencv-python-headless", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
