"""Issue 14: a night that a hostile user cannot fool. One test (or a pair) per way the nightly
promise was broken, each through ``python -m pipeline`` on the tiny model.

The crafted fixtures in ``tests/data`` were made once with ffmpeg 5.1 (libx264), and decode
with it to their last frame without an error:

- ``cut_edit_list.mp4``: ``ffmpeg -f lavfi -i testsrc=size=160x90:rate=10:duration=4 -c:v libx264
  -g 10 -bf 0 -pix_fmt yuv420p src.mp4``, then ``ffmpeg -ss 1.5 -i src.mp4 -c copy``: an edit
  list hides the 5 frames before the cut; the container counts 30 frames, 25 decode.
- ``timestamp_jump.ts``: ``ffmpeg -f lavfi -i testsrc=size=160x90:rate=10:duration=2 -vf
  "setpts=PTS+gte(N\\,10)*60/TB" -fps_mode passthrough -c:v libx264 -g 10 -bf 0 -pix_fmt yuv420p
  -f mpegts``: 20 frames, the last 10 a minute later; the container's estimate is 620 frames.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.chunks import chunk_files
from pipeline.inputs import shard_videos
from pipeline.runlog import record_crash, run_log
from tests.conftest import (
    KEY,
    ROOT,
    RUN_TIMEOUT_S,
    SAMPLE_VIDEO,
    answers,
    assert_one_line_error,
    cli_env,
    fill,
    kill,
    last_run,
    make_night,
    mount_tmpfs,
    night_args,
    run_cli,
    small_disk,
    start_paused_run,
    tinted,
    wait_for_pause,
    write_video,
)

DATA = Path(__file__).parent / "data"
AN_HOUR_AGO = time.time() - 3600


def error_records(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out)
    return df[df.frame_index.isna()]


# -- 1. failures that counted as success ------------------------------------------------------


@pytest.mark.allow_error_logs
def test_frames_that_do_not_fit_fail_the_video_and_are_retried(cli_base: list[str], tmp_path: Path) -> None:
    # A 640x360 frame takes 1,948 image tokens; with 256 to generate it cannot fit 2,048 cells,
    # though a smaller frame could: every frame fails, so the video fails.
    args = [f"video={SAMPLE_VIDEO}", *cli_base, "model.n_ctx=2048", "generation.max_tokens=256", "max_frames=2"]
    first = run_cli(*args)
    assert first.returncode == 3, first.stderr  # the night's only video failed
    out = tmp_path / "out"
    summary = last_run(out)
    assert (summary["videos_failed"], summary["videos_done"], summary["exit_code"]) == (1, 0, 3)
    assert not list(out.glob("*/_done-*"))
    (record,) = error_records(out).error
    first_failure = "2 frames failed, the first (frame 0): prompt 1 ('Describe this frame in one sentence.') needs"
    assert record.startswith(first_failure)
    assert "more than the 2048 cells of model.n_ctx=2048" in record
    assert "finished: 0 done, 0 skipped, 1 failed" in first.stderr
    # A later night skips it as failed; retry_failed=true asks its frames again.
    later = run_cli(*args)
    assert later.returncode == 0 and "1 video failed in earlier runs" in later.stderr
    retried = run_cli(*args, "retry_failed=true")
    assert retried.returncode == 3, retried.stderr
    assert "1 failed; 2 frames" in retried.stderr
    assert len(error_records(out)) == 1


@pytest.mark.parametrize(
    "setting",
    [["model.n_ctx=512"], ["prompt=" + "describe every corner of this frame " * 600]],
    ids=["n_ctx_below_one_tile", "prompt_longer_than_the_context"],
)
def test_a_setting_that_can_never_fit_is_refused_before_the_first_frame(
    cli_base: list[str], tmp_path: Path, setting: list[str]
) -> None:
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "generation.max_tokens=256", *setting)
    assert_one_line_error(result, 1, "no frame fits: even the smallest needs", "raise model.n_ctx")
    assert not list((tmp_path / "out").rglob("*.parquet"))


# -- 2. video= empty --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
def test_empty_video_is_an_error(tiny_model_dir: Path, tmp_path: Path, value: str) -> None:
    # Run where the working directory holds a video: an empty video= must not mean "here".
    here = tmp_path / "here"
    here.mkdir()
    write_video(here / "clip.mp4", n_frames=2)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", f"video={value}", "model=tiny", f"model.dir={tiny_model_dir}",
         f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}", "min_age_s=0"],
        cwd=here, env=cli_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(result, 1, "video= is empty")
    assert not list((tmp_path / "out").rglob("*.parquet"))


# -- 3. a repeated prompt -------------------------------------------------------------------


def test_a_repeated_prompt_is_asked_once(cli_base: list[str], tmp_path: Path) -> None:
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", "prompts=[What is shown?,What is shown?]")
    assert result.returncode == 0, result.stderr
    assert "prompt 'What is shown?' is given 2 times; it is asked once" in result.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == 2 and set(df.prompt) == {"What is shown?"}


# -- 4. a file still being copied in -----------------------------------------------------------


def test_a_file_modified_in_the_last_min_age_s_is_left_for_the_next_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    os.utime(folder / "v0.mp4", (AN_HOUR_AGO, AN_HOUR_AGO))  # v1.mp4 was just written
    out = tmp_path / "out"
    args = [a for a in night_args(folder, out, tiny_model_dir, tmp_path) if a != "min_age_s=0"]
    first = run_cli(*args, "min_age_s=600")
    assert first.returncode == 0, first.stderr
    assert f"waiting {folder / 'v1.mp4'}: modified" in first.stderr
    assert set(pd.read_parquet(out).video_path.map(lambda p: Path(p).name)) == {"v0.mp4"}
    summary = last_run(out)
    assert (summary["videos_done"], summary["videos_waiting"]) == (1, 1)
    # Settled by the next night: done then, once.
    os.utime(folder / "v1.mp4", (AN_HOUR_AGO, AN_HOUR_AGO))
    second = run_cli(*args, "min_age_s=600")
    assert second.returncode == 0, second.stderr
    assert last_run(out)["videos_done"] == 1
    assert set(pd.read_parquet(out).video_path.map(lambda p: Path(p).name)) == {"v0.mp4", "v1.mp4"}


def test_a_file_named_alone_is_taken_however_new(cli_base: list[str], tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", n_frames=2)
    result = run_cli(f"video={clip}", *[a for a in cli_base if a != "min_age_s=0"], "min_age_s=600")
    assert result.returncode == 0, result.stderr
    assert last_run(tmp_path / "out")["videos_done"] == 1


# -- 5. valid files reported corrupt -----------------------------------------------------------


def test_edit_list_and_timestamp_jump_decode_to_their_end(cli_base: list[str], tmp_path: Path) -> None:
    manifest = tmp_path / "tonight.txt"
    manifest.write_text(f"{DATA / 'cut_edit_list.mp4'}\n{DATA / 'timestamp_jump.ts'}\n")
    result = run_cli(f"video={manifest}", *cli_base)
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert (df.status == "ok").all()
    times = df.groupby(df.video_path.map(lambda p: Path(p).name)).timestamp_s.apply(sorted).to_dict()
    assert times["cut_edit_list.mp4"] == pytest.approx([0.0, 1.0, 2.0])  # 25 frames, 2.4 s
    assert times["timestamp_jump.ts"] == pytest.approx([0.0, 61.0])  # 20 frames, the last 10 past the jump


# -- 6. one bad directory entry ------------------------------------------------------------------


@pytest.mark.allow_error_logs
def test_a_symlink_loop_is_that_entrys_error_record(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    (folder / "loop.mp4").symlink_to("loop.mp4")
    out = tmp_path / "out"
    result = run_cli(*night_args(folder, out, tiny_model_dir, tmp_path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "crashed" not in result.stderr
    (record,) = error_records(out).error
    assert record == f"symlink loop (a link that leads back to itself): {folder / 'loop.mp4'}"
    assert last_run(out)["videos_done"] == 1


# -- 7. one damaged chunk -------------------------------------------------------------------------


def test_a_damaged_chunk_is_moved_aside_and_its_work_redone(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=4)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 0
    whole = pd.read_parquet(out)
    # v0 stays done; v1 is as a killed run leaves it (no done marker). One chunk of each is
    # cut in half on disk.
    ids = {Path(p).name: v for p, v in zip(whole.video_path, whole.video_id)}
    damaged = []
    for name in ("v0.mp4", "v1.mp4"):
        chunk = chunk_files(out / ids[name], kinds=("part",))[0]
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
        damaged.append(chunk)
    for marker in (out / ids["v1.mp4"]).glob("_done-*"):
        marker.unlink()
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    for chunk in damaged:
        assert f"damaged chunk {chunk}" in result.stderr
        assert (out / "_quarantine" / chunk.parent.name / chunk.name).exists() and not chunk.exists()
    again = pd.read_parquet(out)
    key = ["video_id", "frame_index", "prompt_id"]
    assert again.sort_values(key)[key].reset_index(drop=True).equals(whole.sort_values(key)[key].reset_index(drop=True))


# -- 8. two kinds of run on one output_dir ---------------------------------------------------------


@pytest.mark.parametrize("sharded_first", [False, True], ids=["unsharded_first", "sharded_first"])
def test_a_run_with_shards_and_one_without_never_share_an_output_dir(
    tiny_model_dir: Path, tmp_path: Path, sharded_first: bool
) -> None:
    videos = make_night(tmp_path / "videos", n_videos=4, n_frames=4)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    # A shard with videos (the split depends on their content) waits before its first commit.
    busy = next(i for i in range(2) if shard_videos(sorted(videos.glob("*.mp4")), i, 2))
    shards = [f"shard={busy}", "num_shards=2"]
    first, refused = (shards, []) if sharded_first else ([], shards)
    marker = tmp_path / "paused"
    holder = start_paused_run([*args, *first], "commit:0:before", marker)
    try:
        wait_for_pause(holder, marker)
        other = run_cli(*args, *refused)
        assert_one_line_error(other, 75, "another run holds", f'"pid": {holder.pid}', "would write the same keys twice")
        assert run_cli(*args, "shard=0", "num_shards=3").returncode == 75
        if sharded_first:  # the other shard of the same night runs beside it
            beside = run_cli(*args, f"shard={1 - busy}", "num_shards=2")
            assert beside.returncode == 0, beside.stderr
    finally:
        kill(holder)
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr


# -- 9. Ctrl-C and SIGTERM ---------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_with_its_code_and_keeps_what_is_answered(
    tiny_model_dir: Path, tmp_path: Path, signum: int, code: int
) -> None:
    videos = make_night(tmp_path / "videos", n_videos=2, n_frames=6)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    marker = tmp_path / "paused"
    run = start_paused_run(args, "answer:local:2", marker)
    wait_for_pause(run, marker)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if "stopped by" in line]
    assert f"stopped by {signal.Signals(signum).name}; what was committed is kept" in line
    assert last_run(out)["exit_code"] == code
    # The two frames answered before the signal were committed on the way out.
    assert len(pd.read_parquet(out)) == 2 * 2
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(out)) == 2 * (6 + 7)


def test_a_signal_that_lands_in_the_llama_log_callback_still_stops(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Python drops an exception raised inside a ctypes callback: the signal must not be lost.
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    run = start_paused_run(night_args(videos, out, tiny_model_dir, tmp_path), "native_log:1", marker)
    wait_for_pause(run, marker)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    assert run.returncode == 130, stderr
    assert last_run(out)["exit_code"] == 130 and last_run(out)["videos_done"] == 0


# -- 10. entries that fail at planning ------------------------------------------------------------


@pytest.mark.allow_error_logs
def test_an_entry_that_fails_at_planning_has_one_error_record(tiny_model_dir: Path, tmp_path: Path) -> None:
    make_night(tmp_path / "videos", n_videos=1, n_frames=2)
    (tmp_path / "videos" / "dangling.mp4").symlink_to("gone.mp4")
    manifest = tmp_path / "tonight.txt"
    manifest.write_text("videos/v0.mp4\nvideos/missing.mp4\nvideos/dangling.mp4\nvideos/missing.mp4\n")
    out = tmp_path / "out"
    args = night_args(manifest, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 2
    for _ in range(2):
        later = run_cli(*args)
        assert later.returncode == 0, later.stderr
        assert "2 videos failed in earlier runs" in later.stderr
    records = error_records(out)
    assert sorted(Path(p).name for p in records.video_path) == ["dangling.mp4", "missing.mp4"]
    assert all(e.startswith("vanished or missing") for e in records.error)


# -- 11. manifests ---------------------------------------------------------------------------------


def test_manifest_with_a_byte_order_mark_and_a_hash_in_a_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "take #1.mp4", n_frames=2, colour_of=tinted(10))
    write_video(folder / "take 2.mp4", n_frames=3, colour_of=tinted(200))
    manifest = tmp_path / "tonight.txt"
    manifest.write_text("videos/take #1.mp4\n# a comment\n  # another\nvideos/take 2.mp4\n", encoding="utf-8-sig")
    out = tmp_path / "out"
    result = run_cli(*night_args(manifest, out, tiny_model_dir, tmp_path))
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(out)
    assert df.groupby(df.video_path.map(lambda p: Path(p).name)).frame_index.nunique().to_dict() == {
        "take #1.mp4": 2, "take 2.mp4": 3,
    }


@pytest.mark.allow_error_logs
def test_a_manifest_line_is_the_path_as_written_and_a_path_listed_twice_is_one_entry(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A name may begin or end with spaces: the line is the path but its line break. A line
    with a space too many names a file that is not there, and the error says where the blank is;
    the same path twice (or as ./path) is one video, not a copy of itself."""
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / " lead space.mp4", n_frames=2, colour_of=tinted(10))
    write_video(folder / "lead space.mp4", n_frames=3, colour_of=tinted(90))  # what stripping would find
    write_video(folder / "twice.mp4", n_frames=2, colour_of=tinted(200))
    write_video(folder / "line\u2028separator\x85.mp4", n_frames=2, colour_of=tinted(150))  # no line break here
    manifest = tmp_path / "tonight.txt"
    manifest.write_bytes(
        b"videos/ lead space.mp4\r\nvideos/twice.mp4\nvideos/twice.mp4 \n./videos/twice.mp4\n"
        + "videos/line\u2028separator\x85.mp4\n".encode() + b"videos//twice.mp4\n  # a comment\n\t\n"
    )
    out = tmp_path / "out"
    night = run_cli(*night_args(manifest, out, tiny_model_dir, tmp_path))
    assert night.returncode == 2, night.stderr
    assert f"{manifest} lists {folder / 'twice.mp4'} 3 times: it is taken once" in night.stderr
    assert "same content as" not in night.stderr
    assert f"vanished or missing: {folder / 'twice.mp4 '} (the name ends with a blank)" in night.stderr
    summary = last_run(out)
    assert (len(summary["videos"]), summary["videos_done"], summary["videos_failed"]) == (4, 3, 1)
    assert sorted(answers(out).video_path.unique()) == sorted(
        str(folder / name) for name in (" lead space.mp4", "twice.mp4", "line\u2028separator\x85.mp4")
    )
    assert list(error_records(out).video_path) == [str(folder / "twice.mp4 ")]


