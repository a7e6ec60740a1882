"""The one loop over videos: plan → decode and caption (an executor) → commit, resumably.

A run first *plans*: each video gets its content id, and a video whose work is already
complete (a ``_done`` marker) or failed before (an error record; ``retry_failed=true`` retries
it) is skipped without being opened, so re-running a finished night does nothing, quickly,
and loads no model. Then an *executor* decodes and samples the remaining videos
(:class:`VideoDecoder`, leaving out frames that already have every answer) and captions the
frames, and hands back a stream of events: :class:`Captioned` per frame and :class:`Decoded`
per video. :class:`Pipeline` turns that stream into rows, commits them in chunks of
``checkpoint_frames`` frames on a writer thread (a killed run loses at most one chunk per
video in flight), writes the done markers and error records, and counts.

Executors: :class:`LocalExecutor` (a decode thread feeding one in-process
:class:`~pipeline.caption.Captioner`) and :class:`pipeline.ray_executor.RayExecutor` (decode
tasks and one captioner actor per GPU on a Ray cluster). Both share all the bookkeeping here.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from pipeline.caption import Answer, Captioner, Question, make_questions
from pipeline.checksums import model_sha256
from pipeline.decode import VideoError, VideoFacts, VideoReader, format_timecode
from pipeline.sampling import Sample, Sampler
from pipeline.store import (
    Committed,
    ResultRow,
    done_marker,
    mark_done,
    read_committed,
    remove_error_records,
    write_chunk,
    write_video_facts,
    write_videos_table,
)

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".txt", ".lst", ".list")


class InputError(Exception):
    """The ``video=`` input names nothing usable; the message says what to pass."""


class ExecutorError(Exception):
    """The executor cannot start (no cluster, a bad setting); the message says what to do."""


@dataclass
class VideoOutcome:
    """What happened to one video in a run (``status``: todo, then done, skipped or error)."""

    path: str
    video_id: str
    status: str = "todo"
    error: str | None = None
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
    """What a run did; written as JSON next to the data."""

    videos: list[VideoOutcome] = field(default_factory=list)
    wall_s: float = 0.0
    workers: dict[str, WorkerStats] = field(default_factory=dict)

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
            "frames": self.frames,
            "rows": sum(v.rows for v in self.videos),
            "wall_s": round(self.wall_s, 3),
            "frames_per_s": round(self.frames / self.wall_s, 3) if self.wall_s else 0.0,
            "workers": [w.as_dict() for w in self.workers.values()],
            "videos": [asdict(v) for v in self.videos],
        }


def find_videos(spec: str, extensions: list[str]) -> list[Path]:
    """The videos named by ``video=``: a file, a folder (searched recursively for
    ``extensions``), a glob pattern, or a manifest (``.txt``/``.lst``/``.list``, one path per
    line, relative to the manifest; ``#`` starts a comment).

    Entries that turn out unusable (missing, a folder) are returned all the same: they become
    error records, and the rest of the night goes on.

    Raises:
        InputError: ``spec`` names nothing at all.
    """
    path = Path(spec).expanduser()
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        return [(path.parent / Path(line).expanduser()) for line in lines if line]
    if path.is_file():
        return [path]
    if path.is_dir():
        # A folder named like a video (x.mp4/) is kept: it becomes an error record.
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in wanted)
        if not found:
            raise InputError(f"video={spec} holds no files ending in {', '.join(sorted(wanted))}")
        return found
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        if not matches:
            raise InputError(f"video={spec} matches no files")
        return matches
    raise InputError(
        f"video={spec} does not exist; pass a video file, a folder, a glob or a manifest"
    )


def shard_videos(videos: list[Path], shard: int, num_shards: int) -> list[Path]:
    """The videos of shard ``shard`` out of ``num_shards`` (the others are left to other jobs).

    A video's shard is a SHA-256 of its size and first 64 KiB, modulo ``num_shards``: it
    depends on the file alone, so it is the same on every machine, whatever the order of the
    list or the path the file is mounted at, and does not move when videos are added; copies
    of one file fall in one shard, which captions it once. A file that cannot be read is
    placed by its path as listed (it becomes an error record in that shard).

    Raises:
        ValueError: ``shard`` is not in ``0..num_shards-1``.
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(
            f"shard must be in 0..num_shards-1 and num_shards >= 1, got shard={shard} num_shards={num_shards}"
        )
    if num_shards == 1:
        return videos
    return [p for p in videos if _shard_key(p) % num_shards == shard]


def _shard_key(path: Path) -> int:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            digest.update(f"{os.fstat(handle.fileno()).st_size}:".encode())
            digest.update(handle.read(1 << 16))
    except OSError:
        digest = hashlib.sha256(f"path:{path}".encode())
    return int(digest.hexdigest(), 16)


def video_id_of(path: Path) -> str:
    """A stable id from the file's content: its size plus its first, middle and last MiB.

    Renaming a file keeps its id; changing its content changes it.

    Raises:
        OSError: The file cannot be read.
    """
    block = 1 << 20
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in sorted({0, max(size // 2 - block // 2, 0), max(size - block, 0)}):
            handle.seek(offset)
            digest.update(handle.read(block))
    return digest.hexdigest()[:16]


def settings_id(settings: dict[str, Any]) -> str:
    """A short hash of JSON-able settings (the ``config_id`` of rows made with them)."""
    import json

    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


# -- what executors are given and give back ---------------------------------------------------


@dataclass(frozen=True)
class DecodeJob:
    """One video to decode, as an executor gets it (picklable: it travels to Ray tasks).

    Attributes:
        index: The video's position in the run (events name videos by it).
        path: The video file.
        done_frames: Frames that already have every answer: decoded, but not captioned.
        partial: Frames that have some of the answers: the indices (into the run's questions)
            of those still to ask. Frames in neither get every question.
    """

    index: int
    path: Path
    done_frames: frozenset[int] = frozenset()
    partial: dict[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoded:
    """Decoding of one video ended: how many frames were sent for captioning.

    Attributes:
        index: The video's :attr:`DecodeJob.index`.
        sent: Frames sent to the model.
        already_done: Sampled frames left out because they had every answer.
        started_at: When decoding started (epoch seconds).
        error: Why the video could not be read to its end, or ``None``.
        facts: What the decode learnt of the video (``None``: it could not be opened).
    """

    index: int
    sent: int
    already_done: int
    started_at: float
    error: str | None = None
    facts: VideoFacts | None = None


@dataclass(frozen=True)
class Captioned:
    """The answers about one frame.

    Attributes:
        index: The video's :attr:`DecodeJob.index`.
        sample: The sample, its pixels dropped.
        thumbnail: The frame's JPEG, or ``None``.
        answers: One per question, in question order.
        worker: Which worker answered (``local``, ``actor-<i>``).
        process: ``host:pid`` of the process that answered.
    """

    index: int
    sample: Sample
    thumbnail: bytes | None
    answers: list[Answer]
    worker: str
    process: str


_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


def without_pixels(sample: Sample) -> Sample:
    """``sample`` with an empty pixel array (the rows need only its place and reason)."""
    return replace(sample, frame=replace(sample.frame, rgb=_NO_PIXELS))


@dataclass(frozen=True)
class VideoDecoder:
    """Decodes and samples one video: the same code in the local decode thread and in Ray's
    decode tasks (picklable).

    Args:
        sampler: Chooses the frames.
        max_frames: Cap on samples per video.
        thumbnail: Makes a frame's JPEG (``None``: no thumbnails).
    """

    sampler: Sampler
    max_frames: int | None = None
    thumbnail: Callable[[np.ndarray], bytes] | None = None

    def frames(self, job: DecodeJob) -> Iterator[tuple[Sample, bytes | None] | Decoded]:
        """Yield ``(sample, thumbnail)`` for each frame to caption, then one :class:`Decoded`.

        A video that cannot be read (or stops decoding) ends with ``Decoded.error`` set;
        anything else raised is a bug and propagates.
        """
        started_at = time.time()
        sent = already_done = 0
        error = None
        reader: VideoReader | None = None
        try:
            with VideoReader(job.path) as reader:
                taken = 0
                for sample in self.sampler.sample(reader):
                    if self.max_frames is not None and taken >= self.max_frames:
                        break
                    taken += 1
                    if sample.frame.index in job.done_frames:
                        already_done += 1
                        continue
                    sent += 1
                    # One JPEG per frame, shared by its rows, made here, off the model's thread.
                    yield sample, self.thumbnail(sample.frame.rgb) if self.thumbnail else None
                else:
                    reader.check_complete()
        except (VideoError, OSError) as failure:
            error = str(failure) if isinstance(failure, VideoError) else _os_reason(job.path, failure)
        facts = reader.facts() if reader is not None else None
        yield Decoded(job.index, sent, already_done, started_at, error, facts)


@dataclass(frozen=True)
class Work:
    """Everything an executor needs for one run's videos.

    Attributes:
        jobs: The videos to decode, in order; ``jobs[i].index == i``.
        decoder: How to decode and sample one.
        questions: Asked about every frame (but see :meth:`asked`).
        prefetch_frames: Decoded frames an executor may hold ahead of the model, per stream.
    """

    jobs: list[DecodeJob]
    decoder: VideoDecoder
    questions: list[Question]
    prefetch_frames: int = 8

    def __post_init__(self) -> None:
        if any(job.index != i for i, job in enumerate(self.jobs)):
            raise ValueError("Work.jobs must be numbered by position (jobs[i].index == i)")

    def asked(self, video_index: int, frame_index: int) -> tuple[int, ...] | None:
        """Indices of the questions to ask about a frame; ``None``: all of them."""
        return self.jobs[video_index].partial.get(frame_index)


class Executor(Protocol):
    """Where frames are decoded and captioned: ``executor=local`` or ``executor=ray``.

    ``start`` loads the model (once per worker), ``run`` streams events until every job is
    decoded and every frame it sent is answered, ``close`` frees everything.
    """

    model_name: str
    model_files: dict[str, str]

    def start(self, cfg: Any, max_questions: int) -> None:
        """Load the model(s) for the composed config ``cfg``."""
        ...

    def run(self, work: Work) -> Iterator[Captioned | Decoded]:
        """Decode and caption ``work``, yielding events in any order."""
        ...

    def close(self) -> None:
        """Free the model(s) and workers."""
        ...


@dataclass
class _VideoTask:
    outcome: VideoOutcome
    path: Path
    committed: Committed = field(default_factory=Committed)
    pending_rows: list[ResultRow] = field(default_factory=list)
    pending_frames: int = 0
    sent: int = 0
    answered: int = 0
    decoded_all: bool = False
    started_at: float = 0.0


class Pipeline:
    """Captions videos with one model and commits the answers to ``output_dir``.

    Args:
        sampler: Chooses the frames.
        prompts: Asked about every frame.
        output_dir: Where Parquet goes (created, checked writable and locked by the caller).
        config_id: Id of the settings that shape answers (model, generation, sampler).
        max_frames: Cap on samples per video.
        checkpoint_frames: Frames per committed chunk.
        retry_failed: Retry videos and frames that failed before.
        prefetch_frames: Decoded frames queued ahead of the model.
        metadata: Stored in every Parquet file's schema metadata.
        thumbnail: Makes a frame's ``thumbnail`` bytes (``None``: rows have none).
    """

    def __init__(
        self,
        sampler: Sampler,
        prompts: list[str],
        output_dir: Path,
        config_id: str,
        max_frames: int | None = None,
        checkpoint_frames: int = 32,
        retry_failed: bool = False,
        prefetch_frames: int = 8,
        metadata: dict[str, Any] | None = None,
        thumbnail: Callable[[np.ndarray], bytes] | None = None,
    ) -> None:
        self.decoder = VideoDecoder(sampler, max_frames, thumbnail)
        self.questions: list[Question] = make_questions(prompts)
        self.output_dir = output_dir
        self.config_id = config_id
        self.work_id = settings_id(
            {"config": config_id, "prompts": sorted(q.prompt_id for q in self.questions), "max_frames": max_frames}
        )
        self.checkpoint_frames = max(checkpoint_frames, 1)
        self.retry_failed = retry_failed
        self.prefetch_frames = prefetch_frames
        self.metadata = {**(metadata or {}), "versions": package_versions()}
        self.model_name = ""

    # -- planning (no model needed) ---------------------------------------------------------

    def plan(self, videos: list[Path]) -> list[_VideoTask]:
        """Look at every video's committed work; skipped and unreadable ones are settled here.

        A second path with the content of an earlier one is skipped: both would write the
        same keys.
        """
        tasks = []
        first_path_of: dict[str, Path] = {}
        for path in videos:
            outcome = VideoOutcome(path=str(path), video_id="")
            task = _VideoTask(outcome=outcome, path=path)
            tasks.append(task)
            try:
                outcome.video_id = video_id_of(path)
            except OSError as error:
                outcome.video_id = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
                self._fail(task, _os_reason(path, error))
                if self.retry_failed:
                    remove_error_records(self.output_dir, outcome.video_id, self.config_id)
                continue
            if outcome.video_id in first_path_of:
                outcome.status = "skipped"
                log.info("skipped %s: same content as %s", path, first_path_of[outcome.video_id])
                continue
            first_path_of[outcome.video_id] = path
            if done_marker(self.output_dir, outcome.video_id, self.work_id).exists():
                outcome.status = "skipped"
                continue
            if self.retry_failed:
                remove_error_records(self.output_dir, outcome.video_id, self.config_id)
            task.committed = read_committed(self.output_dir, outcome.video_id, self.config_id)
            if task.committed.video_error is not None:
                outcome.status = "skipped"
                outcome.error = f"failed before: {task.committed.video_error}"
        return tasks

    def _fail(self, task: _VideoTask, reason: str) -> None:
        task.outcome.status = "error"
        task.outcome.error = reason

    # -- the run ----------------------------------------------------------------------------

    def run(self, tasks: list[_VideoTask], executor: Executor | Captioner | None) -> RunSummary:
        """Do the planned work.

        Args:
            tasks: From :meth:`plan`.
            executor: A started executor, or a set-up :class:`Captioner` (run locally); may be
                ``None`` when no video needs the model.

        Raises:
            StoreError: Results cannot be written (the run stops; committed chunks stay).
            EngineError: The model failed.
        """
        started = time.perf_counter()
        summary = RunSummary(videos=[t.outcome for t in tasks])
        todo = [t for t in tasks if t.outcome.status == "todo"]
        failed_at_plan = [t for t in tasks if t.outcome.status == "error"]
        if isinstance(executor, Captioner):
            executor = LocalExecutor(executor)
        if executor is not None:
            self.model_name = executor.model_name
            self.metadata["model_files"] = executor.model_files
            self.metadata["model_sha256"] = model_sha256(executor.model_files)
        show = sys.stderr.isatty()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer, tqdm(
            total=len(todo), desc="videos", unit="video", disable=not show
        ) as video_bar, tqdm(desc="frames", unit="frame", disable=not show) as frame_bar:
            self._writer, self._writes = writer, []
            self._video_bar = video_bar
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
                for event in executor.run(work):
                    task = todo[event.index]
                    if isinstance(event, Decoded):
                        self._take_decoded(task, event)
                    else:
                        self._take_answers(task, event)
                        self._count_worker(summary, event, time.perf_counter() - started)
                        frame_bar.update()
                    _raise_first_error(self._writes)
            for future in self._writes:
                future.result()
        if todo:
            write_videos_table(self.output_dir)
        summary.wall_s = time.perf_counter() - started
        return summary

    def _job(self, index: int, task: _VideoTask) -> DecodeJob:
        wanted = {q.prompt_id for q in self.questions}
        done: set[int] = set()
        partial: dict[int, tuple[int, ...]] = {}
        for frame, prompts in task.committed.answered.items():
            if wanted <= prompts:
                done.add(frame)
            elif wanted & prompts:
                partial[frame] = tuple(
                    i for i, q in enumerate(self.questions) if q.prompt_id not in prompts
                )
        return DecodeJob(index, task.path, frozenset(done), partial)

    def _take_decoded(self, task: _VideoTask, event: Decoded) -> None:
        task.decoded_all = True
        task.sent = event.sent
        task.started_at = event.started_at
        task.outcome.frames_already_done = event.already_done
        if event.facts is not None:
            self._writes.append(self._writer.submit(
                write_video_facts, self.output_dir, task.outcome.video_id, task.outcome.path, event.facts
            ))
        if event.error is not None:
            self._fail(task, event.error)
        self._finish_if_complete(task)

    def _take_answers(self, task: _VideoTask, event: Captioned) -> None:
        already = task.committed.answered.get(event.sample.frame.index, set())
        new = [a for a in event.answers if a.question.prompt_id not in already]
        task.pending_rows.extend(self._row(task, event.sample, a, event.thumbnail) for a in new)
        task.pending_frames += 1
        task.answered += 1
        task.outcome.frames += 1
        if task.pending_frames >= self.checkpoint_frames:
            self._submit_chunk(task)
        self._finish_if_complete(task)

    @staticmethod
    def _count_worker(summary: RunSummary, event: Captioned, elapsed_s: float) -> None:
        stats = summary.workers.setdefault(event.worker, WorkerStats(event.worker))
        if event.process not in stats.processes:
            stats.processes.append(event.process)
        stats.frames += 1
        stats.busy_s = elapsed_s

    def _finish_if_complete(self, task: _VideoTask) -> None:
        if not (task.decoded_all and task.answered == task.sent):
            return
        self._submit_chunk(task)
        if task.outcome.status == "error":
            self._submit_error_record(task)
        else:
            self._writes.append(self._writer.submit(self._mark_done, task))
        self._video_bar.update()

    def _submit_chunk(self, task: _VideoTask) -> None:
        rows, task.pending_rows, task.pending_frames = task.pending_rows, [], 0
        ok = [r for r in rows if r.status == "ok"]
        errors = [r for r in rows if r.status != "ok"]
        task.outcome.rows += len(rows)
        for kind, chunk in (("part", ok), ("errors", errors)):
            if chunk:
                self._writes.append(
                    self._writer.submit(
                        write_chunk, self.output_dir, task.outcome.video_id, kind,
                        self.config_id, chunk, self.metadata,
                    )
                )

    def _submit_error_record(self, task: _VideoTask) -> None:
        row = self._error_row(task, task.outcome.error or "unknown error")
        task.outcome.rows += 1
        self._writes.append(
            self._writer.submit(
                write_chunk, self.output_dir, task.outcome.video_id, "errors",
                self.config_id, [row], self.metadata,
            )
        )
        log.warning("failed %s: %s", task.outcome.path, task.outcome.error)

    def _mark_done(self, task: _VideoTask) -> None:
        outcome = task.outcome
        outcome.status = "done"
        outcome.wall_s = time.time() - task.started_at
        mark_done(self.output_dir, outcome.video_id, self.work_id, asdict(outcome))
        log.info(
            "done %s: %d frames captioned, %d already done, %d rows, %.1f s",
            outcome.path, outcome.frames, outcome.frames_already_done, outcome.rows, outcome.wall_s,
        )

    def _row(
        self, task: _VideoTask, sample: Sample, answer: Answer, thumbnail: bytes | None
    ) -> ResultRow:
        frame = sample.frame
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
            thumbnail=thumbnail,
            shot_start_s=sample.shot_start_s,
            duplicate_of=sample.duplicate_of,
            finish_reason=answer.finish_reason or None,
        )

    def _error_row(self, task: _VideoTask, reason: str) -> ResultRow:
        return ResultRow(
            video_path=task.outcome.path,
            video_id=task.outcome.video_id,
            model=self.model_name,
            status="error",
            error=reason,
            config_id=self.config_id,
        )


_DONE = object()


class LocalExecutor:
    """``executor=local``: a decode thread feeding one in-process captioner.

    The thread decodes and samples the videos one after another into a bounded queue
    (``prefetch_frames``), so decoding overlaps model work; the engine takes frames from that
    queue across video boundaries.

    Args:
        captioner: A set-up captioner to use (not closed here); ``None``: :meth:`start` loads
            one from the config.
    """

    def __init__(self, captioner: Captioner | None = None) -> None:
        self.captioner = captioner
        self._owned = False
        self._process = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def model_name(self) -> str:
        """The preset's name."""
        return self.captioner.model_name if self.captioner else ""

    @property
    def model_files(self) -> dict[str, str]:
        """The model files in use."""
        return model_files_of(self.captioner)

    def start(self, cfg: Any, max_questions: int) -> None:
        """Resolve (and if needed fetch) the weights and load the model.

        Raises:
            WeightsError: Files missing or not matching.
            EngineError: The model does not load.
        """
        captioner = Captioner.from_config(cfg, max_questions=max_questions)
        captioner.setup()
        self.captioner, self._owned = captioner, True

    def close(self) -> None:
        """Free the model if :meth:`start` loaded it."""
        if self._owned and self.captioner is not None:
            self.captioner.close()
            self.captioner, self._owned = None, False

    def run(self, work: Work) -> Iterator[Captioned | Decoded]:
        """Decode on a thread, caption here; yields each video's :class:`Decoded` no later than
        the answers that follow it."""
        if self.captioner is None:
            raise RuntimeError("LocalExecutor.start() was not called")
        producer = _Producer(work)
        producer.start()
        decoded: deque[Decoded] = deque()

        def frames() -> Iterator[tuple[Any, ...]]:
            while (item := producer.queue.get()) is not _DONE:
                if isinstance(item, Decoded):
                    decoded.append(item)
                    continue
                index, sample, thumbnail = item
                yield (index, sample, thumbnail), sample.frame.rgb, work.asked(index, sample.frame.index)

        try:
            for (index, sample, thumbnail), answers in self.captioner.caption(frames(), work.questions):
                while decoded:
                    yield decoded.popleft()
                yield Captioned(index, without_pixels(sample), thumbnail, answers, "local", self._process)
            while decoded:
                yield decoded.popleft()
        finally:
            producer.stop.set()
            producer.join()
        if producer.error is not None:
            raise producer.error


class _Producer(threading.Thread):
    """Decodes and samples the videos in turn, queueing the frames that still need answers."""

    def __init__(self, work: Work) -> None:
        super().__init__(name="decode", daemon=True)
        self.work = work
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(work.prefetch_frames, 1))
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for job in self.work.jobs:
                for item in self.work.decoder.frames(job):
                    if not self._put(item if isinstance(item, Decoded) else (job.index, *item)):
                        return
        except BaseException as error:  # noqa: BLE001  (handed to the main thread, which re-raises it)
            self.error = error
        finally:
            self._put(_DONE)

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def model_files_of(captioner: Captioner | None) -> dict[str, str]:
    """The model files a captioner uses, for the Parquet metadata (empty without one)."""
    if captioner is None:
        return {}
    return {"text_model": str(captioner.files.text_model), "mmproj": str(captioner.files.mmproj)}


def _os_reason(path: Path, error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return f"vanished or missing: {path}"
    if isinstance(error, IsADirectoryError) or path.is_dir():
        return f"is a directory, not a video: {path}"
    if isinstance(error, PermissionError):
        return f"permission denied: {path}"
    return f"cannot read {path}: {error.strerror or error}"


def _raise_first_error(writes: list[Future[Any]]) -> None:
    for future in writes:
        if future.done() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the results."""
    versions = {}
    for name in ("video-caption-pipeline", "llama-cpp-python", "numpy", "opencv-python-headless", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
