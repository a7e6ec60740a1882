"""Sampling stage: choose which decoded frames are worth asking the model about.

A sampler walks a :class:`~pipeline.decode.VideoReader` and yields :class:`Sample` records.
It sees every frame's time after a cheap ``grab()`` and decodes pixels (``retrieve()``) only
for the frames it looks at, so skipped frames cost almost nothing.

Samplers compose: :class:`SceneSampler` finds shots (:mod:`pipeline.scenes`), takes one frame
per shot plus a fallback frame every ``fallback_interval_s`` of a long shot, and a
:class:`Dedup` stage (also available to :class:`IntervalSampler`) drops frames that repeat an
earlier sample anywhere in the video.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from pipeline.decode import BgrFrame, Frame, FrameTime, VideoInfo, VideoReader
from pipeline.errors import ConfigError
from pipeline.fingerprint import Fingerprint
from pipeline.ranges import Range, check_ranges
from pipeline.scenes import AnalysedFrame, Features, ShotDetector, shrink

# Container times are rounded to the time base; half a millisecond absorbs that.
_SLACK_S = 5e-4
# The shortest sampler.interval_s: below it the grid is finer than the slack, every frame is taken.
MIN_INTERVAL_S = 1e-3
_SCENE_RANGES = {
    "sampler.threshold": Range(0, strict=True, high=255),
    "sampler.min_shot_s": Range(0),
    "sampler.fallback_interval_s": Range(0, strict=True, null="for none"),
    "sampler.analysis_width": Range(16, high=1024),
    "sampler.analysis_stride": Range(1, high=100),
}


@dataclass(frozen=True)
class Sample:
    """A frame chosen for captioning and why it was chosen.

    Attributes:
        frame: The decoded frame.
        reason: Why the frame was chosen (``interval``, ``all``, ``scene_cut``, ``fallback``).
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
class Dedup:
    """Suppress samples that repeat an earlier sample anywhere in the video.

    A sample repeats an earlier one when their hashes are within ``threshold`` bits and their
    colours agree; it is compared with every earlier kept sample, so a shot the video cuts
    back to (an interview camera) is asked about once.

    Args:
        enabled: Whether to deduplicate at all.
        threshold: Largest Hamming distance (0-64) between the 64-bit hashes of duplicates.
        keep_duplicates: Emit duplicates anyway, with ``duplicate_of`` set to the frame index
            of the sample they repeat, instead of dropping them.

    Raises:
        ConfigError: ``threshold`` is out of range.
    """

    enabled: bool
    threshold: int
    keep_duplicates: bool

    def __post_init__(self) -> None:
        Range(0, high=64).check("sampler.dedup.threshold", self.threshold)

    def apply(self, samples: Iterator[Sample]) -> Iterator[Sample]:
        """Filter ``samples`` of one video, in order."""
        if not self.enabled:
            yield from samples
            return
        originals: list[tuple[Fingerprint, int]] = []
        for sample in samples:
            fingerprint = Fingerprint.of(sample.frame.rgb)
            original = self._original_of(fingerprint, originals)
            if original is None:
                originals.append((fingerprint, sample.frame.index))
                yield sample
            elif self.keep_duplicates:
                yield replace(sample, duplicate_of=original)

    def _original_of(self, fingerprint: Fingerprint, originals: list[tuple[Fingerprint, int]]) -> int | None:
        """Frame index of the closest earlier original (earliest on ties), if any is close."""
        best: tuple[int, int] | None = None
        for candidate, index in originals:
            distance = fingerprint.distance(candidate)
            closer = distance <= self.threshold and (best is None or distance < best[0])
            if closer and fingerprint.same_colours(candidate):
                best = (distance, index)
        return None if best is None else best[1]


