"""What a file that OpenCV cannot open as a video is, from its own bytes: a text file, an
audio file, an MP4 cut short, or nothing known (the error record says which, and so what to do);
and what FFmpeg itself said on opening it.

Only the container's outline is read (its first bytes, and an MP4's top-level boxes), never
the media: a probe of a 10 GB file reads a few kilobytes.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

_HEAD_BYTES = 4096
# First bytes of the audio-only formats people drop into a video folder, and their names.
_AUDIO_MAGIC = ((b"ID3", "MP3"), (b"\xff\xfb", "MP3"), (b"\xff\xf3", "MP3"), (b"\xff\xf2", "MP3"),
                (b"fLaC", "FLAC"), (b"#!AMR", "AMR"))


def why_unreadable(path: Path) -> str:
    """Why a file that exists and is not empty is no video that can be read, in words
    (``a text file``, ``an audio file, WAV: no video stream``, ...).

    Raises:
        OSError: The file cannot be read.
    """
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if head[4:8] == b"ftyp":
        return _iso_media(path)
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "an audio file, WAV: no video stream"
    for magic, name in _AUDIO_MAGIC:
        if head.startswith(magic):
            return f"an audio file, {name}: no video stream"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "a Matroska/WebM file, damaged, cut short or without a video stream"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "an AVI file, damaged or cut short"
    if _is_text(head):
        return "a text file"
    return "not a media file: no format FFmpeg recognises"


_FFMPEG_LINE = re.compile(r"^\[OPENCV:FFMPEG:\d+\]\s*(?:\[[^\]]* @ 0x[0-9a-f]+\]\s*)?(.*\S)\s*$")
_FFMPEG_TIMEOUT_S = 60.0
_FFMPEG_MOST = 3


def ffmpeg_says(name: str) -> list[str]:
    """FFmpeg's own error lines on opening ``name`` (``moov atom not found``), at most a few,
    each once. The run's process keeps FFmpeg quiet (its lines would go bare to the terminal,
    through the progress bar); a child process opens the file again with them on and hands
    them back, for the error record and the log. Empty where FFmpeg said nothing, or the child
    could not run."""
    env = {**os.environ, "OPENCV_FFMPEG_LOGLEVEL": "16", "OPENCV_LOG_LEVEL": "ERROR"}  # 16: AV_LOG_ERROR
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import sys, cv2; cv2.VideoCapture(sys.argv[1])", name],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=_FFMPEG_TIMEOUT_S,
        )  # OpenCV writes FFmpeg's lines to stdout
    except (OSError, subprocess.SubprocessError):
        return []
    said: list[str] = []
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        match = _FFMPEG_LINE.match(line)
        if match and match.group(1) not in said:
            said.append(match.group(1))
    return said[:_FFMPEG_MOST]


def _iso_media(path: Path) -> str:
    """An MP4/MOV (ISO media) file: cut short (a box runs past the end, or there is no
    ``moov`` index: a copy that did not finish), without tracks (a writer closed before any
    frame), audio only (no video track), or damaged."""
    boxes, cut_short = _top_level_boxes(path)
    if "moov" not in boxes or cut_short:
        return (
            "an MP4/MOV file cut short or damaged: its index, the moov box, is missing or incomplete, "
            "as when a copy did not finish"
        )
    with open(path, "rb") as handle:
        handle.seek(boxes["moov"][0])
        moov = handle.read(boxes["moov"][1])
    # A track's handler box: "hdlr", version and flags, a pre-defined field, then its type.
    if b"trak" not in moov:
        return "an MP4/MOV file with no tracks: a recording that stopped before its first frame"
    if not re.search(rb"hdlr.{8}vide", moov, re.DOTALL):
        return "an audio file, MP4/M4A: no video stream"
    return "an MP4/MOV file whose video is damaged or in a codec this build of FFmpeg lacks"


def _top_level_boxes(path: Path) -> tuple[dict[str, tuple[int, int]], bool]:
    """The top-level boxes of an ISO media file (type → offset, size) and whether one runs
    past the end of the file."""
    size = path.stat().st_size
    boxes: dict[str, tuple[int, int]] = {}
    offset = 0
    with open(path, "rb") as handle:
        while offset + 8 <= size:
            handle.seek(offset)
            box_size, kind = struct.unpack(">I4s", handle.read(8))
            if box_size == 1:
                (box_size,) = struct.unpack(">Q", handle.read(8))
            elif box_size == 0:  # to the end of the file
                box_size = size - offset
            if box_size < 8:
                return boxes, True
            boxes.setdefault(kind.decode("latin-1"), (offset, box_size))
            if offset + box_size > size:
                return boxes, True
            offset += box_size
    return boxes, False


def _is_text(head: bytes) -> bool:
    """UTF-8 text without NUL bytes (a character cut at the end of ``head`` allowed)."""
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start >= len(head) - 3
    return True
