"""Nightly runs never lose work: kills, bad files, the lock, a full disk, no-op re-runs."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.caption import Question
from pipeline.caption.tiny import TINY_MMPROJ_FILE, TINY_TEXT_FILE
from pipeline.config import compose_config
from pipeline.executors.local import LocalExecutor
from pipeline.inputs import find_videos
from pipeline.presets import captioner_from_config
from pipeline.run import Pipeline
from pipeline.sampling import AllSampler
from tests.conftest import (
    KEY,
    PROMPTS,
    SAMPLE_VIDEO,
    answers,
    assert_no_key_twice,
    assert_one_line_error,
    kill,
    last_run,
    make_night,
    mount_tmpfs,
    night_args,
    run_cli,
    start_paused_run,
    wait_for_pause,
    write_video,
    write_wav,
)


@pytest.fixture(scope="module")
def night(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted reference run over a small night."""
    tmp = tmp_path_factory.mktemp("night")
    videos = make_night(tmp / "videos")
    out = tmp / "out"
    result = run_cli(*night_args(videos, out, tiny_model_dir, tmp))
    assert result.returncode == 0, result.stderr
    return {"videos": videos, "out": out, "answers": answers(out), "tmp": tmp}


def chunk_count(out: Path) -> int:
    return len(list(out.glob("*/part-*.parquet"))) if out.exists() else 0


def test_sigkill_at_random_moments_then_resume(night: dict[str, Any], tiny_model_dir: Path, tmp_path: Path) -> None:
    # Each run is killed while it waits at a point chosen at random: before or in the middle
    # of writing the chunk that follows 0, 1 or 2 new ones, while the engine goes on with the
    # next frames. A night needs 27 chunks; 10 kills commit at most 20, so every run is
    # killed mid-night, however fast or slow the machine.
    out = tmp_path / "out"
    args = night_args(night["videos"], out, tiny_model_dir, tmp_path)
    rng = random.Random(7)
    for kills in range(10):
        before = chunk_count(out)
        new_chunks, moment = rng.choice([0, 1, 2]), rng.choice(["before", "during"])
        marker = tmp_path / f"paused-{kills}"
        process = start_paused_run(args, f"commit:{new_chunks}:{moment}", marker)
        wait_for_pause(process, marker)
        kill(process)
        assert chunk_count(out) == before + new_chunks
        partial = pd.read_parquet(out) if chunk_count(out) else None
        assert partial is None or not partial.duplicated(KEY).any()
    assert 0 < chunk_count(out)
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    resumed = answers(out)
    reference = night["answers"]
    assert not resumed.duplicated(KEY).any()
    assert resumed[KEY].equals(reference[KEY])
    assert resumed.answer.tolist() == reference.answer.tolist()


def test_rerun_of_a_finished_night_is_a_no_op_that_loads_no_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=3, n_frames=4)
    models = tmp_path / "models"
    models.mkdir()
    for name in (TINY_TEXT_FILE, TINY_MMPROJ_FILE):
        shutil.copy(tiny_model_dir / name, models / name)
    out = tmp_path / "out"
    args = night_args(videos, out, models, tmp_path)
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in out.rglob("*.parquet"))
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stderr and "loading model" not in result.stderr
    assert sorted(p.name for p in out.rglob("*.parquet")) == before
    summary = last_run(out)
    assert summary["videos_skipped"] == 3 and summary["frames"] == 0
    assert summary["workers"] == [] and summary["engines"] == []
    # Other bytes under the same names are another model (here none at all): not "done".
    for name in (TINY_TEXT_FILE, TINY_MMPROJ_FILE):
        (models / name).write_bytes(b"not a model")
    replaced = run_cli(*args)
    assert "nothing to do" not in replaced.stderr
    assert_one_line_error(replaced, 1, "not a readable GGUF file", TINY_TEXT_FILE)


