"""Decode stage: read a video sequentially with OpenCV and hand on frames with exact times.

Every frame gets its index in decode order and its presentation time in seconds, read from
the container (``CAP_PROP_POS_MSEC``). Where a container reports no time (some AVI files
report 0 for every frame) the time falls back to ``index / fps`` with the real, fractional
frame rate.

OpenCV takes a file name as UTF-8 only (a name with other bytes crashes it): such a file is
opened through a link with an ASCII name (:func:`_native_name`).
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# FFmpeg's own lines ("moov atom not found") would go bare to stderr, through a progress bar and
# past the log; the error record says what the file is and what FFmpeg said (pipeline.probe).
# OpenCV reads this when it first opens a file; a user's own setting is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2
import numpy as np

from pipeline.paths import kind_of, printable
from pipeline.probe import ffmpeg_says, why_unreadable
from pipeline.words import plural


class VideoError(Exception):
    """A video that cannot be opened or decoded; the message names the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (``fourcc``: the codec's FourCC as OpenCV reports
    it, e.g. ``avc1``, ``FMP4``, ``VP80``; "" when unknown). ``frame_count`` and ``duration_s``
    are its announcement, not a promise: see :meth:`VideoReader.check_complete`."""

    path: str
    fps: float
    frame_count: int
    duration_s: float
    width: int
    height: int
    fourcc: str = ""


@dataclass(frozen=True)
class VideoFacts:
    """A video as seen by one decode, for the ``_videos.parquet`` table.

    Attributes:
        size_bytes: The file's size.
        duration_s: As decoded (the last frame's time plus one frame) when the video was read to
            its end, else the container's estimate (``frame_count / fps``).
        fps: The container's frame rate (0.0 when it reports none).
        width, height: Frame size in pixels.
        codec: The codec's common name (``h264``, ``mpeg4``, ``vp8``, ...; see
            :func:`codec_name`), or "" when unknown.
        fourcc: Its FourCC as OpenCV reports it ("" when unknown).
        frame_count: The container's frame count (an estimate for some formats).
        frames_decoded: Frames decoded, counted when the video was read to its end; ``None``
            when decoding stopped early (``max_frames``, an error).
        last_frame_s: Presentation time of the last frame decoded (``None``: no frame).
    """

    size_bytes: int
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    fourcc: str
    frame_count: int
    frames_decoded: int | None
    last_frame_s: float | None


@dataclass(frozen=True)
class DamagedSpan:
    """Frames that did not decode mid-stream, where frames after them did: the frames from
    ``first_index`` (its time ``first_s``, the frame after the last one that decoded) up to,
    not including, ``next_index`` (``next_s``), the first to decode again."""

    first_index: int
    first_s: float
    next_index: int
    next_s: float


@dataclass(frozen=True)
class FrameTime:
    """Where a frame sits in the stream: decode-order index and presentation time."""

    index: int
    timestamp_s: float


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its place in the stream and its pixels as an RGB ``HxWx3`` uint8 array."""

    index: int
    timestamp_s: float
    rgb: np.ndarray


@dataclass(frozen=True)
class BgrFrame:
    """A decoded frame still in OpenCV's BGR channel order, as :meth:`VideoReader.retrieve_bgr`
    returns it: for analysis that shrinks frames and keeps few, so only kept ones pay the
    RGB conversion (:meth:`to_frame`)."""

    index: int
    timestamp_s: float
    bgr: np.ndarray

    def to_frame(self) -> Frame:
        """The same frame with RGB pixels."""
        return Frame(self.index, self.timestamp_s, cv2.cvtColor(self.bgr, cv2.COLOR_BGR2RGB))


