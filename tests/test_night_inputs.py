"""Issue 23: what a night is given and what it finds in ``output_dir`` cannot hang it, crash
it or make it lie: names that are not UTF-8, FIFOs and sockets, symlink loops under a glob, a
video that moves mid-night, an mtime in the future, a chunk damaged inside or deleted, and a
lock file deleted under a running night. Each through ``python -m pipeline`` on the tiny model.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.chunks import chunk_files
from pipeline.summary import read_runs
from tests.conftest import (
    KEY,
    ROOT,
    RUN_TIMEOUT_S,
    SAMPLE_VIDEO,
    answers,
    assert_one_line_error,
    cli_env,
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

# A night of a few tiny videos takes well under a minute; one that takes this long hangs.
HANG_S = 600


def run_bounded(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS``, ended by the test (a failure) if it hangs."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=HANG_S,
    )


@contextmanager
def ending(run: subprocess.Popen[str]) -> Iterator[None]:
    """Kill ``run`` on the way out if it is still there (a test that fails leaves no paused run)."""
    try:
        yield
    finally:
        if run.poll() is None:
            kill(run)


def error_records(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out)
    return df[df.frame_index.isna()]


def with_video(args: list[str], spec: str | Path) -> list[str]:
    return [f"video={spec}" if a.startswith("video=") else a for a in args]


def key_set(df: pd.DataFrame) -> set[tuple[object, ...]]:
    return set(map(tuple, df[KEY].itertuples(index=False)))


# -- 1. a name that is not UTF-8 ------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_captioned_beside_the_others(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    shutil.copy(SAMPLE_VIDEO, folder / os.fsdecode(b"caf\xe9.mp4"))  # Latin-1, as from an old share
    out = tmp_path / "out"
    args = [*night_args(folder, out, tiny_model_dir, tmp_path), "max_frames=2"]
    shown = f"{folder}/caf\\xe9.mp4"
    plan = run_bounded(*args, "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    assert f"caption  {shown}: 2 frames" in plan.stdout
    night = run_bounded(*args)
    assert night.returncode == 0, night.stderr
    assert last_run(out)["videos_done"] == 3
    done = answers(out)
    assert sorted(done.video_path.unique()) == sorted([shown, str(folder / "v0.mp4"), str(folder / "v1.mp4")])


# -- 2. a FIFO or a socket named like a video ----------------------------------------------------


def _inbox_with_a_fifo_and_a_socket(folder: Path) -> list[Path]:
    make_night(folder, n_videos=2, n_frames=3)
    os.mkfifo(folder / "pipe.mp4")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.mp4"))
    server.close()  # the socket file stays
    return [folder / "pipe.mp4", folder / "sock.mp4"]


@pytest.mark.allow_error_logs
def test_a_fifo_or_a_socket_in_the_inbox_is_an_error_record(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    pipe, sock = _inbox_with_a_fifo_and_a_socket(folder)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    plan = run_bounded(*args, "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    assert f"fail     {pipe}: a named pipe, not a video: {pipe}" in plan.stdout
    night = run_bounded(*args)
    assert night.returncode == 2, night.stderr
    assert sorted(error_records(out).error) == [
        f"a named pipe, not a video: {pipe}",
        f"a socket, not a video: {sock}",
    ]
    assert last_run(out)["videos_done"] == 2
    alone = run_bounded(*with_video(night_args(folder, tmp_path / "alone", tiny_model_dir, tmp_path), pipe))
    assert_one_line_error(alone, 1, f"video={pipe} is a named pipe")  # given alone: a mistake of the command line
    assert not (tmp_path / "alone").exists()


@pytest.mark.allow_error_logs
def test_shards_place_a_fifo_without_opening_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    _inbox_with_a_fifo_and_a_socket(folder)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    for shard in (0, 1):
        result = run_bounded(*args, f"shard={shard}", "num_shards=2")
        assert result.returncode in (0, 2, 3), result.stderr
    assert len(error_records(out)) == 2
    assert answers(out).video_path.nunique() == 2


@pytest.mark.allow_error_logs
def test_the_stall_watch_covers_the_plan(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A read that never returns while planning (a mount that stopped answering) ends the night
    as a stalled model does, instead of holding the lock for good."""
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=2)
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    run = start_paused_run([*night_args(folder, out, tiny_model_dir, tmp_path), "stall_timeout_s=2"], "plan:1", marker)
    with ending(run):
        wait_for_pause(run, marker)
        _, stderr = run.communicate(timeout=HANG_S)
    assert_one_line_error(
        subprocess.CompletedProcess(run.args, run.returncode, "", stderr), 1,
        "stalled: nothing came back from reading the videos", "stall_timeout_s=2",
    )
    assert last_run(out)["exit_code"] == 1


