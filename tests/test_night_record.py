"""The record of a night is true at every moment (issue 23, points 9 and 10), through
``python -m pipeline`` on the tiny model and ``python -m pipeline status``:

- the run summary says ``running`` from the start (pid, command line), and a run that never
  finished (``kill -9``, a summary that could not be written at the end) leaves that, never the
  previous night's ``exit_code: 0``; status shows it as *did not finish*;
- a night whose model files cannot be found finishes its own record (exit 1);
- SIGHUP stops a run as SIGTERM does, with its own code (129);
- an export that cannot be written is owed, exits 1 with one line, and the next night writes it
  even though it captions nothing;
- a crash while the report is written is recorded as the exit 1 it is, not as the night's outcome.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    RUN_TIMEOUT_S,
    answers,
    assert_no_key_twice,
    assert_one_line_error,
    fill,
    kill,
    last_run,
    make_night,
    mount_tmpfs,
    night_args,
    run_cli,
    small_disk,
    start_paused_run,
    wait_for_pause,
    write_video,
)


def status(out: Path) -> str:
    """What ``python -m pipeline status`` (the ``video-caption status`` sub-command) prints."""
    done = run_cli("status", f"output_dir={out}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_night_says_running_from_its_start_and_a_killed_one_did_not_finish(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    first = run_cli(*args)
    assert first.returncode == 0 and last_run(out)["exit_code"] == 0, first.stderr
    write_video(videos / "late.mp4", n_frames=6)
    marker = tmp_path / "paused"
    night = start_paused_run(args, "answer:local:1", marker)
    wait_for_pause(night, marker)

    record = last_run(out)
    assert (record["state"], record["exit_code"], record["pid"]) == ("running", None, night.pid)
    assert record["command"][1:] == args and record["config_id"] and record["prompts"]
    assert f"running (pid {night.pid})" in status(out)

    kill(night)
    record = last_run(out)
    assert (record["state"], record["exit_code"]) == ("running", None)  # not the first night's 0
    shown = status(out)
    assert f"did not finish (pid {night.pid} is gone)" in shown
    assert "exit 0  videos: 1 done" in shown  # the first night, as it was


def test_sighup_stops_the_run_like_sigterm_with_its_own_code(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=6)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    marker = tmp_path / "paused"
    night = start_paused_run(args, "answer:local:2", marker)
    wait_for_pause(night, marker)

    night.send_signal(signal.SIGHUP)
    _, stderr = night.communicate(timeout=RUN_TIMEOUT_S)

    assert_one_line_error(
        subprocess.CompletedProcess(night.args, night.returncode, "", stderr), 129,
        "stopped by SIGHUP; what was committed is kept",
    )
    record = last_run(out)
    assert (record["state"], record["exit_code"]) == ("finished", 129)
    assert "exit 129" in status(out)
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr


@pytest.mark.allow_error_logs
def test_a_night_whose_model_files_cannot_be_found_is_recorded(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A model file named on the command line that is not there is a mistake refused before the
    night is recorded. A preset's files are found (or fetched) after the night's record says
    running, since config_id holds their content: a night that cannot find them finishes its
    own record with exit 1, and config_id stays unknown rather than made up."""
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 0 and last_run(out)["exit_code"] == 0
    first = last_run(out)
    gone = tmp_path / "gone" / "text.gguf"
    write_video(videos / "late.mp4", n_frames=4)
    assert_one_line_error(run_cli(*args, f"model.text={gone}"), 1, str(gone), "is not a file")
    assert last_run(out) == first

    empty = tmp_path / "models"
    empty.mkdir()
    preset = ["model=llava16_vicuna_7b", f"model.dir={empty}"]
    night = run_cli(*[a for a in args if not a.startswith(("model=", "model.dir="))], *preset)
    assert_one_line_error(night, 1, "llava-v1.6-vicuna-7b.Q5_K_M.gguf", "HF_HUB_OFFLINE is set")
    record = last_run(out)
    assert (record["state"], record["exit_code"], record["config_id"]) == ("finished", 1, None)
    assert record["command"][-2:] == preset
    assert status(out).count("exit ") == 2  # this night and the first, as it was