def test_renamed_file_is_not_redone_and_changed_prompt_redoes_only_it(
    night: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(night["out"], out)
    renamed = tmp_path / "videos"
    shutil.copytree(night["videos"], renamed)
    (renamed / "v0.mp4").rename(renamed / "renamed.mp4")
    args = night_args(renamed, out, tiny_model_dir, tmp_path)
    assert "nothing to do" in run_cli(*args).stderr
    result = run_cli(*[a if a != PROMPTS else "prompts=[What is shown?,Anyone there?]" for a in args])
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(out)
    assert not df.duplicated(KEY).any()
    old = night["answers"]
    assert set(df.prompt) == {"What is shown?", "Which colours?", "Anyone there?"}
    assert (df.prompt == "Anyone there?").sum() == (old.prompt == "What is shown?").sum()


def test_adding_a_prompt_asks_the_model_only_that_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = compose_config(["model=tiny", f"model.dir={tiny_model_dir}", "video=x", "generation.max_tokens=8"])
    out = tmp_path / "out"
    asked: list[object] = []
    with captioner_from_config(cfg, max_questions=3) as captioner:
        prompts = ["What is shown?", "Which colours?"]
        first = Pipeline(AllSampler(), prompts, out, "c", prefetch_frames=8, checkpoint_frames=32, max_frames=4)
        first.run(first.plan([SAMPLE_VIDEO]), LocalExecutor(captioner))
        run = captioner.engine.run

        def spy(jobs: Iterable[tuple[Any, ...]], questions: list[Question]) -> Iterator[Any]:
            def seen() -> Iterator[tuple[Any, ...]]:
                for job in jobs:
                    asked.append(job[2] if len(job) == 3 else None)
                    yield job

            return run(seen(), questions)

        captioner.engine.run = spy  # type: ignore[method-assign]
        second = Pipeline(
            AllSampler(), [*prompts, "Anyone there?"], out, "c", prefetch_frames=8, checkpoint_frames=32, max_frames=4
        )
        second.run(second.plan([SAMPLE_VIDEO]), LocalExecutor(captioner))
    assert asked == [(2,)] * 4
    df = pd.read_parquet(out)
    assert not df.duplicated(KEY).any()
    assert df.groupby("frame_index").prompt.nunique().tolist() == [3] * 4



@pytest.mark.allow_error_logs
def test_folder_with_every_kind_of_bad_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=6)
    (folder / "empty.mp4").write_bytes(b"")
    good = write_video(tmp_path / "whole.mp4", n_frames=30)
    (folder / "no_index.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (folder / "notes.mp4").write_text("not a video at all")
    write_wav(folder / "audio_only.wav")
    (folder / "folder.mp4").mkdir()
    avi = write_video(tmp_path / "whole.avi", n_frames=60, fourcc="MJPG")
    (folder / "cut_mid_stream.avi").write_bytes(avi.read_bytes()[: int(avi.stat().st_size * 0.6)])
    out = tmp_path / "out"
    result = run_cli(
        f"video={folder}", "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={out}",
        "generation.max_tokens=4", "sampler=all", "video_extensions=[.mp4,.avi,.wav]",
        f"hydra.run.dir={tmp_path / 'hydra'}", "min_age_s=0",
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    df = pd.read_parquet(out)
    errors = df[df.frame_index.isna()].set_index(df[df.frame_index.isna()].video_path.map(lambda p: Path(p).name))
    assert set(errors.index) == {"empty.mp4", "no_index.mp4", "notes.mp4", "audio_only.wav", "folder.mp4"}
    assert "empty file" in errors.error["empty.mp4"]
    assert "is a directory" in errors.error["folder.mp4"]
    for name in ("no_index.mp4", "notes.mp4", "audio_only.wav"):
        assert "not a readable video" in errors.error[name] or "no video stream" in errors.error[name]
    ok = df[df.status == "ok"]
    frames_answered = ok.groupby(ok.video_path.map(lambda p: Path(p).name)).frame_index.nunique().to_dict()
    # The AVI cut without its index decodes, as in ffmpeg, up to where its data ends: a stream
    # ends where decoding ends (its header's count of 60 frames is no promise).
    assert 0 < frames_answered.pop("cut_mid_stream.avi") < 60
    assert frames_answered == {"v0.mp4": 6, "v1.mp4": 7}
    summary = last_run(out)
    assert summary["videos_failed"] == 5 and summary["exit_code"] == 2


@pytest.mark.allow_error_logs
def test_vanished_file_and_retry_failed(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=2, n_frames=4)
    out = tmp_path / "out"
    out.mkdir()
    cfg = compose_config(["model=tiny", f"model.dir={tiny_model_dir}", "video=x", "generation.max_tokens=4"])
    pipeline = Pipeline(AllSampler(), ["What?"], out, config_id="c1", prefetch_frames=8, checkpoint_frames=32)
    tasks = pipeline.plan(find_videos(str(folder), [".mp4"]))
    moved = (folder / "v1.mp4").rename(tmp_path / "v1.mp4")
    with captioner_from_config(cfg) as captioner:
        summary = pipeline.run(tasks, LocalExecutor(captioner))
    assert [v.status for v in summary.videos] == ["done", "error"]
    assert "vanished or missing" in (summary.videos[1].error or "")
    # Vanishing is a fact about the path: put back, the file is done (and the record of the
    # path's failure goes), without retry_failed.
    moved.rename(folder / "v1.mp4")
    again = Pipeline(AllSampler(), ["What?"], out, config_id="c1", prefetch_frames=8, checkpoint_frames=32)
    tasks = again.plan(find_videos(str(folder), [".mp4"]))
    assert [t.outcome.status for t in tasks] == ["skipped", "todo"]
    with captioner_from_config(cfg) as captioner:
        again.run(tasks, LocalExecutor(captioner))
    df = pd.read_parquet(out)
    assert (df.status == "ok").sum() == 4 + 5 and not (df.status == "error").any()


def test_second_run_exits_75_and_killed_run_leaves_no_lock(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=2, n_frames=4)
    out = tmp_path / "out"
    args = night_args(videos, out, tiny_model_dir, tmp_path)
    # The first run holds the lock and waits before its first commit until it is killed.
    marker = tmp_path / "paused"
    first = start_paused_run(args, "commit:0:before", marker)
    try:
        wait_for_pause(first, marker)
        second = run_cli(*args)
        assert second.returncode == 75
        (line,) = [line for line in second.stderr.splitlines() if "another run holds" in line]
        assert f'"pid": {first.pid}' in line
        assert first.poll() is None  # the second run did not wait for the first
    finally:
        kill(first)
    third = run_cli(*args)
    assert third.returncode == 0, third.stderr


@pytest.mark.allow_error_logs
def test_disk_full_keeps_committed_chunks_and_rerun_completes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "64k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        videos = make_night(tmp_path / "videos", n_videos=3, n_frames=20)
        out = disk / "out"
        args = night_args(videos, out, tiny_model_dir, tmp_path)
        full = run_cli(*args)
        assert full.returncode == 1, full.stderr
        (line,) = [line for line in full.stderr.splitlines() if "committed results are intact" in line]
        assert "No space left on device" in line and "Traceback" not in full.stderr
        committed = pd.read_parquet(out)
        assert len(committed) > 0 and not committed.duplicated(KEY).any()
        assert_no_key_twice(out)
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
        final = pd.read_parquet(out)
        assert not final.duplicated(KEY).any()
        assert_no_key_twice(out)
        assert len(final) == 2 * (20 + 21 + 22)
        assert final.merge(committed, on=KEY).answer_x.tolist() == final.merge(committed, on=KEY).answer_y.tolist()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_manifest_and_glob_inputs(tmp_path: Path) -> None:
    folder = make_night(tmp_path / "videos", n_videos=3, n_frames=2)
    manifest = tmp_path / "tonight.txt"
    manifest.write_text("# tonight\nvideos/v2.mp4\n\n  # the first\nvideos/v0.mp4\n")
    assert find_videos(str(manifest), [".mp4"]) == [tmp_path / "videos/v2.mp4", tmp_path / "videos/v0.mp4"]
    assert [p.name for p in find_videos(str(folder / "v[01].mp4"), [".mp4"])] == ["v0.mp4", "v1.mp4"]
    assert len(find_videos(str(tmp_path), ["mp4"])) == 3
    assert SAMPLE_VIDEO.exists()
