"""The one loop over videos: decode → sample → caption → store.

A background thread decodes and samples the videos one after another and queues the chosen
frames (a bounded prefetch, so decoding overlaps model work); the engine pulls frames from
that queue across video boundaries, so the model never waits for the next video to open; a
writer thread writes each video's rows as soon as its last frame is answered.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from itertools import islice
from pathlib import Path
from typing import Any

from pipeline.caption import Answer, Captioner, Question, make_questions
from pipeline.decode import VideoError, VideoReader, format_timecode
from pipeline.sampling import Sample, Sampler
from pipeline.store import ResultRow, write_rows

log = logging.getLogger(__name__)


class InputError(Exception):
    """The ``video=`` input names nothing usable; the message says what to pass."""


@dataclass
class VideoOutcome:
    """What happened to one video in a run."""

    path: str
    video_id: str
    status: str = "done"
    error: str | None = None
    frames: int = 0
    rows: int = 0


@dataclass
class RunSummary:
    """What a run did."""

    videos: list[VideoOutcome] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[VideoOutcome]:
        """Videos that ended in an error."""
        return [v for v in self.videos if v.status == "error"]

    @property
    def frames(self) -> int:
        """Frames captioned, over all videos."""
        return sum(v.frames for v in self.videos)


def find_videos(spec: str) -> list[Path]:
    """The videos named by ``video=``.

    Raises:
        InputError: Nothing is there.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.exists():
        raise InputError(f"video={spec} is not a file; pass a video file")
    raise InputError(f"video={spec} does not exist; pass the path of a video file")