class VideoReader:
    """Sequential reader that grabs every frame but decodes pixels only on request.

    Iterating yields a :class:`FrameTime` per frame after a cheap ``grab()``; a sampler that
    wants the pixels of the current frame calls :meth:`retrieve`. This keeps frames that no
    sampler looks at out of the colour conversion and copying.

    Args:
        path: The video file.

    Raises:
        VideoError: The file is missing, is not a video, or has no video stream.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = printable(self.path)
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise VideoError(f"vanished or missing: {self.name}") from None
        except OSError as error:
            raise VideoError(f"cannot read {self.name}: {error.strerror or error}") from None
        if stat.S_ISDIR(info.st_mode):
            raise VideoError(f"is a directory, not a video: {self.name}")
        if not stat.S_ISREG(info.st_mode):
            raise VideoError(f"{kind_of(info.st_mode)}, not a video: {self.name}")
        if info.st_size == 0:
            raise VideoError(f"empty file (0 bytes): {self.name}")
        native_name, self._link_folder = _native_name(self.path)
        self._capture = cv2.VideoCapture(native_name)
        if not self._capture.isOpened():
            said = ffmpeg_says(native_name)
            self.close()
            try:
                why = why_unreadable(self.path)
            except OSError as error:
                why = f"cannot be read: {error.strerror or error}"
            if said:
                why += f"; FFmpeg said: {'; '.join(said)}"
            raise VideoError(f"not a readable video ({why}): {self.name}")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frame_count = max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if width <= 0 or height <= 0:
            self.close()
            raise VideoError(f"no video stream: {self.name}")
        fps = fps if math.isfinite(fps) and fps > 0 else 0.0
        self.info = VideoInfo(
            path=self.name,
            fps=fps,
            frame_count=frame_count,
            duration_s=frame_count / fps if fps else 0.0,
            width=width,
            height=height,
            fourcc=_fourcc(self._capture.get(cv2.CAP_PROP_FOURCC)),
        )
        self._current: FrameTime | None = None
        self.frames_read = 0
        self.last_frame_s: float | None = None
        self.reached_end = False
        self.damaged: list[DamagedSpan] = []

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (and the link it opened the file through)."""
        self._capture.release()
        if self._link_folder is not None:
            self._link_folder.cleanup()

    def __iter__(self) -> Iterator[FrameTime]:
        index = 0
        last_s = -1.0
        while True:
            if self._capture.grab():
                timestamp_s = self._presentation_time_s(index, last_s)
            else:
                failed = self._grab_past_failure(index)
                if failed is None:
                    break
                index, timestamp_s = self._resume_after(index, last_s, failed)
            self._current = FrameTime(index, timestamp_s)
            self.last_frame_s = timestamp_s
            yield self._current
            last_s = timestamp_s
            index += 1
            self.frames_read += 1
        self._current = None
        self.reached_end = True

    def _grab_past_failure(self, index: int) -> int | None:
        """After a ``grab()`` that failed with frame ``index``: grab on, and return how many
        grabs failed before one gave a frame (the failure was mid-stream: damage), or ``None``
        where none does (the stream ended there).

        Each failed grab takes at least one packet off the stream, so the frames the container
        still announces (a few more, for a count estimated short) bound the attempts; at the
        end of a stream a grab fails at once (tens of microseconds).
        """
        attempts = min(max(self.info.frame_count - index, 0) + _GRABS_PAST_ANNOUNCED, _MOST_GRABS_PAST_FAILURE)
        for failed in range(1, attempts + 1):
            if self._capture.grab():
                return failed
        return None

    def _resume_after(self, index: int, last_s: float, failed: int) -> tuple[int, float]:
        """The index and time of the frame that decoded after ``failed`` grabs failed from
        frame ``index`` on; the frames between are a :class:`DamagedSpan`. The index is where
        the frame sits in the stream: from its time where the container gives one, else one
        frame lost per failed grab (each took at least one packet)."""
        position_ms = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        position_s = position_ms / 1000.0 if math.isfinite(position_ms) else -1.0
        resumed = index + failed
        if self.info.fps and position_s > max(last_s, 0.0):
            if last_s < 0:
                resumed = max(index + 1, round(position_s * self.info.fps))
            else:
                resumed = max(index + 1, index - 1 + round((position_s - last_s) * self.info.fps))
        timestamp_s = self._presentation_time_s(resumed, last_s)
        first_s = last_s + 1.0 / self.info.fps if last_s >= 0 and self.info.fps else max(last_s, 0.0)
        self.damaged.append(DamagedSpan(index, min(first_s, timestamp_s), resumed, timestamp_s))
        return resumed, timestamp_s

    def retrieve(self) -> Frame:
        """Decode the pixels of the frame the iterator stands on.

        Raises:
            VideoError: The frame's pixels cannot be decoded, or no frame is current.
        """
        return self.retrieve_bgr().to_frame()

    def retrieve_bgr(self) -> BgrFrame:
        """Decode the pixels of the frame the iterator stands on, without the RGB conversion.

        Raises:
            VideoError: The frame's pixels cannot be decoded, or no frame is current.
        """
        if self._current is None:
            raise VideoError(f"no current frame to retrieve: {self.name}")
        ok, bgr = self._capture.retrieve()
        if not ok or bgr is None:
            raise VideoError(f"frame {self._current.index} failed to decode: {self.name}")
        return BgrFrame(self._current.index, self._current.timestamp_s, bgr)

    def check_complete(self) -> None:
        """After reading to the end: fail if not one frame decoded, or if frames failed to
        decode mid-stream (:attr:`damaged`; the frames after them were read all the same).

        A stream ends where decoding ends: a ``grab()`` that fails, and after which none gives
        a frame again. The frame count a container announces is no measure of that end: an MP4
        cut with an edit list counts the frames it hides (at its start or end), for a stream
        with a timestamp jump the count is estimated from the jump, and an MPEG-TS or a short
        WMV overstates it. A failed grab after which frames decode again is damage: that is
        told apart from an end by grabbing on (:meth:`_grab_past_failure`).

        Raises:
            VideoError: No frame decoded, or frames in the middle of the stream did not.
        """
        if self.frames_read == 0:
            raise VideoError(f"no frame decodes (truncated or corrupt): {self.name}")
        if self.damaged:
            raise VideoError(f"{damage_reason(self.damaged, self.info)}: {self.name}")

    def facts(self) -> VideoFacts:
        """What is known of the video after this reader's decode (see :class:`VideoFacts`)."""
        info = self.info
        complete = self.reached_end and self.frames_read > 0
        duration_s = info.duration_s
        if complete and self.last_frame_s is not None:
            duration_s = self.last_frame_s + (1.0 / info.fps if info.fps else 0.0)
        try:
            size_bytes = self.path.stat().st_size
        except OSError:
            size_bytes = 0
        return VideoFacts(
            size_bytes=size_bytes,
            duration_s=duration_s,
            fps=info.fps,
            width=info.width,
            height=info.height,
            codec=codec_name(info.fourcc),
            fourcc=info.fourcc,
            frame_count=info.frame_count,
            frames_decoded=self.frames_read if complete else None,
            last_frame_s=self.last_frame_s,
        )

    def frames(self) -> Iterator[Frame]:
        """Every frame with its pixels, in decode order."""
        for _ in self:
            yield self.retrieve()

    def _presentation_time_s(self, index: int, last_s: float) -> float:
        position_ms = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        reported = math.isfinite(position_ms) and (position_ms > 0 or index == 0)
        if reported and position_ms / 1000.0 > last_s:
            return position_ms / 1000.0
        if self.info.fps:
            return max(index / self.info.fps, last_s + 1e-6) if index else 0.0
        raise VideoError(f"frame {index} has no timestamp and the video no frame rate: {self.name}")


