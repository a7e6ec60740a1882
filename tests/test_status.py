"""``python -m pipeline.status`` and ``video-caption status`` (issue 24, point 2): how the nights
on an ``output_dir`` are going, in plain text, through the sub-command after real tiny-model
nights. (Runs that did not finish: tests/test_night_record.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.owed import owe_export, owe_report
from pipeline.store import RUNS_DIR
from tests.conftest import (
    ROOT,
    cli_env,
    kill,
    last_run,
    make_night,
    night_args,
    result_row,
    run_cli,
    start_paused_run,
    wait_for_pause,
    write_results,
    write_video,
)

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
    assert "Videos (under the last run's settings and prompts): 1 done, 1 failing, 1 waiting" in lines
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

    # The command status names pays what it owed: the export's lines go, nothing else changes.
    (out / "_export").unlink()
    export = subprocess.run(
        [sys.executable, "-m", "pipeline.export", f"output_dir={out}", "format=vtt"], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert export.returncode == 0, export.stderr
    after = status(f"output_dir={out}").stdout.splitlines()
    assert "Owed: nothing (report and exports are up to date)" in after
    assert after[: after.index("Owed: nothing (report and exports are up to date)")] == lines[: lines.index("Owed:")]


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
    assert few.returncode == 1 and "runs=0 is out of range: runs must be >= 1" in few.stderr


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


def test_videos_done_under_other_prompts_are_not_done_for_the_last_nights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    videos = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 0
    assert "Videos (under the last run's settings and prompts): 2 done, 0 failing, 0 waiting" in status(
        f"output_dir={out}").stdout
    # Another prompt, over one of the two videos: the other is not done for it.
    night = run_cli(*[a for a in args if not a.startswith(("prompts=", "video="))], f"video={videos / 'v0.mp4'}",
                    "prompt=What changed?")
    assert night.returncode == 0, night.stderr
    assert "Videos (under the last run's settings and prompts): 1 done, 0 failing, 0 waiting" in status(
        f"output_dir={out}").stdout


def test_the_report_command_pays_the_report_a_night_owed(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    (out / "_report.html").mkdir(parents=True)  # in the way: the night's report is not written
    night = run_cli(*[a for a in night_args(videos, out, tiny_model_dir, tmp_path) if a != "report=false"],
                    "report=true")
    assert night.returncode == 0, night.stderr
    assert "  the report (owed since the run of" in status(f"output_dir={out}").stdout
    (out / "_report.html").rmdir()
    elsewhere = subprocess.run(
        [sys.executable, "-m", "pipeline.report", f"output_dir={out}", f"out={tmp_path / 'copy.html'}"], cwd=ROOT,
        env=cli_env(), capture_output=True, text=True, timeout=120,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "  the report (owed since the run of" in status(f"output_dir={out}").stdout  # not the night's report
    report = subprocess.run(
        [sys.executable, "-m", "pipeline.report", f"output_dir={out}"], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert "Owed: nothing (report and exports are up to date)" in status(f"output_dir={out}").stdout


@pytest.mark.allow_error_logs
def test_a_night_killed_after_its_plan_records_what_it_left_waiting(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 0
    os.utime(videos / "v0.mp4", (AN_HOUR_AGO, AN_HOUR_AGO))
    fresh = write_video(videos / "fresh.mp4", n_frames=4)  # just copied in
    marker = tmp_path / "paused"
    night = start_paused_run([a for a in args if a != "min_age_s=0"] + ["min_age_s=300"], "run", marker)
    wait_for_pause(night, marker)
    kill(night)

    shown = status(f"output_dir={out}").stdout
    (killed,) = [line for line in shown.splitlines() if "did not finish" in line]
    assert "videos: 0+ done, 1+ skipped, 0+ failed, 1+ waiting" in killed, shown
    assert f"    {fresh}: " in shown and "1 waiting" in shown


def test_a_report_and_export_that_miss_later_captions_are_said_out_of_date(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A night without ``report=true`` or ``export=`` owes neither, so the ones written before
    stay as they were: status says they miss its captions, and how to write them again, instead
    of calling them up to date."""
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    args = [a for a in night_args(videos, out, tiny_model_dir, tmp_path) if a != "report=false"]
    first = run_cli(*args, "report=true", "export=[vtt,jsonl]")
    assert first.returncode == 0, first.stderr
    assert "Owed: nothing (report and exports are up to date)" in status(f"output_dir={out}").stdout
    write_video(videos / "later.mp4", n_frames=3)

    second = run_cli(*args, "report=false")

    assert second.returncode == 0, second.stderr
    said = status(f"output_dir={out}").stdout
    assert "up to date" not in said
    tail = said[said.index("Owed: nothing\nOut of date:\n"):].splitlines()[2:]
    assert [line.split(" (written ")[0] for line in tail] == ["  the report", "  the export"], said
    assert tail[0].endswith(f"(nights without report=true): python -m pipeline.report output_dir={out} writes it again")
    assert tail[1].endswith(f"python -m pipeline.export output_dir={out} format=vtt,jsonl writes it again")
    for command in (["pipeline.report"], ["pipeline.export", "format=vtt,jsonl"]):
        done = subprocess.run([sys.executable, "-m", command[0], f"output_dir={out}", *command[1:]], cwd=ROOT,
                              env=cli_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert "Owed: nothing (report and exports are up to date)" in status(f"output_dir={out}").stdout


def test_while_a_run_is_under_way_what_is_owed_is_left_to_it_and_said_so(tmp_path: Path) -> None:
    """A record says a run is under way (here on another host: a node that may have gone down):
    the report and export commands write, leave what is owed owed and say why in one line;
    status names that run instead of offering a command that could not pay it."""
    out = tmp_path / "out"
    write_results(out, [result_row("a", 0)])
    (out / RUNS_DIR).mkdir()
    (out / RUNS_DIR / "20261207T130500.000000Z.json").write_text(json.dumps(
        {"state": "running", "started": "2026-12-07T13:05:00+00:00", "pid": 4242, "host": "gpu-2", "videos": []}
    ))
    owe_report(out, AN_HOUR_AGO)
    owe_export(out, ["vtt"], AN_HOUR_AGO)
    by_run = "the run started 2026-12-07T13:05:00+00:00 (pid 4242 on gpu-2) is under way and writes it when it ends"

    for command in (["pipeline.report"], ["pipeline.export", "format=vtt"]):
        done = subprocess.run([sys.executable, "-m", command[0], f"output_dir={out}", *command[1:]], cwd=ROOT,
                              env=cli_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        what = "the report" if command[0] == "pipeline.report" else "the export vtt"
        said = f"WARNING] {what} stays owed: {by_run}; if that run is gone (a machine that went down), the next run"
        assert [line for line in done.stderr.splitlines() if "owed" in line] == [
            line for line in done.stderr.splitlines() if said in line
        ] and said in done.stderr, done.stderr

    said = status(f"output_dir={out}").stdout
    assert (out / "_report-due").is_file() and (out / "_export-due").is_file()
    assert said.count(by_run) == 2 and "python -m pipeline.report" not in said, said
