"""What every executor does with a :class:`~pipeline.executors.base.Work`: decode and sample
a video into frame jobs (:class:`VideoDecoder`), stream them through a captioner
(:func:`answer_frames`), and name the process that answered (:func:`this_process`)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.caption import Answer, Captioner, Question
from pipeline.decode import VideoError, VideoReader
from pipeline.errors import ConfigError
from pipeline.executors.base import Decoded, DecodeJob, FrameJob
from pipeline.inputs import holds_other_content, os_reason
from pipeline.sampling import Sampler, expected_samples


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
        one that is not the planned content (:func:`~pipeline.inputs.holds_other_content`)
        once the file is open, or once decoding ends, with ``Decoded.changed``: a copy cut
        short by ``cp`` fails to decode, and that failure is the change, not a bad file.
        Anything else raised is a bug and propagates.
        """
        sent = already_done = 0
        error = None
        reader: VideoReader | None = None
        changed = False
        try:
            with VideoReader(job.path) as reader:
                changed = holds_other_content(job.path, job.video_id)
                if not changed:
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
        if changed or holds_other_content(job.path, job.video_id):
            yield Decoded(job.video_index, sent, already_done, changed=True)
        else:
            yield Decoded(job.video_index, sent, already_done, error, reader.facts() if reader is not None else None)


def answer_frames(
    captioner: Captioner, jobs: Iterable[FrameJob], questions: list[Question]
) -> Iterator[tuple[FrameJob, list[Answer]]]:
    """Stream frame jobs through a captioner's batched engine: each job with its answers, in
    the order they finish."""
    return captioner.caption(((job, job.rgb, job.asked) for job in jobs), questions)


def this_process() -> str:
    """``host:pid`` of this process, as :attr:`Captioned.process` names it."""
    return f"{socket.gethostname()}:{os.getpid()}"
