"""Conveniences of a run (issue 16, point 10): a time window per video, a model pair named by
its files, a dry run; and what of them goes into ``config_id``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.caption.tiny import ensure_tiny_model
from pipeline.store import read_metadata
from tests.conftest import SAMPLE_VIDEO, assert_one_line_error, last_run, make_night, run_cli, write_video


def test_a_window_takes_a_whole_runs_samples_there_and_a_wider_run_adds_the_rest(
    cli_base: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    window = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "start_s=2", "end_s=4")
    assert window.returncode == 0, window.stderr
    assert sorted(pd.read_parquet(out).frame_index) == [50, 75]  # 25 fps, a frame every second
    whole = run_cli(f"video={SAMPLE_VIDEO}", *cli_base)
    assert whole.returncode == 0, whole.stderr
    assert last_run(out)["frames"] == 4  # 2 s and 3 s were answered already
    assert sorted(pd.read_parquet(out).frame_index) == [0, 25, 50, 75, 100, 125]
    assert pd.read_parquet(out).config_id.nunique() == 1


@pytest.mark.parametrize("window", [["start_s=3", "end_s=2"], ["start_s=2.5", "end_s=2.5"]])
def test_an_empty_window_is_one_line_before_anything_is_written(
    cli_base: list[str], tmp_path: Path, window: list[str]
) -> None:
    for dry_run in ("false", "true"):
        result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, *window, f"dry_run={dry_run}")
        assert_one_line_error(result, 1, f"{' '.join(window)} is an empty window: start_s must be below end_s")
        assert not (tmp_path / "out").exists()  # no lock, no night's record


def test_dry_run_lists_the_work_and_touches_nothing(cli_base: list[str], tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=3, n_frames=20)  # 2.0, 2.1, 2.2 s at 10 fps
    out = tmp_path / "out"
    first = run_cli(f"video={videos / 'v0.mp4'}", *cli_base)
    assert first.returncode == 0, first.stderr
    assert len(pd.read_parquet(out)) == 2  # frames at 0 s and 1 s, as the dry run counts them
    (chunk,) = out.glob("*/part-*.parquet")
    chunk.write_bytes(b"damaged")  # a run would move it aside and redo v0; a dry run touches nothing
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*"))
    # The default model cannot load here (no weights, a CPU build): a dry run does not try.
    dry = run_cli(f"video={videos}", *cli_base, "model=llava16_34b", "dry_run=true", "prompts=[A?,B?]")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "dry run: nothing is captioned or written, and model llava16_34b is not loaded"
    assert lines[1:4] == [
        f"caption  {videos / 'v0.mp4'}: 2 frames, 2 prompts each",  # another model: a new config_id
        f"caption  {videos / 'v1.mp4'}: 3 frames, 2 prompts each",
        f"caption  {videos / 'v2.mp4'}: 3 frames, 2 prompts each",
    ]
    assert lines[4] == f"3 videos, 3 to caption: 8 frames, 16 questions -> {out}"
    # Without the model's files (a dry run fetches nothing) no video can be known done with them.
    assert lines[5].startswith("model llava16_34b's files are not here: a run fetches them first")
    same_model = run_cli(f"video={videos}", *cli_base, "dry_run=true", "sampler=scene")
    scene = f"caption  {videos / 'v1.mp4'}: frames known once decoded (sampler=scene), 1 prompt each"
    assert scene in same_model.stdout
    copy = tmp_path / "copy of v1.mp4"
    copy.write_bytes((videos / "v1.mp4").read_bytes())
    again = run_cli(f"video=[{videos},{copy}]", *cli_base, "dry_run=true")
    assert f"skip     {videos / 'v0.mp4'}: done" in again.stdout
    assert f"skip     {copy}: same content as {videos / 'v1.mp4'}" in again.stdout
    assert f"caption  {videos / 'v2.mp4'}: 3 frames, 1 prompt each" in again.stdout
    waiting = run_cli(f"video={videos}", *cli_base, "dry_run=true", "min_age_s=300")
    assert f"wait     {videos / 'v1.mp4'}: modified" in waiting.stdout
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    elsewhere = run_cli(f"video={videos}", *cli_base, "dry_run=true", f"output_dir={tmp_path / 'new'}")
    assert elsewhere.returncode == 0 and not (tmp_path / "new").exists()
    # The real run does what the dry run left alone: the damaged chunk goes aside, v0 is redone.
    real = run_cli(f"video={videos}", *cli_base)
    assert real.returncode == 0, real.stderr
    assert not chunk.exists() and (out / "_quarantine" / chunk.parent.name / chunk.name).exists()


def test_a_model_pair_named_by_its_files(tiny_model_dir: Path, cli_base: list[str], tmp_path: Path) -> None:
    text, mmproj = ensure_tiny_model(tiny_model_dir)
    pair = [f"model.text={text}", f"model.mmproj={mmproj}", "model.n_gpu_layers=0", "max_frames=1"]
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "model=llava16_mistral_7b", *pair)
    assert result.returncode == 0, result.stderr
    (part,) = (tmp_path / "out").glob("*/part-*.parquet")
    assert read_metadata(part)["model_files"] == {"text_model": str(text), "mmproj": str(mmproj)}
    df = pd.read_parquet(tmp_path / "out")
    assert list(df.model) == ["llava16_mistral_7b"] and (df.status == "ok").all()
    missing = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"model.text={tmp_path / 'nope.gguf'}")
    assert_one_line_error(missing, 1, f"model.text={tmp_path / 'nope.gguf'} is not a file")


def test_moving_the_weights_does_not_redo_a_night(tiny_model_dir: Path, cli_base: list[str], tmp_path: Path) -> None:
    first = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2")
    assert first.returncode == 0, first.stderr
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved")
    again = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", f"model.dir={moved}")
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr and last_run(tmp_path / "out")["frames"] == 0
    # Another file (by name) is another config: its answers are kept apart.
    text, mmproj = ensure_tiny_model(tiny_model_dir, quantized=True)
    other = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", f"model.text={text}")
    assert other.returncode == 0, other.stderr
    assert pd.read_parquet(tmp_path / "out").config_id.nunique() == 2
    # The same weights loaded as F16 (model.text_type) are the same config.
    as_f16 = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", f"model.text={text}", "model.text_type=f16",
                     f"model.dir={moved}")
    assert as_f16.returncode == 0, as_f16.stderr
    assert "nothing to do" in as_f16.stderr and last_run(tmp_path / "out")["frames"] == 0


@pytest.mark.allow_error_logs
def test_a_prompt_too_long_for_the_context_fails_alone(cli_base: list[str], tmp_path: Path) -> None:
    """One prompt that cannot fit model.n_ctx fails on its own, named, with the setting as set
    (llama.cpp rounds 1600 up to more cells); the prompt that fits is answered."""
    video = write_video(tmp_path / "clip.mp4", n_frames=10)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is shown?\n" + "describe " * 1300 + "\n")
    result = run_cli(f"video={video}", *cli_base, "model.n_ctx=1600", f"prompts_file={prompts}")
    assert result.returncode == 3, result.stderr  # its only video has failed answers
    assert "prompt 2 ('describe describe" in result.stderr and "model.n_ctx=1600" in result.stderr
    rows = pd.read_parquet(tmp_path / "out")
    frames = rows[rows.frame_index.notna()]
    short, long = frames[frames.prompt == "What is shown?"], frames[frames.prompt != "What is shown?"]
    assert len(short) == 1 and (short.status == "ok").all() and short.answer.str.len().gt(0).all()
    assert len(long) == 1 and (long.status == "error").all()
    assert long.error.str.startswith("prompt 2 ('describe describe").all()
    assert long.error.str.contains(r"cells of model\.n_ctx=1600").all()
