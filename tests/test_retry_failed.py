"""``retry_failed=true`` keeps what a night has not retried: a video's old error record goes as
the run writes its new outcome, so a night that ends after its plan (a setting the model
refuses once loaded, a signal) leaves the records (and ``status`` still lists them), and a
retry that fails again leaves one record, not two."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.store import read_results
from tests.conftest import (
    ROOT,
    RUN_TIMEOUT_S,
    assert_one_line_error,
    cli_env,
    last_run,
    night_args,
    run_cli,
    start_paused_run,
    wait_for_pause,
    write_video,
)


def night(tmp_path: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """A tiny night over ``videos/`` into ``out/`` (a frame a video, short answers)."""
    return run_cli(*night_args(tmp_path / "videos", tmp_path / "out", model_dir, tmp_path, max_tokens=4),
                   "max_frames=1", *extra)


def failing(out: Path) -> tuple[str, list[str]]:
    """What ``python -m pipeline.status output_dir=OUT`` says is failing: how many, and the list."""
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline.status", f"output_dir={out}"], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    videos = lines[next(i for i, line in enumerate(lines) if line.startswith("Videos")):]
    videos = videos[:videos.index("")]
    count = videos[0].split(", ")[1]
    return count, [line for line in videos[1:] if line.startswith("    ")]


@pytest.mark.allow_error_logs
def test_a_retry_refused_for_its_n_ctx_keeps_the_error_records(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    write_video(videos / "good.mp4", n_frames=3)
    (videos / "bad.mp4").write_text("hello\n")
    first = night(tmp_path, tiny_model_dir)
    assert first.returncode == 2, first.stderr
    records = sorted(out.glob("*/errors-*.parquet"))
    assert len(records) == 1
    before, record = failing(out), last_run(out)
    assert before[0] == "1 failing" and before[1][0].startswith(f"    {videos / 'bad.mp4'}: ")

    retry = night(tmp_path, tiny_model_dir, "retry_failed=true", "model.n_ctx=512")
    assert_one_line_error(retry, 1, "no frame fits", "model.n_ctx")  # known once the model is loaded
    assert sorted(out.glob("*/errors-*.parquet")) == records
    assert failing(out) == before
    assert last_run(out) != record and last_run(out)["videos_failed"] == 0  # the refused night, recorded as it was
    errors = read_results(out)
    assert errors[errors.frame_index.isna()].video_path.tolist() == [str(videos / "bad.mp4")]


def failed_night(tmp_path: Path, model_dir: Path) -> tuple[list[Path], tuple[str, list[str]]]:
    """A night over a good video and a text file named like one: the error record it leaves
    and what status says of it."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    write_video(videos / "good.mp4", n_frames=3)
    (videos / "bad.mp4").write_text("hello\n")
    assert night(tmp_path, model_dir).returncode == 2
    records = sorted(out.glob("*/errors-*.parquet"))
    assert len(records) == 1 and failing(out)[0] == "1 failing"
    return records, failing(out)


@pytest.mark.allow_error_logs
def test_a_retry_stopped_after_its_plan_keeps_the_error_records(tiny_model_dir: Path, tmp_path: Path) -> None:
    records, before = failed_night(tmp_path, tiny_model_dir)
    marker = tmp_path / "paused"
    args = night_args(tmp_path / "videos", tmp_path / "out", tiny_model_dir, tmp_path, max_tokens=4)
    retry = start_paused_run([*args, "max_frames=1", "retry_failed=true"], "run", marker)
    wait_for_pause(retry, marker)  # planned, the model loaded; nothing retried yet
    retry.send_signal(signal.SIGTERM)
    assert retry.wait(timeout=RUN_TIMEOUT_S) == 143
    assert sorted((tmp_path / "out").glob("*/errors-*.parquet")) == records
    assert failing(tmp_path / "out") == before


@pytest.mark.allow_error_logs
def test_a_retry_the_engine_refuses_after_the_plan_keeps_the_error_records(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A prompt too long for any frame is known only once the model's tokenizer is loaded."""
    records, before = failed_night(tmp_path, tiny_model_dir)
    long = "describe every corner of this frame " * 600
    retry = night(tmp_path, tiny_model_dir, "retry_failed=true", f"prompt={long}")
    assert_one_line_error(retry, 1, "no frame fits: even the smallest needs", "shorten the prompts")
    assert sorted((tmp_path / "out").glob("*/errors-*.parquet")) == records
    assert failing(tmp_path / "out") == before


@pytest.mark.allow_error_logs
def test_a_retry_that_fails_again_leaves_one_new_record(tiny_model_dir: Path, tmp_path: Path) -> None:
    (old,), before = failed_night(tmp_path, tiny_model_dir)
    retry = night(tmp_path, tiny_model_dir, "retry_failed=true")
    assert retry.returncode == 3, retry.stderr  # the one video it tried failed again
    (new,) = sorted((tmp_path / "out").glob("*/errors-*.parquet"))
    assert new != old and new.parent == old.parent  # written again by the retry, the old one gone
    assert failing(tmp_path / "out") == before
