"""Decode stage: presentation times, metadata, RGB frames, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.decode import VideoError, VideoReader, format_timecode
from tests.conftest import write_video


def test_timestamps_follow_the_container(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n_frames=30, fps=29.97)
    with VideoReader(path) as reader:
        times = [f.timestamp_s for f in reader]
        assert reader.info.frame_count == 30
        assert reader.info.fps == pytest.approx(29.97, abs=0.01)
        assert (reader.info.width, reader.info.height) == (160, 90)
    expected = [i / 29.97 for i in range(30)]
    assert np.allclose(times, expected, atol=1e-3)


def test_avi_without_positions_falls_back_to_real_fps(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", n_frames=12, fps=12.5, fourcc="MJPG")
    with VideoReader(path) as reader:
        times = [f.timestamp_s for f in reader]
    assert np.allclose(times, [i / 12.5 for i in range(12)], atol=1e-3)
    assert times == sorted(times) and len(set(times)) == len(times)


def test_frames_are_rgb(tmp_path: Path) -> None:
    path = write_video(tmp_path / "red.mp4", n_frames=3, colour_of=lambda i: (0, 0, 255))
    with VideoReader(path) as reader:
        frame = next(reader.frames())
    assert frame.rgb.shape == (90, 160, 3) and frame.rgb.dtype == np.uint8
    red, green, blue = frame.rgb[5, 100]
    assert red > 200 and green < 60 and blue < 60


def test_missing_and_non_video_files(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="vanished or missing"):
        VideoReader(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="is a directory"):
        VideoReader(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty file"):
        VideoReader(tmp_path / "empty.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="not a readable video"):
        VideoReader(text)


def test_timecode() -> None:
    assert format_timecode(0) == "00:00:00.000"
    assert format_timecode(3725.0426) == "01:02:05.043"


def test_retrieve_only_what_is_asked(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n_frames=10)
    with VideoReader(path) as reader:
        picked = [reader.retrieve() for t in reader if t.index % 4 == 0]
    with VideoReader(path) as reader:
        every = list(reader.frames())
    assert [frame.index for frame in picked] == [0, 4, 8]
    # Frames only grabbed on the way do not shift the pixels of the ones retrieved.
    for frame in picked:
        assert np.array_equal(frame.rgb, every[frame.index].rgb)
