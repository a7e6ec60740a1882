"""Sampling stage: choose which decoded frames are worth asking the model about.

A sampler walks a :class:`~pipeline.decode.VideoReader` and yields :class:`Sample` records.
It sees every frame's time after a cheap ``grab()`` and decodes pixels (``retrieve()``) only
for the frames it looks at, so skipped frames cost almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from pipeline.decode import Frame, VideoReader


@dataclass(frozen=True)
class Sample:
    """A frame chosen for captioning and why it was chosen.

    Attributes:
        frame: The decoded frame.
        reason: Why the frame was chosen (``interval``, ``all``, ...).
        shot_index: The shot the frame belongs to, where the sampler knows shots.
        shot_start_s: Start time of that shot in seconds.
        duplicate_of: Frame index of an earlier sample this frame repeats, where kept for
            reference.
    """

    frame: Frame
    reason: str
    shot_index: int | None = None
    shot_start_s: float | None = None
    duplicate_of: int | None = None


class Sampler(Protocol):
    """Anything that turns a video stream into samples."""

    def sample(self, reader: VideoReader) -> Iterator[Sample]:
        """Yield the chosen frames of ``reader`` in stream order."""
        ...


@dataclass(frozen=True)
class AllSampler:
    """Every frame."""

    def sample(self, reader: VideoReader) -> Iterator[Sample]:
        """Yield every frame of the video."""
        for frame in reader.frames():
            yield Sample(frame, "all")


@dataclass(frozen=True)
class IntervalSampler:
    """One frame every ``interval_s`` seconds of presentation time; the first frame always.

    A frame is taken when its timestamp reaches the next due time, and the due times advance
    on the grid ``0, interval_s, 2*interval_s, ...`` from the first frame, so sampling does not
    drift on variable-frame-rate video.

    Args:
        interval_s: Seconds between samples; must be positive.
    """

    interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"sampler.interval_s must be > 0, got {self.interval_s}")

    def sample(self, reader: VideoReader) -> Iterator[Sample]:
        """Yield the first frame at or after each multiple of ``interval_s``."""
        origin_s: float | None = None
        next_due_s = 0.0
        # Half a millisecond of slack: container times are rounded to the time base.
        slack_s = 5e-4
        for position in reader:
            if origin_s is None:
                origin_s = position.timestamp_s
            elapsed_s = position.timestamp_s - origin_s
            if elapsed_s + slack_s < next_due_s:
                continue
            yield Sample(reader.retrieve(), "interval")
            while next_due_s <= elapsed_s + slack_s:
                next_due_s += self.interval_s
