"""The contract between the run loop and its executors.

The run loop (:class:`pipeline.run.Pipeline`) hands an executor one :class:`Work` per run: the
videos to decode (:class:`DecodeJob`), how to decode and sample them (:class:`VideoDecoder`)
and the questions. The executor streams back events: a :class:`Captioned` per frame and a
:class:`Decoded` per video. A frame travels as one :class:`FrameJob` from the decoder, through
the captioner, back to the run loop that makes its rows; its pixels are dropped once it is
answered. Executors load the model from a :class:`~pipeline.caption.CaptionSpec`, which the
command line builds once from the config.

Everything here is picklable: Ray ships it to decode tasks and captioner actors.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.caption import Answer, Captioner, CaptionSpec, Question
from pipeline.decode import VideoError, VideoFacts, VideoReader
from pipeline.errors import ConfigError
from pipeline.inputs import os_reason
from pipeline.sampling import Sample, Sampler, expected_samples

__all__ = [
    "CaptionSpec",
    "Captioned",
    "DecodeJob",
    "Decoded",
    "Executor",
    "FrameJob",
    "VideoDecoder",
    "Work",
    "answer_frames",
    "this_process",
]

_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class DecodeJob:
    """One video to decode.

    Attributes:
        video_index: The video's position in the run (events name videos by it).
        path: The video file.
        done_frames: Frames that already have every answer: decoded, but not captioned.
        partial: Frames that have some of the answers: the indices (into the run's questions)
            of those still to ask. Frames in neither get every question.
    """

    video_index: int
    path: Path
    done_frames: frozenset[int] = frozenset()
    partial: dict[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameJob:
    """One sampled frame, from the decoder through the captioner to its rows.

    Attributes:
        video_index: The video's :attr:`DecodeJob.video_index`.
        sample: The sample; its pixels are dropped once answered (:meth:`without_pixels`).
        thumbnail: The frame's JPEG, or ``None``.
        asked: Indices of the questions to ask about it; ``None``: all of them.
    """

    video_index: int
    sample: Sample
    thumbnail: bytes | None
    asked: tuple[int, ...] | None

    @property
    def rgb(self) -> np.ndarray:
        """The frame's pixels (empty once answered)."""
        return self.sample.frame.rgb

    def without_pixels(self) -> FrameJob:
        """This job with an empty pixel array (the rows need only its place and reason)."""
        frame = replace(self.sample.frame, rgb=_NO_PIXELS)
        return replace(self, sample=replace(self.sample, frame=frame))


@dataclass(frozen=True)
class Decoded:
    """Decoding of one video ended: how many frames were sent for captioning.

    Attributes:
        video_index: The video's :attr:`DecodeJob.video_index`.
        sent: Frames sent to the model.
        already_done: Sampled frames left out because they had every answer.
        error: Why the video could not be read to its end, or ``None``.
        facts: What the decode learnt of the video (``None``: it could not be opened).
    """

    video_index: int
    sent: int
    already_done: int
    error: str | None = None
    facts: VideoFacts | None = None


@dataclass(frozen=True)
class Captioned:
    """The answers about one frame.

    Attributes:
        job: The frame, its pixels dropped.
        answers: One per asked question, in question order.
        worker: Which worker answered (``local``, ``actor-<i>``).
        process: ``host:pid`` of the process that answered.
    """

    job: FrameJob
    answers: list[Answer]
    worker: str
    process: str


@dataclass(frozen=True)
class VideoDecoder:
    """Decodes and samples one video: the same code in the local decode thread and in Ray's
    decode tasks.

    Args:
        sampler: Chooses the frames.
        max_frames: Cap on samples per video.
        thumbnail: Makes a frame's JPEG (``None``: no thumbnails).
        start_s: Only samples at or after this time. The frames before it are decoded and
            shown to the sampler all the same, so a window takes exactly the samples a whole
            run takes there (and the frames keep their true indices).
        end_s: Only samples before this time (``None``: to the end); decoding stops there.

    Raises:
        ConfigError: The window is empty or negative.
    """

    sampler: Sampler
    max_frames: int | None
    thumbnail: Callable[[np.ndarray], bytes] | None
    start_s: float
    end_s: float | None

    def __post_init__(self) -> None:
        if self.start_s < 0 or (self.end_s is not None and self.end_s <= self.start_s):
            raise ConfigError(f"need 0 <= start_s < end_s, got start_s={self.start_s} end_s={self.end_s}")

    def expected_samples(self, path: Path) -> int | None:
        """About how many frames :meth:`frames` samples from ``path``, from the container's
        duration without decoding (see :func:`pipeline.sampling.expected_samples`); 0 for a
        file that does not open as a video, ``None`` where the sampler decides by content."""
        try:
            with VideoReader(path) as reader:
                expected = expected_samples(self.sampler, reader.info, self.start_s, self.end_s)
        except (VideoError, OSError):
            return 0
        return expected if expected is None or self.max_frames is None else min(expected, self.max_frames)

    def frames(self, job: DecodeJob) -> Iterator[FrameJob | Decoded]:
        """Yield a :class:`FrameJob` for each frame to caption, then one :class:`Decoded`.

        A video that cannot be read (or stops decoding) ends with ``Decoded.error`` set;
        anything else raised is a bug and propagates.
        """
        sent = already_done = 0
        error = None
        reader: VideoReader | None = None
        try:
            with VideoReader(job.path) as reader:
                taken = 0
                for sample in self.sampler.sample(reader):
                    if self.end_s is not None and sample.frame.timestamp_s >= self.end_s:
                        break
                    if sample.frame.timestamp_s < self.start_s:
                        continue
                    if self.max_frames is not None and taken >= self.max_frames:
                        break
                    taken += 1
                    if sample.frame.index in job.done_frames:
                        already_done += 1
                        continue
                    sent += 1
                    # One JPEG per frame, shared by its rows, made here, off the model's thread.
                    thumbnail = self.thumbnail(sample.frame.rgb) if self.thumbnail else None
                    yield FrameJob(job.video_index, sample, thumbnail, job.partial.get(sample.frame.index))
                else:
                    reader.check_complete()
        except VideoError as failure:
            error = str(failure)
        except OSError as failure:
            error = os_reason(job.path, failure)
        facts = reader.facts() if reader is not None else None
        yield Decoded(job.video_index, sent, already_done, error, facts)


@dataclass(frozen=True)
class Work:
    """Everything an executor needs for one run's videos.

    Attributes:
        jobs: The videos to decode, in order; ``jobs[i].video_index == i``.
        decoder: How to decode and sample one.
        questions: Asked about every frame (but see :attr:`FrameJob.asked`).
        prefetch_frames: Decoded frames an executor may hold ahead of the model, per stream.
    """

    jobs: list[DecodeJob]
    decoder: VideoDecoder
    questions: list[Question]
    prefetch_frames: int

    def __post_init__(self) -> None:
        if any(job.video_index != i for i, job in enumerate(self.jobs)):
            raise ValueError("Work.jobs must be numbered by position (jobs[i].video_index == i)")


class Executor(Protocol):
    """Where frames are decoded and captioned: ``executor=local`` or ``executor=ray``.

    ``start`` loads the model (once per worker), ``run`` streams events until every job is
    decoded and every frame it sent is answered, ``close`` frees everything.
    """

    @property
    def model_name(self) -> str:
        """The preset's name (empty before :meth:`start`)."""
        ...

    @property
    def model_files(self) -> dict[str, str]:
        """The model files in use, for the Parquet metadata (empty before :meth:`start`)."""
        ...

    def describe(self) -> str:
        """The loaded model's files and where it runs, in words (the run's start line)."""
        ...

    def start(self, spec: CaptionSpec, questions: list[Question]) -> None:
        """Load the model(s) that ``spec`` describes and check that a frame with ``questions``
        can fit their context (:meth:`Captioner.check_fits`), before any frame is decoded.

        Raises:
            UserError: Weights missing, no cluster, no frame fits, and the like.
        """
        ...

    def run(self, work: Work) -> Iterator[Captioned | Decoded]:
        """Decode and caption ``work``, yielding events in any order, but each video's
        :class:`Decoded` no later than it would be needed to see the video complete."""
        ...

    def close(self) -> None:
        """Free the model(s) and workers."""
        ...


def answer_frames(
    captioner: Captioner, jobs: Iterable[FrameJob], questions: list[Question]
) -> Iterator[tuple[FrameJob, list[Answer]]]:
    """Stream frame jobs through a captioner's batched engine: each job with its answers, in
    the order they finish."""
    return captioner.caption(((job, job.rgb, job.asked) for job in jobs), questions)


def this_process() -> str:
    """``host:pid`` of this process, as :attr:`Captioned.process` names it."""
    return f"{socket.gethostname()}:{os.getpid()}"