@pytest.mark.allow_error_logs
def test_a_summary_that_cannot_be_finished_does_not_claim_the_last_success(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
        out = disk / "out"
        args = night_args(videos, out, tiny_model_dir, tmp_path)
        assert run_cli(*args).returncode == 0
        assert last_run(out)["exit_code"] == 0
        write_video(videos / "late.mp4", n_frames=9)
        marker, release = tmp_path / "paused", tmp_path / "release"
        night = start_paused_run(args, "answer:local:1", marker, release)
        wait_for_pause(night, marker)
        fill(disk)  # while the night runs
        release.touch()
        night.communicate(timeout=RUN_TIMEOUT_S)
        assert night.returncode == 1

        record = last_run(out)
        assert (record["state"], record["exit_code"]) == ("running", None)
        assert f"did not finish (pid {night.pid} is gone)" in status(out)
        assert_no_key_twice(out)


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("blocked", ["a file in the way", "a full disk"])
def test_an_export_that_fails_is_owed_exits_1_and_the_next_night_writes_it(
    tiny_model_dir: Path, tmp_path: Path, blocked: str
) -> None:
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    out.mkdir()
    export_dir = out / "_export"
    if blocked == "a file in the way":
        export_dir.write_text("not a folder")
    elif not mount_tmpfs(export_dir, "64k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    args = [*night_args(videos, out, tiny_model_dir, tmp_path), "export=[vtt,csv]"]
    try:
        if blocked == "a full disk":
            fill(export_dir)
        night = run_cli(*args)
        assert_one_line_error(night, 1, "export not written", "the next run writes the export")
        assert last_run(out)["exit_code"] == 1 and last_run(out)["videos_done"] == 1
        assert "the export vtt,csv (owed since the run of" in status(out)
    finally:
        if blocked == "a full disk":
            subprocess.run(["umount", "-l", str(export_dir)], capture_output=True)
        if export_dir.is_file():
            export_dir.unlink()

    # Nothing left to caption, and this night asks for no export: what is owed is written.
    later = run_cli(*[a for a in args if not a.startswith("export=")])
    assert later.returncode == 0, later.stderr
    assert "nothing to do" in later.stderr
    assert sorted(p.name for p in export_dir.glob("*/*.vtt")) != [] and (export_dir / "captions.csv").is_file()
    assert "Owed: nothing" in status(out)
    assert not [p for p in out.iterdir() if p.name.endswith("-due")]


@pytest.mark.allow_error_logs
def test_a_crash_while_the_report_is_written_is_recorded_as_exit_1(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The night's outcome (0, 2 or 3) is known before the export and the report are written; a
    bug that ends the night there makes it exit 1, and its record says 1, not the outcome."""
    import pipeline.report
    from pipeline.cli import run_from_config
    from pipeline.config import compose_config

    def broken_report(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("a bug in the report")

    monkeypatch.setattr(pipeline.report, "write_report", broken_report)
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    args = [a for a in night_args(videos, out, tiny_model_dir, tmp_path) if a != "report=false"]
    with caplog.at_level("ERROR", logger="pipeline"):
        code = run_from_config(compose_config([a for a in args if not a.startswith("hydra.")]))
    assert code == 1
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["crashed: RuntimeError: a bug in the report"]
    record = last_run(out)
    assert (record["state"], record["exit_code"], record["videos_done"]) == ("finished", 1, 1)
    assert "exit 1  videos: 1 done" in status(out)


def test_a_damaged_chunk_is_shown_left_out_and_redone_never_a_crash(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk damaged on disk after its video left the inbox (so no night verifies it): the
    night, its report, status and load_results read everything else and name the chunk; a run
    over its video moves it aside and captions those frames again."""
    from pipeline.results import load_results

    videos = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 0
    before = answers(out)
    moved = (videos / "v1.mp4").rename(tmp_path / "v1.mp4")
    (video_id,) = set(before.loc[before.video_path.str.endswith("v1.mp4"), "video_id"])
    chunk = sorted((out / video_id).glob("part-*.parquet"))[0]
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    write_video(videos / "late.mp4", n_frames=3)

    night = run_cli(*[a for a in args if a != "report=false"])
    assert night.returncode == 0, night.stderr
    warnings = [line for line in night.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and f"{chunk}: damaged (" in warnings[0] and "captions those frames again" in warnings[0]
    assert last_run(out)["exit_code"] == 0 and (out / "_report.html").is_file()
    shown = status(out)
    assert "chunks left out of the results, damaged, copies or strays" in shown and f"    {chunk}: " in shown
    with caplog.at_level("WARNING", logger="pipeline.store"):
        read = load_results(out)
    assert [r.getMessage().split(": damaged")[0] for r in caplog.records] == [str(chunk)]
    assert set(read.video_path.map(lambda p: Path(p).name)) == {"v0.mp4", "v1.mp4", "late.mp4"}
    assert len(read[read.video_id == video_id]) < len(before[before.video_id == video_id])

    again = run_cli(*[a for a in args if not a.startswith("video=")], f"video={moved}")
    assert again.returncode == 0, again.stderr
    assert (out / "_quarantine" / video_id / chunk.name).is_file() and not chunk.exists()
    assert "damaged chunks" not in status(out)
    redone = answers(out)
    assert len(redone[redone.video_id == video_id]) == len(before[before.video_id == video_id])


def test_a_running_and_a_killed_night_show_what_they_committed(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The running record is written again after the first commit (then at most every 30 s):
    status shows a night's work so far, and a killed night's record keeps it, never 0."""
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=12)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)  # chunks of 3 frames, 2 prompts
    marker = tmp_path / "paused"
    night = start_paused_run(args, "commit:2:before", marker)
    wait_for_pause(night, marker)
    record = last_run(out)
    assert (record["state"], record["frames"], record["rows"]) == ("running", 3, 6)
    assert "frames 3+  rows 6+ committed so far" in status(out)

    kill(night)
    assert len(answers(out)) == 12 >= last_run(out)["rows"]  # two chunks on disk, the first recorded
    shown = status(out)
    assert f"did not finish (pid {night.pid} is gone)" in shown
    assert "frames 3+  rows 6+ committed (as last recorded)" in shown
    assert run_cli("report", f"output_dir={out}").returncode == 0
    assert "at least 3 frames committed · did not finish" in (out / "_report.html").read_text()
    assert run_cli(*args, "report=true").returncode == 0  # the next night does the rest
    page = (out / "_report.html").read_text()
    assert "2 runs recorded: at least " in page and " frames in at least " in page  # the killed one's figures
    assert "(1 did not finish: their records say what they had done when last written)" in page


@pytest.mark.allow_error_logs
def test_rows_that_could_not_be_written_are_not_counted(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk that cannot be written (here: the third) stops the run; its summary counts only
    the frames and rows committed before it."""
    import pipeline.run
    from pipeline.config import compose_config
    from pipeline.errors import StoreError
    from pipeline.executors.local import LocalExecutor
    from pipeline.inputs import find_videos
    from pipeline.presets import captioner_from_config
    from pipeline.sampling import AllSampler
    from pipeline.summary import RunSummary

    write_chunk = pipeline.run.write_chunk
    chunks = []

    def third_fails(*args: Any) -> Path:
        chunks.append(args)
        if len(chunks) == 3:
            raise StoreError("cannot write: No space left on device")
        return write_chunk(*args)

    monkeypatch.setattr(pipeline.run, "write_chunk", third_fails)
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=12)
    out = tmp_path / "out"
    out.mkdir()
    run = pipeline.run.Pipeline(
        AllSampler(), ["What?", "Which colours?"], out, "c1", prefetch_frames=4, checkpoint_frames=3
    )
    tasks = run.plan(find_videos(str(videos), [".mp4"]))
    summary = RunSummary(videos=[t.outcome for t in tasks])
    cfg = compose_config(["model=tiny", f"model.dir={tiny_model_dir}", "video=x", "generation.max_tokens=4"])
    with captioner_from_config(cfg, max_questions=2) as captioner, pytest.raises(StoreError):
        run.run(tasks, LocalExecutor(captioner), summary)
    on_disk = answers(out)  # the chunks before the failed one, and those committed on the way out
    assert len(chunks) > 3 and 0 < len(on_disk) < 12 * 2
    assert summary.as_dict()["rows"] == len(on_disk)
    assert summary.frames == on_disk.frame_index.nunique()
