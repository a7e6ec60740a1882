"""The contract between the run loop and its executors.

The run loop (:class:`pipeline.run.Pipeline`) hands an executor one :class:`Work` per run: the
videos to decode (:class:`DecodeJob`), how to decode and sample them (a :class:`Decoder`, in
practice :class:`pipeline.executors.frames.VideoDecoder`) and the questions. The executor
streams back events: a :class:`Captioned` per frame and a :class:`Decoded` per video. A frame
travels as one :class:`FrameJob` from the decoder, through the captioner, back to the run loop
that makes its rows; its pixels are dropped once it is answered. Executors load the model from
a :class:`~pipeline.caption.CaptionSpec`, which the command line builds once from the config.

Only records and protocols live here; what every executor does with them is in
:mod:`.frames`. Everything here is picklable: Ray ships it to decode tasks and captioner actors.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.caption import Answer, CaptionSpec, Question
from pipeline.decode import VideoFacts
from pipeline.sampling import Sample

__all__ = [
    "CaptionSpec",
    "Captioned",
    "DecodeJob",
    "Decoded",
    "Decoder",
    "Executor",
    "FrameJob",
    "Work",
]

_NO_PIXELS = np.zeros((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class DecodeJob:
    """One video to decode.

    Attributes:
        video_index: The video's position in the run (events name videos by it).
        path: The video file.
        video_id: The id of the content planned (:func:`~pipeline.inputs.video_id_of`): what
            the decoder finds at ``path`` must still be that.
        done_frames: Frames that already have every answer: decoded, but not captioned.
        partial: Frames that have some of the answers: the indices (into the run's questions)
            of those still to ask. Frames in neither get every question.
    """

    video_index: int
    path: Path
    video_id: str
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
        facts: What the decode learnt of the video (``None``: it could not be opened, or changed).
        changed: The file was not the planned content (:attr:`DecodeJob.video_id`) when the
            decoder opened it, or no longer when decoding ended (a copy under way): nothing of
            it may be filed under that id; ``error`` and ``facts`` are then ``None``.
    """

    video_index: int
    sent: int
    already_done: int
    error: str | None = None
    facts: VideoFacts | None = None
    changed: bool = False


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


class Decoder(Protocol):
    """Decodes and samples one video: the same in a local decode thread and in a Ray decode
    task (picklable)."""

    def frames(self, job: DecodeJob) -> Iterator[FrameJob | Decoded]:
        """Yield a :class:`FrameJob` for each frame to caption, then one :class:`Decoded`."""
        ...


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
    decoder: Decoder
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

    @property
    def engine_choices(self) -> list[dict[str, Any]]:
        """What each worker's engine decided on its machine (frames in flight, text weights:
        :meth:`Captioner.choices`), for the run summary (empty before :meth:`start`)."""
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

    def run(self, work: Work) -> Generator[Captioned | Decoded, None, None]:
        """Decode and caption ``work``, yielding events in any order, but each video's
        :class:`Decoded` no later than it would be needed to see the video complete. A caller
        that stops early closes the generator before :meth:`close`, so that the work in
        flight ends while the model is still loaded."""
        ...

    def close(self) -> None:
        """Free the model(s) and workers."""
        ...