def _deduplicated(samples: Iterator[Sample], dedup: Dedup | None) -> Iterator[Sample]:
    return dedup.apply(samples) if dedup is not None else samples


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
        dedup: Optional near-duplicate suppression of the sampled frames.

    Raises:
        ConfigError: ``interval_s`` is not positive.
    """

    interval_s: float
    dedup: Dedup | None

    def __post_init__(self) -> None:
        Range(MIN_INTERVAL_S, hint="for every frame: sampler=all").check("sampler.interval_s", self.interval_s)

    def sample(self, reader: VideoReader) -> Iterator[Sample]:
        """Yield the first frame at or after each multiple of ``interval_s``."""
        return _deduplicated(self._on_grid(reader), self.dedup)

    def _on_grid(self, reader: VideoReader) -> Iterator[Sample]:
        origin_s: float | None = None
        next_due_s = 0.0
        for position in reader:
            if origin_s is None:
                origin_s = position.timestamp_s
            elapsed_s = position.timestamp_s - origin_s
            if elapsed_s + _SLACK_S < next_due_s:
                continue
            yield Sample(reader.retrieve(), "interval")
            next_due_s = (math.floor((elapsed_s + _SLACK_S) / self.interval_s) + 1) * self.interval_s


def expected_samples(sampler: Sampler, info: VideoInfo, start_s: float = 0.0, end_s: float | None = None) -> int | None:
    """How many frames ``sampler`` takes from a video between ``start_s`` and ``end_s``, from
    its container's frame count and rate alone: exact for ``all`` and ``interval`` on a
    constant frame rate (an upper bound with dedup on); ``None`` for a sampler that decides by
    the content (``scene``) or a container that gives no duration.
    """
    if not (info.frame_count and info.fps):
        return None
    end = info.duration_s if end_s is None else min(end_s, info.duration_s)
    if end <= start_s:
        return 0
    if isinstance(sampler, AllSampler):
        step_s = 1 / info.fps
    elif isinstance(sampler, IntervalSampler):
        step_s = max(sampler.interval_s, 1 / info.fps)  # a shorter interval takes each frame once
    else:
        return None
    # The sampler's rule on the container's frames (frame i at i / fps): each point of the grid
    # 0, step, 2 step, ... takes the first frame at or after it, a frame no more than once
    # (step >= a frame); the frames in [start_s, end) count.
    return _points_before(end, step_s, info) - _points_before(start_s, step_s, info)


def _points_before(time_s: float, step_s: float, info: VideoInfo) -> int:
    """How many points of the grid ``0, step_s, 2 step_s, ...`` take a frame before ``time_s``:
    those up to the last frame before it (``i / fps < time_s``, the container's last at most)."""
    last = min(math.ceil((time_s - _SLACK_S) * info.fps) - 1, info.frame_count - 1)
    return 0 if last < 0 else math.floor((last / info.fps + _SLACK_S) / step_s) + 1


PICKS = ("first", "first_settled", "middle")
# A frame is settled when its change is at most this fraction of the cut threshold.
SETTLED_FRACTION = 0.25
# first_settled waits this long after a segment's first eligible frame for a settled one, then
# takes the steadiest.
SETTLE_WINDOW_S = 1.0
# The cut test weighs a step against its neighbours: a shot of min_shot_s needs this many
# analysed frames, which the default stride of 4 gives at 25 fps (0.5 s = 12.5 frames).
ANALYSED_PER_SHOT = 3
# middle keeps candidates at offsets 0, 0.1 s, then growing by this factor, so at most about
# four full frames are held and the pick lands within ~15 % of the segment's length of its middle.
MIDDLE_GRID_START_S = 0.1
MIDDLE_GRID_RATIO = math.sqrt(2)


class _Pick(Protocol):
    """How one segment chooses its frame among the eligible ones it is offered."""

    def offer(self, analysed: AnalysedFrame, frame: BgrFrame, offset_s: float) -> BgrFrame | None:
        """Take a frame ``offset_s`` into the segment; return the choice once it is certain."""
        ...

    def close(self, length_s: float) -> BgrFrame | None:
        """The segment ended ``length_s`` after its start: the choice, if one was held back."""
        ...


class _FirstPick:
    """The segment's first eligible frame."""

    def offer(self, analysed: AnalysedFrame, frame: BgrFrame, offset_s: float) -> BgrFrame | None:
        return frame

    def close(self, length_s: float) -> BgrFrame | None:
        return None


class _SettledPick:
    """The first eligible frame without motion, else the steadiest of the first SETTLE_WINDOW_S."""

    def __init__(self, settled_change: float) -> None:
        self.settled_change = settled_change
        self.first_offset_s: float | None = None
        self.steadiest: tuple[float, BgrFrame] | None = None

    def offer(self, analysed: AnalysedFrame, frame: BgrFrame, offset_s: float) -> BgrFrame | None:
        if analysed.change <= self.settled_change:
            return frame
        if self.first_offset_s is None:
            self.first_offset_s = offset_s
        if self.steadiest is None or analysed.change < self.steadiest[0]:
            self.steadiest = (analysed.change, frame)
        return self.steadiest[1] if offset_s - self.first_offset_s >= SETTLE_WINDOW_S else None

    def close(self, length_s: float) -> BgrFrame | None:
        return None if self.steadiest is None else self.steadiest[1]


class _MiddlePick:
    """The candidate nearest the middle of the segment, from a geometric grid of offsets."""

    def __init__(self) -> None:
        self.candidates: list[tuple[float, BgrFrame]] = []
        self.next_mark_s = 0.0

    def offer(self, analysed: AnalysedFrame, frame: BgrFrame, offset_s: float) -> BgrFrame | None:
        if offset_s + _SLACK_S >= self.next_mark_s:
            self.candidates.append((offset_s, frame))
            while self.next_mark_s <= offset_s + _SLACK_S:
                self.next_mark_s = max(self.next_mark_s * MIDDLE_GRID_RATIO, MIDDLE_GRID_START_S)
        # However long the segment gets, its middle is past offset_s / 2: of the candidates
        # before that, only the latest can still be the closest.
        before = [c for c in self.candidates if c[0] <= offset_s / 2]
        self.candidates = before[-1:] + [c for c in self.candidates if c[0] > offset_s / 2]
        return None

    def close(self, length_s: float) -> BgrFrame | None:
        if not self.candidates:
            return None
        return min(self.candidates, key=lambda c: abs(c[0] - length_s / 2))[1]


class _Segment:
    """A stretch of a shot that yields one sample: its start, or one fallback interval of it.

    Blank frames are never chosen; frames inside a transition only when nothing else was seen.
    """

    def __init__(self, number: int, start_s: float, pick: _Pick) -> None:
        self.number = number
        self.start_s = start_s
        self.end_s = start_s
        self.pick = pick
        self.spare: BgrFrame | None = None
        self.done = False

    def offer(self, analysed: AnalysedFrame, frame: BgrFrame | None) -> BgrFrame | None:
        self.end_s = analysed.timestamp_s
        if self.done or analysed.blank or frame is None:
            return None
        if analysed.in_transition:
            self.spare = self.spare or frame
            return None
        chosen = self.pick.offer(analysed, frame, analysed.timestamp_s - self.start_s)
        self.done = chosen is not None
        return chosen

    def close(self) -> BgrFrame | None:
        if self.done:
            return None
        self.done = True
        return self.pick.close(self.end_s - self.start_s) or self.spare


class _ShotPicker:
    """Turns the detector's verdicts into samples: a segment per shot and per fallback interval."""

    def __init__(self, new_pick: Callable[[], _Pick], fallback_interval_s: float | None) -> None:
        self.new_pick = new_pick
        self.fallback_interval_s = fallback_interval_s
        self.shot_index = -1
        self.shot_start_s = 0.0
        self.segment: _Segment | None = None
        # Held until anything is emitted, so a video of nothing but blank frames still yields one.
        self.first_frame: BgrFrame | None = None
        self.emitted = False

    def offer(self, analysed: AnalysedFrame, frame: BgrFrame | None) -> Iterator[Sample]:
        """Take the next analysed frame (``frame`` is None for blank ones); yield what is chosen."""
        segment = self.segment
        if segment is None or analysed.shot_start is not None:
            if segment is None:
                self.first_frame = frame
            yield from self._close()
            self.shot_index += 1
            self.shot_start_s = analysed.shot_start.timestamp_s if analysed.shot_start else analysed.timestamp_s
            segment = self.segment = _Segment(0, self.shot_start_s, self.new_pick())
        elif (fallback := self._fallback_segment(segment, analysed.timestamp_s)) is not None:
            yield from self._close()
            segment = self.segment = fallback
        chosen = segment.offer(analysed, frame)
        if chosen is not None:
            yield self._sample(chosen)

    def finish(self) -> Iterator[Sample]:
        """Yield what the last segment held back, or the first frame if nothing was chosen."""
        yield from self._close()
        if not self.emitted and self.first_frame is not None:
            yield Sample(self.first_frame.to_frame(), "scene_cut", 0, self.first_frame.timestamp_s)

    def _fallback_segment(self, current: _Segment, timestamp_s: float) -> _Segment | None:
        """The fallback segment that ``timestamp_s`` opens, if it is past the current one."""
        interval = self.fallback_interval_s
        if interval is None or timestamp_s + _SLACK_S < current.start_s + interval:
            return None
        number = int((timestamp_s - self.shot_start_s + _SLACK_S) // interval)
        return _Segment(number, self.shot_start_s + number * interval, self.new_pick())

    def _close(self) -> Iterator[Sample]:
        chosen = self.segment.close() if self.segment is not None else None
        if chosen is not None:
            yield self._sample(chosen)

    def _sample(self, frame: BgrFrame) -> Sample:
        self.emitted = True
        self.first_frame = None
        reason = "scene_cut" if self.segment is None or self.segment.number == 0 else "fallback"
        return Sample(frame.to_frame(), reason, self.shot_index, self.shot_start_s)


@dataclass(frozen=True)
class SceneSampler:
    """One frame per shot, plus one every ``fallback_interval_s`` of a long shot.

    Every ``analysis_stride``-th frame is converted and shrunk to ``analysis_width`` pixels for
    :class:`~pipeline.scenes.ShotDetector`; the others are only grabbed. A cut is seen at the
    first analysed frame after it and placed midway since the previous one, so shot starts are
    within ``analysis_stride // 2`` frames of the truth; samples are analysed frames. Where
    frames are so far apart that a shot of ``min_shot_s`` would get fewer than
    ``ANALYSED_PER_SHOT`` analysed frames (a time-lapse or a camera at 1-20 fps), fewer are
    skipped (:meth:`stride`): the stride is the most, not a fixed step in time.
    Full frames are held only for the detector's lookahead (a few analysed frames) and for the
    candidates of the segment in progress, so memory stays flat however long the video.

    Each shot is split into segments of ``fallback_interval_s`` from its start; each segment
    yields one frame (reason ``scene_cut`` for the first, ``fallback`` for the others), chosen
    by ``pick``: ``first`` its first frame, ``first_settled`` its first frame without motion
    (or the steadiest of its first second), ``middle`` the frame nearest its middle. Blank
    frames (black, flat colour) and frames inside a dissolve or fade are not chosen.

    Args:
        pick: ``first``, ``first_settled`` or ``middle``.
        threshold: Smallest change (0-255, motion-tolerant mean over Y, Cr, Cb) that a cut or
            a transition must make; lower finds subtler cuts and more false ones.
        min_shot_s: A boundary closer than this to the previous one is ignored.
        fallback_interval_s: Segment length within a shot; ``None`` for one frame per shot.
        analysis_width: Width in pixels of the frames the detector compares.
        analysis_stride: Analyse every this many frames at most.
        dedup: Near-duplicate suppression across the whole video; ``None`` for none.

    Raises:
        ConfigError: A value is out of range.
    """

    pick: str
    threshold: float
    min_shot_s: float
    fallback_interval_s: float | None
    analysis_width: int
    analysis_stride: int
    dedup: Dedup | None

    def __post_init__(self) -> None:
        if self.pick not in PICKS:
            raise ConfigError(f"sampler.pick must be one of {', '.join(PICKS)}, got {self.pick!r}")
        check_ranges(_SCENE_RANGES, lambda key: getattr(self, key.removeprefix("sampler.")))

    def sample(self, reader: VideoReader) -> Iterator[Sample]:
        """Yield one sample per shot and fallback interval, in stream order."""
        return _deduplicated(self._shot_samples(reader), self.dedup)

    def _shot_samples(self, reader: VideoReader) -> Iterator[Sample]:
        picker = _ShotPicker(self._new_pick, self.fallback_interval_s)
        for analysed, frame in self.analyse(reader):
            yield from picker.offer(analysed, frame)
        yield from picker.finish()

    def stride(self, fps: float) -> int:
        """Frames from one analysed frame to the next in a video of ``fps`` frames a second:
        ``analysis_stride``, or fewer where a shot of ``min_shot_s`` would get under
        ``ANALYSED_PER_SHOT`` analysed frames (1 below 9 fps with the defaults); as set where
        the container tells no frame rate."""
        if fps <= 0:
            return self.analysis_stride
        return max(1, min(self.analysis_stride, math.floor(fps * self.min_shot_s / ANALYSED_PER_SHOT + 0.5)))

    def analyse(self, reader: VideoReader) -> Iterator[tuple[AnalysedFrame, BgrFrame | None]]:
        """Every analysed frame with the detector's verdict on it, in order, and its full frame
        (``None`` for blank frames other than the first, which are never chosen)."""
        detector = ShotDetector(self.threshold, self.min_shot_s)
        stride = self.stride(reader.info.fps)
        # Full frames the detector has not released yet: its lookahead, a few analysed frames.
        held: dict[int, BgrFrame] = {}
        # A cut seen at an analysed frame happened since the previous one: placing it midway
        # keeps it within stride // 2 frames of the truth.
        recent: deque[FrameTime] = deque(maxlen=(stride + 1) // 2)
        for position in reader:
            recent.append(position)
            if position.index % stride:
                continue
            frame = reader.retrieve_bgr()
            features = Features.of(shrink(frame.bgr, self.analysis_width))
            if not features.blank or position.index == 0:
                held[frame.index] = frame
            for analysed in detector.push(position, features, cut_at=recent[0]):
                yield analysed, held.pop(analysed.index, None)
        for analysed in detector.finish():
            yield analysed, held.pop(analysed.index, None)

    def _new_pick(self) -> _Pick:
        if self.pick == "first":
            return _FirstPick()
        if self.pick == "middle":
            return _MiddlePick()
        return _SettledPick(SETTLED_FRACTION * self.threshold)