def test_a_manifest_that_is_not_utf8_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "tonight.txt"
    manifest.write_bytes("caf\u00e9.mp4\n".encode("latin-1"))
    result = run_cli(*night_args(manifest, tmp_path / "out", tiny_model_dir, tmp_path))
    assert_one_line_error(result, 1, f"video={manifest} cannot be read", "give a UTF-8 text file, one path per line")


# -- 12. executor=ray connects within a timeout ----------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("via", ["executor.address", "RAY_ADDRESS"])
def test_an_unreachable_ray_cluster_is_one_line(cli_base: list[str], tmp_path: Path, via: str) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    setting = [f"executor.address={address}"] if via == "executor.address" else []
    env = {"RAY_ADDRESS": address if via == "RAY_ADDRESS" else ""}
    result = ray_run(cli_base, [*setting, "executor.connect_timeout_s=5"], **env)
    assert_one_line_error(result, 1, f"cannot reach a Ray cluster at {address} (from {via}")


def test_a_ray_address_that_does_not_answer_is_one_line(cli_base: list[str], tmp_path: Path) -> None:
    # Something listens there but never speaks: ray.init alone keeps retrying for many minutes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        result = ray_run(cli_base, [f"executor.address={address}", "executor.connect_timeout_s=2"])
    assert_one_line_error(result, 1, f"no answer from a Ray cluster at {address} (from executor.address)")


