"""Shot-boundary detection on small analysis frames.

The scene sampler analyses a thinned stream (every ``analysis_stride``-th frame, shrunk to
``analysis_width`` pixels) and :class:`ShotDetector` tells it, a few analysed frames late,
where shots start: hard cuts and gradual transitions (dissolves, fades through black).

Frames are compared in YCrCb (luma plus chroma, one cheap conversion) with a motion-tolerant
difference: each pixel is compared with the min-max range of its 3x3 neighbourhood in the
other frame, so content that moves by up to one pixel of the small frame (about 1.5 % of the
picture width per analysed step) costs nothing, while a new picture differs almost everywhere.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.decode import FrameTime

# A hard cut must stand out this much against the mean change of the NEIGHBOURS analysed
# frames on either side (as in PySceneDetect's AdaptiveDetector), after camera motion of up
# to MOTION_RADIUS small-frame pixels (~6 % of the width per analysed step) is undone.
CUT_RATIO = 3.0
NEIGHBOURS = 2
MOTION_RADIUS = 4
# Gradual transitions are judged over HALF_WINDOW analysed frames either side of their centre
# (16 frames in all at the default stride of 4).
HALF_WINDOW = 2
# In some frame inside a dissolve, at least MIXED_SHARE of the pixels that change by
# MIX_MIN_SPAN or more (0-255) sit part-way (MIX_RANGE of the way) between the two pictures;
# an object moving in shows each pixel as one picture or the other.
MIX_MIN_SPAN = 24
MIX_RANGE = (0.15, 0.85)
MIXED_SHARE = 0.75
# Across a transition the steps, with camera motion compensated, must add up to at least this
# share of the change between its ends; in a pan, motion explains the steps.
STEP_SHARE = 0.5
# Mean difference of contrast-normalised luma (0 alike, ~1 unrelated) below which two frames
# show the same picture at another brightness: a fade within a shot, not a new shot.
SAME_PICTURE = 0.25
# Luma standard deviation (0-255) under which a frame shows nothing: black, white, flat colour.
BLANK_STD = 3.0

_KERNEL = np.ones((3, 3), np.uint8)


def shrink(image: np.ndarray, width: int) -> np.ndarray:
    """Downscale an image to ``width`` pixels wide, keeping its aspect ratio.

    Args:
        image: An ``HxWx3`` uint8 image.
        width: Target width; an image that is not wider is returned as is.

    Returns:
        The area-averaged small image.
    """
    height, full_width = image.shape[:2]
    if full_width <= width:
        return image
    small_height = max(1, round(height * width / full_width))
    if full_width > 2 * width:
        # INTER_AREA straight from full size costs more than decoding the frame at large
        # factors; a bilinear step to twice the target first is ~20x cheaper and the final
        # area average still smooths every pixel over 2x2 samples.
        image = cv2.resize(image, (2 * width, 2 * small_height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, small_height), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Features:
    """What the detector keeps of one analysed frame.

    Attributes:
        pixels: The small frame in YCrCb.
        low: Per-pixel minimum over its 3x3 neighbourhood.
        high: Per-pixel maximum over its 3x3 neighbourhood.
        blank: The frame shows nothing (its luma is nearly flat).
    """

    pixels: np.ndarray
    low: np.ndarray
    high: np.ndarray
    blank: bool

    @classmethod
    def of(cls, small_bgr: np.ndarray) -> Features:
        """Features of a small BGR frame."""
        pixels = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2YCrCb)
        blank = float(cv2.meanStdDev(pixels)[1][0, 0]) < BLANK_STD
        return cls(pixels, cv2.erode(pixels, _KERNEL), cv2.dilate(pixels, _KERNEL), blank)

    def crop(self, rows: slice, cols: slice) -> Features:
        """The same features over a part of the frame."""
        return Features(self.pixels[rows, cols], self.low[rows, cols], self.high[rows, cols], self.blank)


def difference(a: Features, b: Features) -> float:
    """Motion-tolerant mean difference of two frames: 0 (alike) to 255, averaged over Y, Cr, Cb.

    A pixel costs how far it lies outside the range of the other frame's 3x3 neighbourhood,
    both ways round.
    """
    ahead = cv2.max(cv2.subtract(a.pixels, b.high), cv2.subtract(b.low, a.pixels))
    behind = cv2.max(cv2.subtract(b.pixels, a.high), cv2.subtract(a.low, b.pixels))
    return (sum(cv2.mean(ahead)[:3]) + sum(cv2.mean(behind)[:3])) / 6.0


def compensated_difference(a: Features, b: Features, radius: int = MOTION_RADIUS) -> float:
    """:func:`difference` after undoing the global shift of up to ``radius`` pixels that fits best.

    The shift is found by matching the middle of ``a``'s luma against ``b``'s (one template
    match, about ten plain differences' worth), so it is kept for frames that changed a lot.
    """
    height, width = a.pixels.shape[:2]
    if height <= 2 * radius or width <= 2 * radius:
        return difference(a, b)
    template = np.ascontiguousarray(a.pixels[radius : height - radius, radius : width - radius, 0])
    costs = cv2.matchTemplate(np.ascontiguousarray(b.pixels[:, :, 0]), template, cv2.TM_SQDIFF)
    _, _, (x, y), _ = cv2.minMaxLoc(costs)
    rows_a, rows_b = _overlap(y - radius, height)
    cols_a, cols_b = _overlap(x - radius, width)
    return min(difference(a, b), difference(a.crop(rows_a, cols_a), b.crop(rows_b, cols_b)))


def _overlap(shift: int, length: int) -> tuple[slice, slice]:
    """Slices of two sequences of ``length`` that line up when the second is the first moved by ``shift``."""
    return slice(max(-shift, 0), length - max(shift, 0)), slice(max(shift, 0), length - max(-shift, 0))


def mixed_share(start: Features, middle: Features, end: Features) -> float:
    """Share of the pixels that differ clearly between ``start`` and ``end`` that ``middle``
    shows part-way between the two, as a dissolve or a fade does.

    An object moving in, or a picture sliding past, shows each pixel either as before or as
    after instead, so its share stays low.
    """
    first = start.pixels.astype(np.int16)
    span = end.pixels.astype(np.int16) - first
    changed = np.abs(span) >= MIX_MIN_SPAN
    if not changed.any():
        return 0.0
    part = (middle.pixels.astype(np.int16) - first)[changed] / span[changed]
    return float(((part > MIX_RANGE[0]) & (part < MIX_RANGE[1])).mean())


def picture_difference(a: Features, b: Features) -> float:
    """Mean difference of the two lumas after each is normalised to zero mean and unit contrast."""
    lumas = [f.pixels[:, :, 0].astype(np.float32) for f in (a, b)]
    normalised = [(y - y.mean()) / max(float(y.std()), 1.0) for y in lumas]
    return float(np.abs(normalised[0] - normalised[1]).mean())


@dataclass(frozen=True)
class AnalysedFrame:
    """An analysed frame with everything the detector has concluded about it.

    Attributes:
        index: Decode-order index.
        timestamp_s: Presentation time in seconds.
        change: Difference to the previous non-blank analysed frame (0 where there is none).
        blank: The frame shows nothing (black, white, a flat colour).
        in_transition: The frame lies inside a dissolve or fade, a mix of two pictures.
        shot_start: Where the shot that this frame opens starts, or ``None`` if it opens none.
            The first frame opens shot 0; a hard cut happened somewhere since the previous
            analysed frame, so it is placed at the ``cut_at`` frame given to
            :meth:`ShotDetector.push`.
    """

    index: int
    timestamp_s: float
    change: float
    blank: bool
    in_transition: bool
    shot_start: FrameTime | None


class _Entry:
    __slots__ = (
        "position", "cut_at", "features", "order", "previous", "change", "compensated", "across",
        "cut", "shot_start", "in_transition", "after_blank",
    )

    def __init__(self, position: FrameTime, cut_at: FrameTime, features: Features) -> None:
        self.position = position
        self.cut_at = cut_at
        self.features = features
        self.order = -1  # position among the non-blank frames, which are compared
        self.previous: Features | None = None  # the non-blank frame before
        self.change: float | None = None  # to the previous non-blank frame
        self.compensated: float | None = None  # change once camera motion is compensated
        self.across: float | None = None  # between the frames HALF_WINDOW before and after
        self.cut = False
        self.shot_start: FrameTime | None = None
        self.in_transition = False
        self.after_blank = False  # blank frames came between this frame and the previous one

    def final(self) -> AnalysedFrame:
        return AnalysedFrame(
            self.position.index,
            self.position.timestamp_s,
            change=self.change or 0.0,
            blank=False,
            in_transition=self.in_transition,
            shot_start=self.shot_start,
        )


class ShotDetector:
    """Streaming shot-boundary detector over analysed frames.

    Feed frames in stream order with :meth:`push`; each call returns the frames that are now
    final, which trail the newest frame by :attr:`LOOKAHEAD` non-blank analysed frames;
    :meth:`finish` returns the rest. The first frame always starts a shot.

    Blank frames (black, flat colour) are passed through but never compared, so a cut to black
    and back, or a fade out and in, is judged by the pictures on either side of the blank.

    A hard cut is a single step whose change reaches ``threshold`` and, with camera motion
    compensated, stands out ``CUT_RATIO`` times against its neighbours, to a picture that
    stays (a flash comes back to the picture before it). A gradual transition is a window whose
    ends differ by ``threshold`` in another picture (not just another brightness), with no
    hard cut inside, whose steps account for the change (not a pan), and with a frame between
    its ends that mixes them pixel by pixel (not an object moving in), or that passes through
    blank frames (a fade through black). Its shot starts at the first frame closer to the new
    end than to the old; the frames between the ends are marked ``in_transition``.

    Args:
        threshold: Smallest change (0-255) across a boundary.
        min_shot_s: A boundary closer than this to an accepted one is ignored.
    """

    LOOKAHEAD = 2 * HALF_WINDOW + 2

    def __init__(self, threshold: float, min_shot_s: float) -> None:
        self.threshold = threshold
        self.min_shot_s = min_shot_s
        # Every frame not released yet, in order; blank ones are final when they arrive.
        self._queue: deque[_Entry | AnalysedFrame] = deque()
        self._window: list[_Entry] = []  # the latest non-blank frames, as far back as decisions look
        self._compared = 0
        self._last_boundary_s = -math.inf
        self._blank_gap = False

    def push(self, position: FrameTime, features: Features, cut_at: FrameTime | None = None) -> list[AnalysedFrame]:
        """Add the next analysed frame.

        Args:
            position: Its index and time.
            features: Its :class:`Features`.
            cut_at: Where to place a hard cut found at this frame (which happened somewhere
                after the previous analysed frame); by default at this frame.

        Returns:
            The frames that became final, oldest first.
        """
        first = self._last_boundary_s == -math.inf
        if first:
            self._last_boundary_s = position.timestamp_s
        if features.blank:
            # Final at once, and holding no pixels keeps a long black stretch cheap.
            frame = AnalysedFrame(
                position.index, position.timestamp_s, change=0.0, blank=True, in_transition=False,
                shot_start=position if first else None,
            )
            self._queue.append(frame)
            self._blank_gap = True
            return self._release()
        entry = _Entry(position, cut_at or position, features)
        entry.shot_start = position if first else None
        self._queue.append(entry)
        self._compare(entry)
        newest = len(self._window) - 1
        self._decide_cut(newest - NEIGHBOURS)
        self._decide_gradual(newest - NEIGHBOURS - HALF_WINDOW)
        return self._release()

    def finish(self) -> list[AnalysedFrame]:
        """Decide the last frames with the neighbours there are; return every frame left."""
        last = len(self._window) - 1
        for position in range(max(last - NEIGHBOURS + 1, 0), last + 1):
            self._decide_cut(position)
        return self._release(everything=True)

    def _compare(self, entry: _Entry) -> None:
        window = self._window
        entry.order = self._compared
        self._compared += 1
        if window:
            entry.previous = window[-1].features
            entry.change = difference(entry.features, entry.previous)
            entry.after_blank = self._blank_gap
        self._blank_gap = False
        window.append(entry)
        if len(window) > 2 * HALF_WINDOW:
            window[-1 - HALF_WINDOW].across = difference(window[-1 - 2 * HALF_WINDOW].features, entry.features)
        del window[: -self.LOOKAHEAD - 1]

    def _motion_free_change(self, entry: _Entry) -> float:
        """The entry's change, with camera motion compensated where the change is large."""
        if entry.change is None or entry.change < self.threshold / 2:
            return entry.change or 0.0
        if entry.compensated is None and entry.previous is not None:
            entry.compensated = compensated_difference(entry.features, entry.previous)
        return entry.compensated or 0.0

    def _decide_cut(self, position: int) -> None:
        window = self._window
        if position < 1:
            return
        entry = window[position]
        if entry.change is None or entry.change < self.threshold:
            return
        change = self._motion_free_change(entry)
        if change < self.threshold:
            return
        neighbours = [
            self._motion_free_change(e)
            for e in window[max(position - NEIGHBOURS, 0) : position + NEIGHBOURS + 1]
            if e is not entry and e.change is not None and not e.cut
        ]
        if neighbours and change < CUT_RATIO * sum(neighbours) / len(neighbours):
            return
        # A flash (a frame or two of another picture) makes two big steps; neither is a cut,
        # since the picture after the excursion is the one before it.
        for before, after in ((position - 1, position + 1), (position - 2, position)):
            known = before >= 0 and after < len(window)
            if known and difference(window[after].features, window[before].features) < self.threshold:
                return
        entry.cut = True
        self._accept(entry, entry.cut_at)

    def _decide_gradual(self, centre: int) -> None:
        window = self._window
        start, end = centre - HALF_WINDOW, centre + HALF_WINDOW
        if start < 0 or end + 1 >= len(window):
            return
        across = window[centre].across
        if across is None or across < self.threshold:
            return
        before, after = window[centre - 1].across, window[centre + 1].across
        if (before is not None and before >= across) or (after is not None and after > across):
            return
        inside = window[start + 1 : end + 1]
        if any(e.cut or e.in_transition for e in inside):
            return
        first, last = window[start].features, window[end].features
        if sum(self._motion_free_change(e) for e in inside) < STEP_SHARE * across:
            return
        if picture_difference(first, last) < SAME_PICTURE:
            return
        fade = any(e.after_blank for e in inside)
        if not fade and max(mixed_share(first, e.features, last) for e in inside[:-1]) < MIXED_SHARE:
            return
        for e in inside[:-1]:
            e.in_transition = True
        # A window that starts inside a transition continues it (the fade in after a fade out).
        if not window[start].in_transition:
            middle = next(e for e in inside if difference(e.features, first) >= difference(e.features, last))
            self._accept(middle, middle.position)

    def _accept(self, entry: _Entry, start: FrameTime) -> None:
        if abs(start.timestamp_s - self._last_boundary_s) >= self.min_shot_s:
            entry.shot_start = start
            self._last_boundary_s = max(start.timestamp_s, self._last_boundary_s)

    def _release(self, everything: bool = False) -> list[AnalysedFrame]:
        settled_before = math.inf if everything else self._compared - self.LOOKAHEAD
        done = []
        while self._queue:
            oldest = self._queue[0]
            if isinstance(oldest, _Entry):
                if oldest.order >= settled_before:
                    break
                oldest = oldest.final()
            done.append(oldest)
            self._queue.popleft()
        return done