# -- 3. a glob over a tree with symlink loops ----------------------------------------------------


@pytest.mark.parametrize("form", ["glob", "folder"])
def test_a_tree_with_symlink_loops_is_searched_once(tiny_model_dir: Path, tmp_path: Path, form: str) -> None:
    inbox = make_night(tmp_path / "inbox", n_videos=1, n_frames=2)
    (inbox / "sub").mkdir()
    write_video(inbox / "sub" / "w.mp4", n_frames=2, colour_of=tinted(200))
    (inbox / "sub" / "up").symlink_to("..")
    (inbox / "self").symlink_to(inbox)
    out = tmp_path / "out"
    spec = f"{inbox}/**/*.mp4" if form == "glob" else inbox
    args = with_video(night_args(inbox, out, tiny_model_dir, tmp_path), spec)
    plan = run_bounded(*args, "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    assert [line.split(":")[0] for line in plan.stdout.splitlines() if line.startswith("caption")] == [
        f"caption  {inbox / 'sub' / 'w.mp4'}", f"caption  {inbox / 'v0.mp4'}",
    ]
    night = run_bounded(*args)
    assert night.returncode == 0, night.stderr
    summary = last_run(out)
    assert (len(summary["videos"]), summary["videos_done"]) == (2, 2)


# -- 4. a video moved during the night ------------------------------------------------------------


@pytest.mark.allow_error_logs
def test_a_video_that_vanished_is_captioned_at_its_new_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    marker, release = tmp_path / "paused", tmp_path / "go"
    run = start_paused_run(args, "run", marker, release)
    with ending(run):
        wait_for_pause(run, marker)
        away = (folder / "v1.mp4").rename(tmp_path / "v1.mp4")  # planned, then moved away
        release.touch()
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    assert run.returncode == 2, stderr
    assert f"vanished or missing: {folder / 'v1.mp4'}" in stderr
    away.rename(folder / "renamed.mp4")  # the same bytes at a new path
    night = run_cli(*args)
    assert night.returncode == 0, night.stderr
    assert "failed before" not in night.stderr
    assert last_run(out)["videos_done"] == 1
    assert sorted(answers(out).video_path.map(lambda p: Path(p).name).unique()) == ["renamed.mp4", "v0.mp4"]


# -- 7. an mtime in the future --------------------------------------------------------------------