def ray_run(cli_base: list[str], settings: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", f"video={SAMPLE_VIDEO}", *cli_base, "executor=ray", *settings],
        cwd=ROOT, env=cli_env(**env), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )


# -- 13. smaller ones ------------------------------------------------------------------------------


@pytest.mark.allow_error_logs
def test_a_disk_full_before_the_run_is_one_line(cli_base: list[str], tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "64k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        (disk / "out").mkdir()
        fill(disk)
        result = run_cli(f"video={SAMPLE_VIDEO}", *[a for a in cli_base if not a.startswith("output_dir=")],
                         f"output_dir={disk / 'out'}")
        assert_one_line_error(result, 1, str(disk / "out"), "No space left on device")
        assert "crashed" not in result.stderr
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.allow_error_logs
def test_a_disk_that_fills_under_the_log_file_is_one_warning_then_the_runs_one_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        videos = make_night(tmp_path / "videos", n_videos=1, n_frames=2)
        out = disk / "out"
        args = night_args(videos, out, tiny_model_dir, tmp_path, max_tokens=4)
        assert run_cli(*args).returncode == 0
        write_video(videos / "late.mp4", n_frames=2, colour_of=tinted(99))
        fill(disk)  # the log file is created (an empty file needs no block), then cannot be written

        night = run_cli(*args)

        assert night.returncode == 1
        lines = night.stderr.splitlines()
        assert "Logging error" not in night.stderr and "Traceback" not in night.stderr, night.stderr
        assert all(re.match(r"\[\d\d:\d\d:\d\d (INFO|WARNING|ERROR)\] ", line) for line in lines), night.stderr
        assert sum("cannot write the run's log file" in line for line in lines) == 1, night.stderr
        last = r"\[\d\d:\d\d:\d\d ERROR\] cannot write .*: No space left on device; free space on its disk$"
        assert re.match(last, lines[-1]), night.stderr


def test_a_log_file_that_cannot_be_written_says_so_once_and_is_written_no_more(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = logging.getLogger("test.log_file")
    with small_disk(tmp_path / "disk", "64k") as disk:
        fill(disk)  # every write: No space left on device
        with run_log(disk / "run.log"):
            for i in range(50):
                log.warning("record %d", i)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.match(
        rf"\[\d\d:\d\d:\d\d WARNING\] cannot write the run's log file {re.escape(str(disk / 'run.log'))}: "
        r"No space left on device; the rest of this run's log is on the console only", err,
    ), err


@pytest.mark.allow_error_logs
def test_a_logged_message_is_one_line_and_a_traceback_keeps_its_lines(tmp_path: Path) -> None:
    log = logging.getLogger("test.one_line")
    path = tmp_path / "run.log"
    with run_log(path):
        try:
            raise ValueError("bad\nvalue")
        except ValueError as error:
            log.exception("failed x\n[22:00:00 INFO] forged\u2028.mp4")
            record_crash(error, path)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0].endswith("][ERROR] failed x␊[22:00:00 INFO] forged\\u2028.mp4"), lines
    # The traceback logged with the record, then the crash's, each on lines of their own.
    assert lines[1] == "Traceback (most recent call last):" and lines.count("ValueError: bad") == 2, lines
    assert lines.count("value") == 2, lines


def test_temporary_files_of_a_killed_run_are_removed(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=4)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    marker = tmp_path / "paused"
    run = start_paused_run(args, "commit:0:during", marker)  # killed while a chunk is half written
    wait_for_pause(run, marker)
    kill(run)
    (left,) = out.glob("*/.*.tmp")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert not left.exists() and not list(out.rglob(".*.tmp"))
    assert "removed 1 temporary files left by a killed run" in result.stderr


def test_a_report_killed_before_it_was_written_is_made_by_the_next_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    videos = make_night(tmp_path / "videos", n_videos=1, n_frames=2)
    out = tmp_path / "out"
    args = [a for a in night_args(videos, out, tiny_model_dir, tmp_path) if a != "report=false"]
    marker = tmp_path / "paused"
    run = start_paused_run(args, "report", marker)
    wait_for_pause(run, marker)
    kill(run)
    assert not (out / "_report.html").exists()
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stderr
    assert (out / "_report.html").exists() and not (out / "_report-due").exists()


def test_runs_started_together_log_apart(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Each run's log is in its output_dir's _logs/; nothing in the working folder they share.
    video = write_video(tmp_path / "clip.mp4", n_frames=2)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", f"video={video}", "model=tiny", f"model.dir={tiny_model_dir}",
             f"output_dir={tmp_path / f'out{i}'}", "generation.max_tokens=4", "report=false"],
            cwd=tmp_path, env=cli_env(PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
        assert run.returncode == 0, stderr
    logs = [Path(str(last_run(tmp_path / f"out{i}")["log_file"])) for i in range(2)]
    assert [log.parent for log in logs] == [tmp_path / f"out{i}" / "_logs" for i in range(2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "out0", "out1"]
    for i, log in enumerate(logs):
        assert f"-> {tmp_path / f'out{i}'}" in log.read_text()
        assert f"out{1 - i}" not in log.read_text()


@pytest.mark.allow_error_logs
def test_a_run_whose_model_stops_answering_ends_and_the_next_night_goes_on(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A GPU that stops responding leaves the engine waiting for good: the stall watch ends
    the run with one line and exit 1, keeps its chunks and frees the lock for the next night
    (which would otherwise stand down with 75, night after night)."""
    videos = make_night(tmp_path / "videos", n_videos=2, n_frames=18)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    marker = tmp_path / "paused"
    # A few chunks first. The timeout is far above any gap between a healthy tiny-model run's
    # answers (well under a second), so that only the pause can reach it, also on a busy machine.
    run = start_paused_run([*args, "stall_timeout_s=10"], "step:40", marker)
    wait_for_pause(run, marker)
    _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    assert_one_line_error(
        subprocess.CompletedProcess(run.args, run.returncode, "", stderr), 1,
        "stalled: nothing came back from the model", "stall_timeout_s=10",
    )
    assert last_run(out)["exit_code"] == 1
    kept = answers(out)
    assert len(kept) > 0 and not kept.duplicated(KEY).any()
    bad = run_cli(*args, "stall_timeout_s=0")
    assert_one_line_error(bad, 1, "stall_timeout_s=0", "null to wait for ever")
    night = run_cli(*args)
    assert night.returncode == 0, night.stderr
    done = answers(out)
    assert len(done) == 2 * (18 + 19) and not done.duplicated(KEY).any()
    assert kept.merge(done, on=KEY).shape[0] == len(kept)  # what the stalled run kept stays
