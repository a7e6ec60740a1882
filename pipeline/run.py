"""The one loop over videos: decode → sample → caption → store, resumably.

A run first *plans*: each video gets its content id, and a video whose work is already
complete (a ``_done`` marker) or failed before (an error record; ``retry_failed=true`` retries
it) is skipped without being opened, so re-running a finished night does nothing, quickly,
and loads no model. Then a background thread decodes and samples the remaining videos one
after another and queues the frames that still miss an answer (a bounded prefetch, so
decoding overlaps model work); the engine pulls frames from that queue across video
boundaries; a writer thread commits answers in chunks of ``checkpoint_frames`` frames, so a
killed run loses at most one chunk per video in flight.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.caption import Answer, Captioner, Question, make_questions
from pipeline.decode import VideoError, VideoReader, format_timecode
from pipeline.sampling import Sample, Sampler
from pipeline.store import (
    Committed,
    ResultRow,
    done_marker,
    mark_done,
    read_committed,
    remove_error_records,
    write_chunk,
)

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".txt", ".lst", ".list")


class InputError(Exception):
    """The ``video=`` input names nothing usable; the message says what to pass."""


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
class RunSummary:
    """What a run did; written as JSON next to the data."""

    videos: list[VideoOutcome] = field(default_factory=list)
    wall_s: float = 0.0

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
    started_s: float = 0.0


_DONE = object()


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
        self.sampler = sampler
        self.questions: list[Question] = make_questions(prompts)
        self.output_dir = output_dir
        self.config_id = config_id
        self.work_id = settings_id(
            {"config": config_id, "prompts": sorted(q.prompt_id for q in self.questions), "max_frames": max_frames}
        )
        self.max_frames = max_frames
        self.checkpoint_frames = max(checkpoint_frames, 1)
        self.retry_failed = retry_failed
        self.prefetch_frames = prefetch_frames
        self.thumbnail = thumbnail
        self.metadata = {**(metadata or {}), "versions": package_versions()}
        self.model_name = ""

    # -- planning (no model needed) ---------------------------------------------------------

    def plan(self, videos: list[Path]) -> list[_VideoTask]:
        """Look at every video's committed work; skipped and unreadable ones are settled here."""
        tasks = []
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

    def run(self, tasks: list[_VideoTask], captioner: Captioner | None) -> RunSummary:
        """Do the planned work; ``captioner`` (set up) may be ``None`` when no video needs it.

        Raises:
            StoreError: Results cannot be written (the run stops; committed chunks stay).
            EngineError: The model failed.
        """
        started = time.perf_counter()
        summary = RunSummary(videos=[t.outcome for t in tasks])
        todo = [t for t in tasks if t.outcome.status == "todo"]
        failed_at_plan = [t for t in tasks if t.outcome.status == "error"]
        self.model_name = captioner.model_name if captioner else ""
        if captioner is not None:
            self.metadata["model_files"] = {
                "text_model": str(captioner.files.text_model),
                "mmproj": str(captioner.files.mmproj),
            }
        show = sys.stderr.isatty()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer, tqdm(
            total=len(todo), desc="videos", unit="video", disable=not show
        ) as video_bar, tqdm(desc="frames", unit="frame", disable=not show) as frame_bar:
            self._writer, self._writes = writer, []
            self._video_bar = video_bar
            for task in failed_at_plan:
                self._submit_error_record(task)
            if todo:
                if captioner is None:
                    raise RuntimeError("videos to caption but no captioner")
                producer = _Producer(self, todo)
                producer.start()
                try:
                    jobs = self._jobs(producer)
                    for (task, sample, thumbnail), answers in captioner.caption(jobs, self.questions):
                        self._take_answers(task, sample, thumbnail, answers)
                        frame_bar.update()
                        _raise_first_error(self._writes)
                finally:
                    producer.stop.set()
                    producer.join()
                if producer.error is not None:
                    raise producer.error
            for future in self._writes:
                future.result()
        summary.wall_s = time.perf_counter() - started
        return summary

    def _jobs(
        self, producer: _Producer
    ) -> Iterator[tuple[tuple[_VideoTask, Sample, bytes | None], Any]]:
        while True:
            item = producer.queue.get()
            if item is _DONE:
                return
            task, sample, thumbnail = item
            if sample is None:
                task.decoded_all = True
                self._finish_if_complete(task)
                continue
            yield (task, sample, thumbnail), sample.frame.rgb

    def _take_answers(
        self, task: _VideoTask, sample: Sample, thumbnail: bytes | None, answers: list[Answer]
    ) -> None:
        already = task.committed.answered.get(sample.frame.index, set())
        new = [a for a in answers if a.question.prompt_id not in already]
        task.pending_rows.extend(self._row(task, sample, a, thumbnail) for a in new)
        task.pending_frames += 1
        task.answered += 1
        task.outcome.frames += 1
        if task.pending_frames >= self.checkpoint_frames:
            self._submit_chunk(task)
        self._finish_if_complete(task)

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
        outcome.wall_s = time.perf_counter() - task.started_s
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
        )

    def _error_row(self, task: _VideoTask, reason: str) -> ResultRow:
        return ResultRow(
            video_path=task.outcome.path,
            video_id=task.outcome.video_id,
            frame_index=None,
            timestamp_s=None,
            timecode=None,
            prompt_id=None,
            prompt=None,
            answer=None,
            model=self.model_name,
            status="error",
            error=reason,
            prompt_tokens=0,
            completion_tokens=0,
            latency_ms=0.0,
            sample_reason=None,
            shot_index=None,
            config_id=self.config_id,
        )


class _Producer(threading.Thread):
    """Decodes and samples the videos in turn, queueing the frames that still need answers."""

    def __init__(self, pipeline: Pipeline, tasks: list[_VideoTask]) -> None:
        super().__init__(name="decode", daemon=True)
        self.pipeline = pipeline
        self.tasks = tasks
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(pipeline.prefetch_frames, 1))
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for task in self.tasks:
                if self.stop.is_set():
                    return
                self._sample_video(task)
        except BaseException as error:  # handed to the main thread, which re-raises it
            self.error = error
        finally:
            self._put(_DONE)

    def _sample_video(self, task: _VideoTask) -> None:
        task.started_s = time.perf_counter()
        wanted = {q.prompt_id for q in self.pipeline.questions}
        cap = self.pipeline.max_frames
        try:
            with VideoReader(task.path) as reader:
                taken = 0
                for sample in self.pipeline.sampler.sample(reader):
                    if cap is not None and taken >= cap:
                        break
                    taken += 1
                    if wanted <= task.committed.answered.get(sample.frame.index, set()):
                        task.outcome.frames_already_done += 1
                        continue
                    task.sent += 1
                    # One JPEG per frame, shared by its rows, made here, off the model's thread.
                    thumbnail = self.pipeline.thumbnail(sample.frame.rgb) if self.pipeline.thumbnail else None
                    if not self._put((task, sample, thumbnail)):
                        return
                else:
                    reader.check_complete()
        except (VideoError, OSError) as error:
            self.pipeline._fail(task, str(error) if isinstance(error, VideoError) else _os_reason(task.path, error))
        self._put((task, None, None))

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


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
