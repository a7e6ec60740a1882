"""Per-video facts: ``output_dir/_videos.parquet`` (and :func:`pipeline.video_facts.read_videos`) has
one row per video with its duration, frame rate, size, codec and frames as decoded, so a
notebook can compute coverage without opening the videos."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.decode import VideoFacts, VideoReader, codec_name
from pipeline.inputs import video_id_of
from pipeline.video_facts import VIDEOS_SCHEMA, read_videos
from tests.conftest import SAMPLE_VIDEO, run_cli, write_video


@pytest.mark.parametrize(
    ("fourcc", "name"),
    [("FMP4", "mpeg4"), ("mp4v", "mpeg4"), ("avc1", "h264"), ("H264", "h264"), ("VP80", "vp8"),
     ("vp09", "vp9"), ("av01", "av1"), ("ABCD", "abcd"), ("", "")],
)
def test_codec_name(fourcc: str, name: str) -> None:
    assert codec_name(fourcc) == name


def test_a_reader_knows_the_facts_once_it_has_read_to_the_end() -> None:
    with VideoReader(SAMPLE_VIDEO) as reader:
        before = reader.facts()
        frames = sum(1 for _ in reader)
        after = reader.facts()

    assert (after.width, after.height, after.fps, after.codec) == (640, 360, 25.0, "mpeg4")
    assert before.frames_decoded is None and before.duration_s == pytest.approx(6.0)
    assert after.frames_decoded == frames == 150
    assert after.last_frame_s == pytest.approx(5.96)
    assert after.duration_s == pytest.approx(5.96 + 0.04)
    assert after.size_bytes == SAMPLE_VIDEO.stat().st_size


def test_videos_table_has_one_row_per_video_with_its_facts(cli_base: list[str], tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", n_frames=20, fps=10.0, size=(160, 90))
    write_video(videos / "b.mp4", n_frames=37, fps=12.5, size=(96, 64))
    (videos / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"

    done = run_cli(*cli_base, f"video={videos}", "sampler.interval_s=1.5")

    assert done.returncode == 2, done.stderr  # broken.mp4 failed
    table = pq.read_table(out / "_videos.parquet")
    assert table.schema.equals(VIDEOS_SCHEMA)
    facts = read_videos(out).set_index("video_path")
    assert sorted(facts.index) == [str(videos / "a.mp4"), str(videos / "b.mp4")]  # broken: no facts
    assert len(table) == 2
    a, b = facts.loc[str(videos / "a.mp4")], facts.loc[str(videos / "b.mp4")]
    assert a["video_id"] == video_id_of(videos / "a.mp4")
    assert (a["width"], a["height"], a["fps"], a["codec"]) == (160, 90, 10.0, "mpeg4")
    assert (a["frame_count"], a["frames_decoded"]) == (20, 20)
    assert a["duration_s"] == pytest.approx(2.0) and a["last_frame_s"] == pytest.approx(1.9)
    assert (b["width"], b["height"], b["frames_decoded"]) == (96, 64, 37)
    assert b["duration_s"] == pytest.approx(37 / 12.5)
    assert facts["frames_decoded"].dtype == "Int64"
    # The notebook's coverage question, answered from the two tables alone.
    rows = pd.read_parquet(out)
    sampled = rows[rows.status == "ok"].groupby("video_id")["frame_index"].nunique()
    assert sampled[a["video_id"]] == 2 and sampled[b["video_id"]] == 2  # t=0 and t=1.5 s


def test_a_capped_decode_keeps_the_facts_of_a_full_one(cli_base: list[str], tmp_path: Path) -> None:
    video = write_video(tmp_path / "a.mp4", n_frames=30, fps=10.0)
    out = tmp_path / "out"

    capped = run_cli(*cli_base, f"video={video}", "max_frames=1")
    assert capped.returncode == 0, capped.stderr
    first = read_videos(out).iloc[0]
    full = run_cli(*cli_base, f"video={video}")
    assert full.returncode == 0, full.stderr
    second = read_videos(out).iloc[0]
    again = run_cli(*cli_base, f"video={video}", "max_frames=2")
    assert again.returncode == 0, again.stderr
    third = read_videos(out).iloc[0]

    assert pd.isna(first["frames_decoded"]) and first["duration_s"] == pytest.approx(3.0)
    assert second["frames_decoded"] == 30 and second["duration_s"] == pytest.approx(3.0)
    assert third["frames_decoded"] == 30  # a capped decode knows less and does not replace it
    assert len(read_videos(out)) == 1


def test_read_videos_of_an_output_dir_without_facts_is_empty_with_the_columns(tmp_path: Path) -> None:
    facts = read_videos(tmp_path)

    assert facts.empty and list(facts.columns) == VIDEOS_SCHEMA.names


def test_the_table_has_a_column_for_every_fact() -> None:
    assert VIDEOS_SCHEMA.names[2:-1] == [f.name for f in fields(VideoFacts)]
