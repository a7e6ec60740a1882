"""A whole file damaged in the middle is no file that ended there: the frames after the damage
are decoded and captioned, and the video fails with where the damage is (docs/nightly.md, "Bad
files"). Healthy files of every container OpenCV writes stay done.

The damage is written by the test: 5,000 random bytes over the middle of ``data/sample.mp4``
(6 s, 150 frames at 25 fps), its size and its index (the moov box at the end) intact. OpenCV's
``grab()`` fails on the first damaged frame and, grabbed on, decodes again a few frames later;
the reader used to take that first failure for the end of the stream and call the video done
with 75 of its 150 frames.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.decode import VideoReader
from tests.conftest import SAMPLE_VIDEO, answers, last_run, run_cli, tinted, write_video

# Containers and codecs OpenCV writes here; each decodes to its last frame, its count exact.
HEALTHY = [("mp4", "mp4v"), ("mov", "mp4v"), ("avi", "MJPG"), ("avi", "XVID"), ("mkv", "XVID"), ("mkv", "MJPG")]
DAMAGE = re.compile(
    r"^(\d+) frames do not decode, frames (\d+) to (\d+) of 150 \(.* of 6\.0 s\): the file is damaged there"
)


def damaged_copy(target: Path, n_bytes: int = 5000, seed: int = 0) -> Path:
    """``data/sample.mp4`` with ``n_bytes`` random bytes written over its middle."""
    data = bytearray(SAMPLE_VIDEO.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n_bytes] = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return target


def test_frames_after_the_damage_are_read_at_their_place(tmp_path: Path) -> None:
    with VideoReader(damaged_copy(tmp_path / "damaged.mp4")) as reader:
        indices = [frame.index for frame in reader]
        (span,) = reader.damaged
        with pytest.raises(Exception, match="the file is damaged there") as failure:
            reader.check_complete()
    assert 0 < span.first_index < span.next_index < 150
    # Every frame but the damaged ones, each at its index in the stream (not one after the other).
    assert indices == [i for i in range(150) if not span.first_index <= i < span.next_index]
    assert span.first_s == pytest.approx(span.first_index / 25) and span.next_s == pytest.approx(span.next_index / 25)
    assert DAMAGE.match(str(failure.value))


@pytest.mark.parametrize(("suffix", "fourcc"), HEALTHY)
def test_a_healthy_file_decodes_to_its_end_without_damage(tmp_path: Path, suffix: str, fourcc: str) -> None:
    clip = write_video(tmp_path / f"clip.{suffix}", n_frames=151, fps=29.97, fourcc=fourcc)
    with VideoReader(clip) as reader:
        assert [frame.index for frame in reader] == list(range(151))
        reader.check_complete()
        assert reader.damaged == [] and reader.info.frame_count == 151


@pytest.mark.allow_error_logs
def test_a_damaged_video_fails_with_its_frames_after_the_damage_captioned(
    cli_base: list[str], tmp_path: Path
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    damaged_copy(videos / "damaged.mp4")
    for number, (suffix, fourcc) in enumerate(HEALTHY):
        write_video(videos / f"healthy{number}.{suffix}", n_frames=20, fourcc=fourcc, colour_of=tinted(30 * number))
    shutil.copy(Path(__file__).parent / "data" / "cut_edit_list.mp4", videos)  # counts 30 frames, 25 decode
    out = tmp_path / "out"
    args = [f"video={videos}", *cli_base, "max_frames=null"]

    first = run_cli(*args)
    assert first.returncode == 2, first.stderr  # some videos failed, the rest done
    summary = last_run(out)
    assert (summary["videos_done"], summary["videos_failed"]) == (len(HEALTHY) + 1, 1)
    df = pd.read_parquet(out)
    (record,) = df[df.frame_index.isna()].itertuples()
    assert Path(record.video_path).name == "damaged.mp4"
    match = DAMAGE.match(record.error)
    assert match, record.error
    lost, first_lost, last_lost = (int(group) for group in match.groups())
    assert lost == last_lost - first_lost + 1 and "retry_failed=true" in record.error
    # The frames after the damage are captioned at their place in the stream and time.
    damaged = answers(out)[lambda rows: rows.video_path.str.endswith("damaged.mp4")]
    times = sorted(damaged.timestamp_s)
    assert len(times) == 6 and times[-2:] == pytest.approx([4.0, 5.0]), times  # one a second, as if whole
    assert not damaged.frame_index.between(first_lost, last_lost).any()
    assert (damaged.timestamp_s == damaged.frame_index / 25).all()
    facts = pd.read_parquet(out / "_videos.parquet")
    facts = facts.set_index(facts.video_path.map(lambda p: Path(p).name))
    assert facts.loc["damaged.mp4", "frames_decoded"] == 150 - lost  # not 75 "to its end"
    assert facts.loc["damaged.mp4", "duration_s"] == pytest.approx(6.0)
    assert (facts.drop(index="damaged.mp4").frames_decoded > 0).all()
    assert len(list(out.glob("*/_done-*"))) == len(HEALTHY) + 1

    # The next night does not take it for done; retry_failed=true reaches it, and answers no
    # frame twice.
    answered = len(answers(out))
    later = run_cli(*args)
    assert later.returncode == 0 and "1 failed before" in later.stderr, later.stderr
    retried = run_cli(*args, "retry_failed=true")
    assert retried.returncode == 3, retried.stderr  # the night's only video failed again
    assert "0 frames" in retried.stderr  # its frames are all answered: none is asked again
    df = pd.read_parquet(out)
    assert len(df[df.frame_index.isna()]) == 1 and len(answers(out)) == answered
