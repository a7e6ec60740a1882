"""``python -m pipeline.status`` and ``video-caption status`` (issue 24, point 2): how the nights
on an ``output_dir`` are going, in plain text, through the sub-command after real tiny-model
nights. (Runs that did not finish: tests/test_night_record.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, last_run, make_night, night_args, run_cli, write_video

AN_HOUR_AGO = time.time() - 3600


def status(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline.status ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.status", *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=120,
    )


@pytest.mark.allow_error_logs
def test_status_tells_the_runs_the_videos_done_failing_and_waiting_and_what_is_owed(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    good = write_video(videos / "good.mp4", n_frames=4)
    bad = videos / "bad.mp4"
    bad.write_text("a text file named like a video")
    for path in (good, bad):
        os.utime(path, (AN_HOUR_AGO, AN_HOUR_AGO))
    fresh = write_video(videos / "fresh.mp4", n_frames=4)  # still being copied in, as far as anyone knows
    out = tmp_path / "out"
    out.mkdir()
    (out / "_export").write_text("in the way")  # so the export is owed
    args = [a for a in night_args(videos, out, tiny_model_dir, tmp_path) if a != "min_age_s=0"]
    night = run_cli(*args, "min_age_s=300", "export=vtt")
    assert night.returncode == 1, night.stderr
    run = last_run(out)

    shown = status(f"output_dir={out}")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"output_dir {out}"
    assert "Recent runs (1 of 1, newest first):" in lines
    (run_line,) = [line for line in lines if line.startswith("  20")]
    assert run_line.startswith(f"  {run['started'][:19].replace('T', ' ')} UTC  ")
    assert (
        f"  exit 1  videos: 1 done, 0 skipped, 1 failed, 1 waiting  frames {run['frames']}  rows {run['rows']}  "
        f"{run['frames_per_s']:.2f} frames/s"
    ) in run_line
    # The engine's decisions as the run recorded them (frames in flight: engine.parallel here).
    (engine,) = run["engines"]
    assert lines[lines.index(run_line) + 1] == (
        f"    engine local on {engine['host']}: text weights as they are, "
        f"{engine['frames_in_flight']} frames in flight, 1 lane, 1 CLIP thread"
    )
    assert "Videos: 1 done, 1 failing, 1 waiting" in lines
    (failing,) = [line for line in lines if line.startswith(f"    {bad}: ")]
    assert "read" in failing  # its reason, whatever words the decoder's check uses
    (waiting,) = [line for line in lines if line.startswith(f"    {fresh}: ")]
    assert "min_age_s=300" in waiting
    assert any("min_age_s=0 takes them at once" in line for line in lines)
    (owed,) = [line for line in lines if line.startswith("  the export vtt (owed since the run of")]
    assert f"python -m pipeline.export output_dir={out} format=vtt" in owed

    # The video-caption script's sub-command says the same.
    script = run_cli("status", f"output_dir={out}")
    assert script.returncode == 0 and script.stdout == shown.stdout


def test_status_of_a_folder_without_runs_and_bad_arguments(tmp_path: Path) -> None:
    empty = status(f"output_dir={tmp_path}")
    assert empty.returncode == 0, empty.stderr
    assert "No runs recorded yet." in empty.stdout and "Videos: 0 done, 0 failing, 0 waiting" in empty.stdout

    missing = status(f"output_dir={tmp_path / 'missing'}")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert f"output_dir {tmp_path / 'missing'} is not a folder" in missing.stderr
    wrong = status("outdir=x")
    assert wrong.returncode == 1 and wrong.stderr.count("\n") == 1
    hint = "bad argument 'outdir=x'; did you mean output_dir=...? expected one of output_dir=..., runs=..."
    assert hint in wrong.stderr
    few = status(f"output_dir={tmp_path}", "runs=0")
    assert few.returncode == 1 and "runs must be >= 1, got 0" in few.stderr


@pytest.mark.parametrize("command", [
    ["pipeline.status", "output_dir={out}"],
    ["pipeline", "video={videos}", "model=tiny", "output_dir={out}", "dry_run=true", "min_age_s=0"],
])
def test_a_reader_that_stops_early_ends_the_output_without_a_word(tmp_path: Path, command: list[str]) -> None:
    """``... | true``: the reader is gone before the first line is printed."""
    videos, out = make_night(tmp_path / "videos", n_videos=1, n_frames=2), tmp_path / "out"
    out.mkdir()
    args = [arg.format(out=out, videos=videos) for arg in command]
    done = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | true', "bash", sys.executable, "-m", *args],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120,
    )
    assert (done.returncode, done.stderr) == (141, "")
