"""``python -m pipeline.status``: the videos it lists as waiting come from the runs that are
current, the last ended run of each shard of the newest sharding, and none that a later run took:
after a move between sharded and unsharded nights, the older split's records no longer speak.
(Status as a whole: tests/test_status.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.inputs import in_shard
from tests.conftest import ROOT, cli_env, make_night, night_args, run_cli, write_video

AN_HOUR_AGO = time.time() - 3600


def night(videos: Path, out: Path, model_dir: Path, tmp: Path, *extra: str) -> None:
    """One tiny night over ``videos`` (a frame a video, short answers); ``extra`` sets
    ``min_age_s`` and the shard."""
    args = [a for a in night_args(videos, out, model_dir, tmp, max_tokens=4) if a != "min_age_s=0"]
    done = run_cli(*args, "max_frames=1", *extra)
    assert done.returncode == 0, done.stderr


def videos_part(out: Path) -> list[str]:
    """The Videos part of ``python -m pipeline.status output_dir=OUT``: its count line, then its
    lines about single videos."""
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline.status", f"output_dir={out}"], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Videos"))
    return lines[first:lines.index("", first)]


def waiting(lines: list[str]) -> dict[str, str]:
    """The waiting list of :func:`videos_part` (the last of its lists): path → why."""
    header = [i for i, line in enumerate(lines) if line.startswith("  waiting (")]
    entries = [line.strip().split(": ", 1) for line in lines[header[0] + 1:]] if header else []
    assert len({path for path, _ in entries}) == len(entries), f"a video listed twice: {lines}"
    return dict(entries)


def test_an_unsharded_night_after_sharded_ones_leaves_nothing_waiting(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The reproduction: both shards leave the fresh videos waiting, then an unsharded night
    captions them all; the shards' records no longer speak."""
    videos, out = make_night(tmp_path / "videos", n_videos=3, n_frames=2), tmp_path / "out"
    for shard in (0, 1):
        night(videos, out, tiny_model_dir, tmp_path, "min_age_s=600", "num_shards=2", f"shard={shard}")
    assert len(waiting(videos_part(out))) == 3  # as the shards left them
    night(videos, out, tiny_model_dir, tmp_path, "min_age_s=0")

    lines = videos_part(out)
    assert lines == ["Videos (under the last run's settings and prompts): 3 done, 0 failing, 0 waiting"], lines


def test_a_sharded_night_after_an_unsharded_one_lists_only_its_own_waiting(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The other way round: an unsharded night leaves all three waiting; then shard 0 of 2
    captions its videos and shard 1 leaves its own waiting. Waiting: shard 1's, once each."""
    videos, out = make_night(tmp_path / "videos", n_videos=3, n_frames=2), tmp_path / "out"
    night(videos, out, tiny_model_dir, tmp_path, "min_age_s=600")
    night(videos, out, tiny_model_dir, tmp_path, "min_age_s=0", "num_shards=2", "shard=0")
    night(videos, out, tiny_model_dir, tmp_path, "min_age_s=600", "num_shards=2", "shard=1")

    found = sorted(videos.glob("*.mp4"))
    second = [str(path) for path in found if in_shard(path, 1, 2)]
    lines = videos_part(out)
    assert lines[0] == (
        "Videos (under the last run's settings and prompts): "
        f"{len(found) - len(second)} done, 0 failing, {len(second)} waiting"
    ), lines
    assert sorted(waiting(lines)) == second
    assert all("min_age_s=600" in why for why in waiting(lines).values())


def test_a_video_that_moved_shards_while_copied_waits_no_more_once_the_other_shard_captioned_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A video's shard comes from its bytes: a copy under way may fall in one shard, the
    finished file in the other. The first shard's record (still its last) left it waiting; the
    other shard's later night captioned it: it is not listed as waiting."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    whole = write_video(tmp_path / "whole.mp4", n_frames=3).read_bytes()
    video = videos / "v.mp4"
    video.write_bytes(whole)
    settled_in = 0 if in_shard(video, 0, 2) else 1
    cut = next(size for size in range(len(whole) // 2, len(whole))
               if not in_shard(_written(video, whole[:size]), settled_in, 2))
    video.write_bytes(whole[:cut])  # the copy under way, just modified: it waits
    night(videos, out, tiny_model_dir, tmp_path, "min_age_s=600", "num_shards=2", f"shard={1 - settled_in}")
    assert list(waiting(videos_part(out))) == [str(video)]

    video.write_bytes(whole)  # the copy is over
    os.utime(video, (AN_HOUR_AGO, AN_HOUR_AGO))
    night(videos, out, tiny_model_dir, tmp_path, "min_age_s=600", "num_shards=2", f"shard={settled_in}")

    lines = videos_part(out)
    assert lines == ["Videos (under the last run's settings and prompts): 1 done, 0 failing, 0 waiting"], lines


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