# Grabs tried past the frames a container announces, for a count estimated a little short (an
# MPEG program stream written by OpenCV decodes up to 5 frames more than it announces), and a
# ceiling for a count that is no count at all.
_GRABS_PAST_ANNOUNCED = 16
_MOST_GRABS_PAST_FAILURE = 100_000


def damage_reason(damaged: list[DamagedSpan], info: VideoInfo) -> str:
    """Why a video whose frames failed to decode mid-stream fails, and what to do: where the
    damage is (frames and times, of the container's count and duration) and that the frames
    around it were captioned.

    Measured with OpenCV 5.1 (libavformat 63): 5 KB to 150 KB of random bytes written over the
    middle of an MP4/MOV (mp4v) file make ``grab()`` fail once per damaged frame and then
    decode on; in AVI, Matroska, WebM and FLV the same damage is skipped inside one
    ``grab()`` and never seen here.
    """
    lost = sum(span.next_index - span.first_index for span in damaged)
    first = damaged[0]
    of = f" of {info.frame_count}" if info.frame_count else ""
    of_s = f" of {info.duration_s:.1f} s" if info.duration_s else ""
    where = (
        f"frame {first.first_index}{of} ({first.first_s:.1f} s{of_s})"
        if first.next_index - first.first_index == 1
        else f"frames {first.first_index} to {first.next_index - 1}{of} "
        f"({first.first_s:.1f} s to {first.next_s:.1f} s{of_s})"
    )
    more = f", and {len(damaged) - 1} more place{'s' if len(damaged) > 2 else ''} after it" if len(damaged) > 1 else ""
    return (
        f"{plural(lost, 'frame')} {'does' if lost == 1 else 'do'} not decode, {where}{more}: the file is "
        "damaged there; the frames before and after are captioned. Replace it with a sound copy (a night "
        "captions that afresh); retry_failed=true only decodes this one again"
    )


