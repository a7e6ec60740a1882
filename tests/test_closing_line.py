"""The run's closing line is true: "nothing to do" only where the run had none (no video done,
failed or found changed under it, no frame committed), else "finished" with what it did, the
videos left waiting counted. Through ``python -m pipeline`` on the tiny model, for a video found
changed after a chunk was committed, and before any was, beside a video done before and one
still arriving. (A night with nothing to do, of videos done, failed before and still arriving:
tests/test_cli.py.)"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import (
    RUN_TIMEOUT_S,
    kill,
    last_run,
    make_night,
    night_args,
    run_cli,
    start_paused_run,
    tinted,
    wait_for_pause,
    write_video,
)


def changed_at_pause(night: subprocess.Popen[str], marker: Path, clip: Path, other: Path, release: Path) -> str:
    """Once ``night`` waits at its pause point, write ``other``'s content over ``clip``, let it go
    on to its end; its stderr."""
    try:
        wait_for_pause(night, marker)
        clip.write_bytes(other.read_bytes())
        release.touch()
        _, stderr = night.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if night.poll() is None:
            kill(night)
    return stderr


def test_a_night_whose_only_video_changed_after_a_commit_says_what_it_did(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The reproduction: the video is rewritten once its first chunk of 3 frames is filed; the
    night said "nothing to do: 0 videos already done" after committing those frames."""
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=40)
    clip = folder / "v0.mp4"
    other = write_video(tmp_path / "other.mp4", n_frames=40, colour_of=tinted(200))
    out = tmp_path / "out"
    args = [*night_args(folder, out, tiny_model_dir, tmp_path), "engine.prefetch_frames=2"]
    marker, release = tmp_path / "paused", tmp_path / "go"
    night = start_paused_run(args, "answer:local:4", marker, release)
    stderr = changed_at_pause(night, marker, clip, other, release)
    assert night.returncode == 0, stderr
    record = last_run(out)
    assert (record["frames"], record["videos_waiting"]) == (3, 1)
    assert "nothing to do" not in stderr, stderr
    assert "finished: 0 done, 0 skipped, 0 failed, 1 waiting; 3 frames in " in stderr, stderr
    assert "1 video changed while the night ran (a copy under way?); the next run takes it as it is then" in stderr
    assert "min_age_s" not in stderr  # it had min_age_s=0 and waits because it changed, not to settle


def test_a_night_whose_video_changed_before_any_commit_says_what_it_did_and_counts_all_waiting(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A video done before, one still arriving (younger than min_age_s) and one taken, which is
    rewritten after the plan, before its first frame is decoded: the model was loaded for it, so
    the night did not have nothing to do; it says so, and both waiting videos are counted."""
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=4)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    assert run_cli(*args[1:], f"video={folder / 'v0.mp4'}").returncode == 0  # v0 done before
    hour_ago = time.time() - 3600
    for settled in folder.iterdir():
        os.utime(settled, (hour_ago, hour_ago))
    write_video(folder / "fresh.mp4", n_frames=4, colour_of=tinted(120))  # still arriving
    other = write_video(tmp_path / "other.mp4", n_frames=4, colour_of=tinted(200))
    marker, release = tmp_path / "paused", tmp_path / "go"
    night = start_paused_run([*args, "min_age_s=300"], "run", marker, release)
    stderr = changed_at_pause(night, marker, folder / "v1.mp4", other, release)
    assert night.returncode == 0, stderr
    record = last_run(out)
    assert (record["frames"], record["videos_skipped"], record["videos_waiting"]) == (0, 1, 2)
    assert "nothing to do" not in stderr and "loading model" in stderr, stderr
    assert "finished: 0 done, 1 skipped, 0 failed, 2 waiting; 0 frames in " in stderr, stderr
    assert "1 video waiting: not yet seen unchanged for min_age_s=300 s" in stderr
    assert "1 video changed while the night ran (a copy under way?); the next run takes it as it is then" in stderr
