"""A night's videos are known by their content, and what it files under a content id describes
that content: a file replaced or cut short between the plan and its decode is left for the next
run, a video-level error of a prompt no longer asked holds nothing back, and a record filed
under a path that no longer holds what failed there is removed. Each through ``python -m
pipeline`` on the tiny model.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipeline.inputs import video_id_of
from tests.conftest import (
    RUN_TIMEOUT_S,
    answers,
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

CHANGED = "changed since the night was planned (a copy under way?); left for the next run"


def changed_while_paused(
    args: list[str], tmp_path: Path, change: Path, to: bytes, at: str = "run"
) -> subprocess.CompletedProcess[str]:
    """Run a night that is paused at ``at`` (by default once its plan is made), write ``to``
    over ``change`` (as ``cp`` does: truncate, then write), then let it go on to its end."""
    marker, release = tmp_path / "planned", tmp_path / "go"
    run = start_paused_run(args, at, marker, release)
    try:
        wait_for_pause(run, marker)
        change.write_bytes(to)
        release.touch()
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            kill(run)
    return subprocess.CompletedProcess(args, run.returncode, "", stderr)


def filed_under(out: Path, video_id: str) -> list[str]:
    """The names of what ``output_dir`` holds for ``video_id`` (chunks, facts, markers)."""
    folder = out / video_id
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_video_replaced_after_the_plan_waits_and_nothing_is_filed_under_the_planned_id(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    original = folder / "v1.mp4"
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copyfile(original, archive / "v1.mp4")
    planned_id = video_id_of(original)
    other = write_video(tmp_path / "other.mp4", n_frames=5, colour_of=tinted(200))
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    night = changed_while_paused(args, tmp_path, original, other.read_bytes())
    assert night.returncode == 0, night.stderr
    assert f"waiting {original}: {CHANGED}" in night.stderr
    assert "1 video changed while the night ran (a copy under way?)" in night.stderr
    assert "min_age_s" not in night.stderr  # it was no fresh file left to settle
    record = last_run(out)
    assert (record["videos_done"], record["videos_waiting"], record["videos_failed"]) == (1, 1, 0)
    assert filed_under(out, planned_id) == []  # no rows, no _video.json, no done marker
    # The next night plans it afresh, as the content it now holds; the original, found
    # elsewhere, is no "already done": its frames are captioned under its own id.
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert last_run(out)["videos_done"] == 1
    archived = run_cli(*[f"video={archive}" if a.startswith("video=") else a for a in args])
    assert archived.returncode == 0, archived.stderr
    assert last_run(out)["videos_done"] == 1
    frames_of = answers(out).groupby("video_id").frame_index.nunique().to_dict()
    assert frames_of[planned_id] == 4 and frames_of[video_id_of(original)] == 5


def test_a_video_rewritten_while_it_is_decoded_files_no_later_chunk_under_the_planned_id(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=40)
    clip = folder / "v0.mp4"
    planned_id = video_id_of(clip)
    other = write_video(tmp_path / "other.mp4", n_frames=40, colour_of=tinted(200))
    out = tmp_path / "out"
    args = [*night_args(folder, out, tiny_model_dir, tmp_path), "engine.prefetch_frames=2"]
    # Paused after its 4th frame's answers (the first chunk of 3 frames is filed): the decoder,
    # two frames ahead and the model's two in flight, is far from the clip's end.
    night = changed_while_paused(args, tmp_path, clip, other.read_bytes(), at="answer:local:4")
    assert night.returncode == 0, night.stderr
    assert night.stderr.count(f"waiting {clip}: {CHANGED}") == 1, night.stderr  # one line, however often seen
    filed = pd.read_parquet(out / planned_id)
    assert sorted(set(filed.frame_index)) == [0, 1, 2]  # the chunk filed before the change, no other
    assert "_done" not in " ".join(filed_under(out, planned_id))
    record = last_run(out)
    assert (record["videos_done"], record["videos_waiting"]) == (0, 1)


@pytest.mark.allow_error_logs
def test_a_video_cut_short_by_a_copy_after_the_plan_is_no_failure_of_its_content(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    clip = folder / "v1.mp4"
    whole = clip.read_bytes()
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    night = changed_while_paused(args, tmp_path, clip, whole[: len(whole) // 2])
    assert night.returncode == 0, night.stderr
    assert f"waiting {clip}: {CHANGED}" in night.stderr
    assert f"failed {clip}" not in night.stderr
    errors = pd.read_parquet(out).status.eq("error").sum()
    assert errors == 0
    clip.write_bytes(whole)  # the copy finishes: the very bytes the night planned
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "failed before" not in again.stderr
    assert last_run(out)["videos_done"] == 1
    assert answers(out).video_id.nunique() == 2


@pytest.mark.allow_error_logs
def test_a_video_that_failed_only_for_a_prompt_since_dropped_is_done_for_the_prompts_asked(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = make_night(tmp_path / "videos", n_videos=1, n_frames=3)
    out = tmp_path / "out"
    too_long = " ".join(["tell me about the colours"] * 700)  # more than model.n_ctx for every frame
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(f"- Describe this frame.\n- {too_long}\n")
    args = [a for a in night_args(folder, out, tiny_model_dir, tmp_path) if not a.startswith("prompts=")]
    first = run_cli(*args, f"prompts_file={prompts}")
    assert first.returncode == 3, first.stderr
    assert "failed" in first.stderr and "needs" in first.stderr
    # The long prompt is dropped: what is asked now is all answered, and the video is done.
    dropped = run_cli(*args, "prompt=Describe this frame.")
    assert dropped.returncode == 0, dropped.stderr
    assert "failed before" not in dropped.stderr
    record = last_run(out)
    assert (record["videos_done"], record["videos_failed"]) == (1, 0)
    assert record["frames"] == 0  # every answer it needs was committed by the first night
    # Asked again, the long prompt's failure holds the video back as before.
    again = run_cli(*args, f"prompts_file={prompts}")
    assert again.returncode == 0 and "1 failed before" in again.stderr, again.stderr


@pytest.mark.allow_error_logs
def test_a_path_that_vanished_and_is_found_no_more_loses_its_error_record(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=3)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    # Another night's input that names nothing: its record is not this night's to judge.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "list.txt").write_text("gone.mp4\n")
    listed = run_cli(*[f"video={elsewhere / 'list.txt'}" if a.startswith("video=") else a for a in args])
    assert listed.returncode == 3, listed.stderr
    marker, release = tmp_path / "planned", tmp_path / "go"
    run = start_paused_run(args, "run", marker, release)
    try:
        wait_for_pause(run, marker)
        (folder / "v1.mp4").rename(folder / "renamed.mp4")  # planned, then renamed
        release.touch()
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            kill(run)
    assert run.returncode == 2 and f"vanished or missing: {folder / 'v1.mp4'}" in stderr, stderr
    night = run_cli(*args)
    assert night.returncode == 0, night.stderr
    assert f"{folder / 'v1.mp4'} is no longer there: its earlier error record is removed" in night.stderr
    assert "failed before" not in night.stderr
    records = pd.read_parquet(out).query("status == 'error'")
    assert list(records.error) == [f"vanished or missing: {elsewhere / 'gone.mp4'}"]
    shown = run_cli("status", f"output_dir={out}").stdout
    assert "2 done, 1 failing" in shown and f"{folder / 'v1.mp4'}" not in shown, shown