def video_id_of(path: Path) -> str:
    """A stable id from the file's content: its size plus its first, middle and last MiB.

    Renaming a file keeps its id; changing its content changes it.
    """
    block = 1 << 20
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        for offset in sorted({0, max(size // 2 - block // 2, 0), max(size - block, 0)}):
            handle.seek(offset)
            digest.update(handle.read(block))
    return digest.hexdigest()[:16]


@dataclass
class _VideoTask:
    outcome: VideoOutcome
    path: Path
    rows: list[ResultRow] = field(default_factory=list)
    sent: int = 0
    answered: int = 0
    decoded_all: bool = False


_DONE = object()


class _Producer(threading.Thread):
    """Decodes and samples every video in turn, queueing ``(task, sample)`` pairs."""

    def __init__(
        self, tasks: list[_VideoTask], sampler: Sampler, max_frames: int | None, depth: int
    ) -> None:
        super().__init__(name="decode", daemon=True)
        self.tasks = tasks
        self.sampler = sampler
        self.max_frames = max_frames
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
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
        try:
            with VideoReader(task.path) as reader:
                for sample in islice(self.sampler.sample(reader), self.max_frames):
                    task.sent += 1
                    if not self._put((task, sample)):
                        return
        except (VideoError, OSError) as error:
            task.outcome.status = "error"
            task.outcome.error = str(error)
        self._put((task, None))

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class Pipeline:
    """Captions videos with one loaded model and writes the answers to ``output_dir``.

    Args:
        captioner: A set-up captioner (model loaded).
        sampler: Chooses the frames.
        prompts: Asked about every frame.
        output_dir: Where Parquet goes (created and checked writable by the caller).
        max_frames: Cap on samples per video.
        prefetch_frames: Decoded frames queued ahead of the model.
        metadata: Stored in every Parquet file's schema metadata.
    """

    def __init__(
        self,
        captioner: Captioner,
        sampler: Sampler,
        prompts: list[str],
        output_dir: Path,
        max_frames: int | None = None,
        prefetch_frames: int = 8,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.captioner = captioner
        self.sampler = sampler
        self.questions: list[Question] = make_questions(prompts)
        self.output_dir = output_dir
        self.max_frames = max_frames
        self.prefetch_frames = prefetch_frames
        self.metadata = {
            **(metadata or {}),
            "model_files": {
                "text_model": str(captioner.files.text_model),
                "mmproj": str(captioner.files.mmproj),
            },
            "versions": package_versions(),
        }

    def run(self, videos: list[Path]) -> RunSummary:
        """Caption every video; a bad video becomes an error record and the run goes on.

        Raises:
            StoreError: Results cannot be written (the run stops; written files stay).
            EngineError: The model failed.
        """
        started = time.perf_counter()
        tasks = [self._task(path) for path in videos]
        summary = RunSummary(videos=[t.outcome for t in tasks])
        producer = _Producer(
            [t for t in tasks if t.outcome.status != "error"],
            self.sampler,
            self.max_frames,
            self.prefetch_frames,
        )
        writes: list[Future[Any]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
            for task in tasks:
                if task.outcome.status == "error":
                    writes.append(writer.submit(self._write, task))
            producer.start()
            try:
                jobs = self._jobs(producer, writer, writes)
                for (task, sample), answers in self.captioner.caption(jobs, self.questions):
                    task.rows.extend(self._rows(task, sample, answers))
                    task.answered += 1
                    self._finish_if_complete(task, writer, writes)
                    _raise_first_error(writes)
            finally:
                producer.stop.set()
                producer.join()
            for future in writes:
                future.result()
        if producer.error is not None:
            raise producer.error
        summary.wall_s = time.perf_counter() - started
        return summary

    def _task(self, path: Path) -> _VideoTask:
        outcome = VideoOutcome(path=str(path), video_id="")
        try:
            outcome.video_id = video_id_of(path)
        except OSError as error:
            outcome.video_id = hashlib.sha256(str(path).encode()).hexdigest()[:16]
            outcome.status = "error"
            outcome.error = f"cannot read {path}: {error.strerror or error}"
        return _VideoTask(outcome=outcome, path=path)

    def _jobs(
        self, producer: _Producer, writer: ThreadPoolExecutor, writes: list[Future[Any]]
    ) -> Iterator[tuple[tuple[_VideoTask, Sample], Any]]:
        while True:
            item = producer.queue.get()
            if item is _DONE:
                return
            task, sample = item
            if sample is None:
                task.decoded_all = True
                self._finish_if_complete(task, writer, writes)
                continue
            yield (task, sample), sample.frame.rgb

    def _finish_if_complete(
        self, task: _VideoTask, writer: ThreadPoolExecutor, writes: list[Future[Any]]
    ) -> None:
        if task.decoded_all and task.answered == task.sent:
            task.outcome.frames = task.answered
            writes.append(writer.submit(self._write, task))

    def _write(self, task: _VideoTask) -> None:
        outcome = task.outcome
        rows = sorted(task.rows, key=lambda r: (r.frame_index or 0, r.prompt_id or ""))
        if outcome.status == "error":
            rows.append(self._error_row(task, outcome.error or "unknown error"))
        if rows:
            write_rows(self.output_dir, outcome.video_id, "part-00000", rows, self.metadata)
        outcome.rows = len(rows)
        if outcome.status == "error":
            log.warning("failed %s: %s", outcome.path, outcome.error)
        else:
            log.info("done %s: %d frames, %d rows", outcome.path, outcome.frames, outcome.rows)

    def _rows(self, task: _VideoTask, sample: Sample, answers: list[Answer]) -> list[ResultRow]:
        frame = sample.frame
        return [
            ResultRow(
                video_path=task.outcome.path,
                video_id=task.outcome.video_id,
                frame_index=frame.index,
                timestamp_s=frame.timestamp_s,
                timecode=format_timecode(frame.timestamp_s),
                prompt_id=answer.question.prompt_id,
                prompt=answer.question.text,
                answer=answer.text,
                model=self.captioner.model_name,
                status="error" if answer.error else "ok",
                error=answer.error,
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=answer.completion_tokens,
                latency_ms=answer.latency_ms,
                sample_reason=sample.reason,
                shot_index=sample.shot_index,
            )
            for answer in answers
        ]

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
            model=self.captioner.model_name,
            status="error",
            error=reason,
            prompt_tokens=0,
            completion_tokens=0,
            latency_ms=0.0,
            sample_reason=None,
            shot_index=None,
        )


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