def _native_name(path: Path) -> tuple[str, tempfile.TemporaryDirectory[str] | None]:
    """The name OpenCV is given for ``path``, and the temporary folder to remove after.

    The name is absolute. OpenCV converts a name to UTF-8 and crashes (a segfault, the whole
    night lost) on one that is not (a Latin-1 name such as ``caf\xe9.mp4``, which Python keeps
    as surrogate escapes). Such a file is opened through a symlink with an ASCII name (its
    suffix kept, for the container's probe) in a folder of its own.
    """
    # Absolute: FFmpeg reads a relative "file:x.mp4" or "pipe:0.mp4" as a protocol and its
    # argument (another file, stdin), never a name that starts with "/". Not normalised
    # (os.path.abspath): "link/../x.mp4" is where the link's target's parent has it, as the
    # content id read it, not "x.mp4" here.
    absolute = path.absolute()
    name = str(absolute)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return name, None
    folder = tempfile.TemporaryDirectory(prefix="video-caption-")
    suffix = path.suffix if path.suffix.isascii() and path.suffix.isprintable() else ""
    link = Path(folder.name) / f"video{suffix}"
    os.symlink(os.fsencode(absolute), link)
    return str(link), folder


_CODEC_NAMES = {
    "h264": ("avc1", "avc3", "h264", "x264", "davc"),
    "hevc": ("hvc1", "hev1", "hevc", "h265", "x265"),
    "mpeg4": ("fmp4", "mp4v", "xvid", "divx", "dx50", "mp42", "mp43", "3iv2"),
    "mpeg2video": ("mpg2", "mp2v"),
    "mpeg1video": ("mpg1",),
    "vp8": ("vp80",),
    "vp9": ("vp90", "vp09"),
    "av1": ("av01",),
    "mjpeg": ("mjpg", "jpeg", "avrn"),
    "theora": ("theo",),
    "prores": ("apcn", "apch", "apcs", "apco", "ap4h"),
}
_CODEC_OF_FOURCC = {fourcc: name for name, codes in _CODEC_NAMES.items() for fourcc in codes}


def codec_name(fourcc: str) -> str:
    """The common name of the codec with this FourCC (``FMP4`` → ``mpeg4``, ``avc1`` →
    ``h264``); an unknown FourCC is returned lower-cased, "" stays ""."""
    key = fourcc.strip().lower()
    return _CODEC_OF_FOURCC.get(key, key)


def _fourcc(value: float | None) -> str:
    """OpenCV's ``CAP_PROP_FOURCC`` number as its four characters ("" when unknown)."""
    try:
        code = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return ""
    if code <= 0:
        return ""
    text = code.to_bytes(4, "little", signed=False).decode("latin-1") if code < 1 << 32 else ""
    return "".join(c for c in text if c.isprintable()).strip()


def format_timecode(timestamp_s: float, separator: str = ".") -> str:
    """Format seconds as ``HH:MM:SS.mmm`` (SubRip's ``HH:MM:SS,mmm`` with ``separator=","``)."""
    total_ms = int(round(timestamp_s * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"