def test_a_file_with_a_future_mtime_is_taken_once_seen_unchanged(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=2)
    video = folder / "v0.mp4"
    in_30_days = video.stat().st_mtime + 30 * 86400
    os.utime(video, (in_30_days, in_30_days))  # a camera whose clock runs ahead
    out = tmp_path / "out"
    args = [a for a in night_args(folder, out, tiny_model_dir, tmp_path) if a != "min_age_s=0"] + ["min_age_s=1"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert f"waiting {video}: modified in the future" in first.stderr
    assert "ahead of this machine's clock" in first.stderr
    assert last_run(out)["videos_waiting"] == 1
    os.utime(video, (in_30_days + 60, in_30_days + 60))  # touched again: a new first look
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert f"waiting {video}: changed since a run saw it" in second.stderr
    looked_by = time.time()  # the second run's look was before this; the next one comes min_age_s later
    while time.time() < looked_by + 1:
        time.sleep(0.05)
    third = run_cli(*args)
    assert third.returncode == 0, third.stderr
    assert (last_run(out)["videos_done"], last_run(out)["videos_waiting"]) == (1, 0)


# -- 6. and 15. a chunk damaged inside, or deleted ------------------------------------------------


def _damage(chunk: Path, how: str) -> None:
    """Damage a chunk inside, its footer intact: garbage over the middle of its pages, or one
    byte of the answers' last page changed."""
    data = bytearray(chunk.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    if how == "pages":
        middle = slice(footer_start // 3, 2 * footer_start // 3)
        data[middle] = b"\x5a" * (middle.stop - middle.start)
    else:
        metadata = pq.read_metadata(chunk).row_group(0)
        column = next(metadata.column(i) for i in range(metadata.num_columns)
                      if metadata.column(i).path_in_schema == "answer")
        start = column.dictionary_page_offset or column.data_page_offset
        data[start + column.total_compressed_size - 1] ^= 0xFF
    chunk.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["pages", "one_byte"])
def test_a_chunk_damaged_inside_is_moved_aside_and_its_frames_redone(
    tiny_model_dir: Path, tmp_path: Path, how: str
) -> None:
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=7)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 0
    whole = answers(out)
    (video_id,) = whole.video_id.unique()
    chunk = chunk_files(out / video_id, kinds=("part",))[1]
    _damage(chunk, how)
    night = run_cli(*args)
    assert night.returncode == 0, night.stderr
    assert f"damaged chunk {chunk}" in night.stderr
    assert (out / "_quarantine" / video_id / chunk.name).exists() and not chunk.exists()
    again = answers(out)
    assert key_set(again) == key_set(whole) and not again.duplicated(KEY).any()
    assert "nothing to do" in run_cli(*args).stderr  # verified once, not again


def test_a_deleted_chunk_of_a_done_video_is_redone(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=7)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    assert run_cli(*args).returncode == 0
    whole = answers(out)
    video_id = whole.video_id.iloc[0]
    chunk = chunk_files(out / video_id, kinds=("part",))[1]
    chunk.unlink()
    shown = run_cli("status", f"output_dir={out}").stdout  # before the next night: done no more
    assert "1 done, 0 failing" in shown and "  reopened (chunks their done marker lists are gone" in shown
    assert f"    {video_id}: {chunk.name}" in shown
    night = run_cli(*args)
    assert night.returncode == 0, night.stderr
    assert "chunks its done marker lists are gone" in night.stderr and chunk.name in night.stderr
    summary = last_run(out)
    assert (summary["videos_done"], summary["videos_skipped"]) == (1, 1)
    assert key_set(answers(out)) == key_set(whole)


# -- 8. the lock file deleted under a running night -----------------------------------------------


@pytest.mark.allow_error_logs
def test_a_run_whose_lock_file_was_deleted_stops_before_writing_twice(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=6)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    marker, release = tmp_path / "paused", tmp_path / "go"
    first = start_paused_run(args, "commit:0:before", marker, release)
    with ending(first):
        wait_for_pause(first, marker)
        (out / "_lock").unlink()  # "clearing a stale lock"
        second = run_cli(*args)
        assert second.returncode == 0, second.stderr
        release.touch()
        _, stderr = first.communicate(timeout=RUN_TIMEOUT_S)
    assert_one_line_error(
        subprocess.CompletedProcess(first.args, first.returncode, "", stderr), 1,
        f"{out / '_lock'} was deleted or replaced while this run held it",
    )
    done = answers(out)
    assert len(done) == 2 * (6 + 7) and not done.duplicated(KEY).any()
    # The night record stays the second run's, the one that held the lock last; the first keeps
    # its own record under _runs/, finished with its exit code.
    runs = read_runs(out)
    assert [r["exit_code"] for r in runs] == [1, 0] and [r["pid"] for r in runs] == [first.pid, runs[1]["pid"]]
    assert last_run(out)["pid"] == runs[1]["pid"] != first.pid and last_run(out)["exit_code"] == 0


# -- names that would forge a line ----------------------------------------------------------------

# Each a name a file may have (anything but "/" and NUL): line breaks of every kind, a terminal's
# escape sequences (clear the line, cursor up), C1 controls, a tab and DEL.
FORGING_NAMES = [
    "evil\n[22:00:00 INFO] finished: 9 done, 0 skipped, 0 failed.mp4",
    "cr\r[22:00:01 ERROR] cr.mp4",
    "esc\x1b[2K\x1b[1A[22:00:02 INFO] esc.mp4",
    "separators\u2028[22:00:03 INFO] ls\u2029ps\x85nel\x0b\x0c\x1c.mp4",
    "csi\x9b2K tab\t del\x7f bell\x07.mp4",
]
STAMPED = r"\[\d\d:\d\d:\d\d (INFO|WARNING|ERROR)\] "
LOGGED = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[[\w.]+\]\[(INFO|WARNING|ERROR)\] "
PLANNED = r"(dry run: |caption  |fail     |skip     |wait     |\d+ videos?, )"


def assert_lines(text: str, pattern: str) -> None:
    """Every line of ``text`` (a line ends at LF only) starts as ``pattern`` says, and nothing
    in it moves a terminal's cursor or ends a line in the eyes of another reader."""
    assert text.endswith("\n"), text
    for line in text[:-1].split("\n"):
        assert re.match(pattern, line), f"a line that is not one of the tool's: {line!r}"
    assert not re.search("[\r\x1b\x85\x9b\u2028\u2029\x0b\x0c\x1c]", text), text


def test_a_file_name_cannot_split_or_forge_a_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for i, name in enumerate(FORGING_NAMES):
        write_video(folder / name, n_frames=2, colour_of=tinted(40 * i))
    out = tmp_path / "out"
    args = [*night_args(folder, out, tiny_model_dir, tmp_path, max_tokens=4), "max_frames=1"]

    plan = run_bounded(*args, "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    assert_lines(plan.stdout, PLANNED)
    assert plan.stdout.count("\ncaption  ") == len(FORGING_NAMES)
    assert f"caption  {folder}/evil␊[22:00:00 INFO] finished: 9 done, 0 skipped, 0 failed.mp4: 1 frame" in plan.stdout

    night = run_bounded(*args)
    assert night.returncode == 0, night.stderr
    assert_lines(night.stderr, STAMPED)
    assert night.stderr.count("] done ") == len(FORGING_NAMES)
    assert f"] done {folder}/esc␛[2K␛[1A[22:00:02 INFO] esc.mp4: 1 frame captioned" in night.stderr
    assert "separators\\u2028[22:00:03 INFO] ls\\u2029ps\\u0085nel␋␌␜.mp4" in night.stderr
    assert "csi\\u009b2K tab␉ del␡ bell␇.mp4" in night.stderr
    log_file = Path(last_run(out)["log_file"])
    assert_lines(log_file.read_text(encoding="utf-8"), LOGGED)
    # The Parquet keeps each name as it is.
    assert sorted(Path(p).name for p in answers(out).video_path.unique()) == sorted(FORGING_NAMES)


# -- what a dry run says of files that are not videos ---------------------------------------------


@pytest.mark.allow_error_logs
def test_a_dry_run_says_a_file_that_is_no_video_fails_as_the_run_records_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=2)
    (folder / "notes.mp4").write_text("a text file, named like a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "header.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # an MP4 cut short
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)

    plan = run_bounded(*args, "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    night = run_bounded(*args)
    assert night.returncode == 2, night.stderr
    records = error_records(out)
    assert len(records) == 3
    failing = sorted(line for line in plan.stdout.splitlines() if line.startswith("fail"))
    assert failing == sorted(f"fail     {path}: {why}" for path, why in zip(records.video_path, records.error))
    assert "answered before" not in plan.stdout and "0 frames" not in plan.stdout
    assert plan.stdout.splitlines()[-1].startswith("4 videos, 1 to caption: 2 frames, 4 questions")


def test_a_dry_run_of_a_video_with_nothing_to_ask_claims_no_earlier_answers(cli_base: list[str]) -> None:
    plan = run_bounded(f"video={SAMPLE_VIDEO}", *cli_base, "start_s=3600", "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    assert f"caption  {SAMPLE_VIDEO}: 0 frames, nothing to ask\n" in plan.stdout
    assert "answered before" not in plan.stdout


def test_a_path_named_twice_is_one_video(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The same path through two entries (a list with ``a.mp4`` and ``./a.mp4``, a folder and a
    glob over it) is one video, not a second one with "the same content as" itself."""
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=2)
    out = tmp_path / "out"
    args = [a for a in night_args(folder, out, tiny_model_dir, tmp_path) if not a.startswith("video=")]
    night = run_cli(*args, f"video=[{folder / 'v0.mp4'},{folder}/./v0.mp4,{folder},'{folder}/*.mp4']")
    assert night.returncode == 0, night.stderr
    assert "same content" not in night.stderr
    record = last_run(out)
    assert (record["videos_done"], record["videos_skipped"], len(record["videos"])) == (1, 0, 1)


@pytest.mark.allow_error_logs
def test_a_file_that_failed_and_was_replaced_by_a_good_copy_is_failing_no_more(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A copy cut short fails under its content's id; once a good copy stands at the same path
    and is done, that old record describes nothing there: status, the report and the export
    no longer show the path as failing (no retry_failed could reach the old record)."""
    good = make_night(tmp_path / "source", n_videos=1, n_frames=3) / "v0.mp4"
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    clip = folder / "clip.mp4"
    clip.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    args = [*night_args(folder, out, tiny_model_dir, tmp_path), "export=vtt"]
    assert run_cli(*args).returncode == 3
    shutil.copyfile(good, clip)
    night = run_cli(*args)
    assert night.returncode == 0, night.stderr
    assert "clip.mp4 changed since it failed: its earlier error record is removed" in night.stderr
    shown = run_cli("status", f"output_dir={out}").stdout
    assert "1 done, 0 failing" in shown, shown
    rows = pd.read_parquet(out)
    assert (rows.status == "error").sum() == 0 and rows.video_id.nunique() == 1
    exported = run_cli("export", f"output_dir={out}", "format=vtt", f"video={clip}")
    assert exported.returncode == 0, exported.stderr
