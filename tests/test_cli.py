"""End to end through ``python -m pipeline`` on the tiny model: no mocks, real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pandas as pd
import pytest

from pipeline.caption import GPU_INSTALL_COMMAND
from pipeline.caption.tiny import ensure_tiny_model
from pipeline.decode import VideoReader
from pipeline.errors import WeightsError
from pipeline.presets import captioner_from_preset
from pipeline.store import read_metadata
from tests.conftest import (
    ROOT,
    RUN_TIMEOUT_S,
    SAMPLE_VIDEO,
    assert_one_line_error,
    cli_env,
    last_run,
    run_cli,
    write_video,
    write_wav,
)


def container_times(path: Path) -> dict[int, float]:
    with VideoReader(path) as reader:
        return {t.index: t.timestamp_s for t in reader}


def test_two_prompts_at_half_second_interval(cli_base: list[str], tmp_path: Path) -> None:
    result = run_cli(
        f"video={SAMPLE_VIDEO}",
        *cli_base,
        "prompts=[What is shown?,What colors dominate?]",
        "sampler.interval_s=0.5",
    )
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "out")
    times = container_times(SAMPLE_VIDEO)
    frames = sorted(df.frame_index.unique())
    assert len(frames) == 12  # 6 s at one frame every 0.5 s
    assert len(df) == 2 * len(frames)
    assert set(df.prompt) == {"What is shown?", "What colors dominate?"}
    assert df.groupby("frame_index").prompt_id.nunique().eq(2).all()
    for row in df.itertuples():
        assert abs(row.timestamp_s - times[row.frame_index]) < 1e-3
        assert abs(row.timestamp_s - 0.5 * frames.index(row.frame_index)) < 0.021
    assert (df.status == "ok").all() and df.answer.str.len().gt(0).all()
    # 640x360 frames: 1,948 image tokens in the reference layout (tests/test_layout.py), plus the text.
    assert df.completion_tokens.between(1, 8).all() and df.prompt_tokens.between(1948 + 20, 1948 + 40).all()
    assert set(df.columns) >= {
        "video_path", "video_id", "frame_index", "timestamp_s", "timecode", "prompt_id",
        "prompt", "answer", "model", "status", "error", "prompt_tokens", "completion_tokens",
        "latency_ms",
    }
    (part,) = (tmp_path / "out").glob("*/*.parquet")
    meta = read_metadata(part)
    assert meta["config"]["model"]["name"] == "tiny"
    assert meta["model_files"]["mmproj"].endswith(".gguf")
    assert "llama-cpp-python" in meta["versions"]


def test_single_prompt_and_default_interval(cli_base: list[str], tmp_path: Path) -> None:
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "prompt=Is it day or night?")
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert list(df.frame_index) == [0, 25, 50, 75, 100, 125]
    assert set(df.prompt) == {"Is it day or night?"}


def test_cfg_job_works(tmp_path: Path) -> None:
    shown = run_cli("--cfg", "job", "model=tiny", "video=x.mp4")
    assert shown.returncode == 0 and "chat_format: chatml" in shown.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model=llava99"], "unknown model=llava99; choose one of"),
        (["sampler=sometimes"], "unknown sampler=sometimes"),
        (["sampler.interval_s=-1"], "sampler.interval_s=-1 is out of range: sampler.interval_s must be >= 0.001"),
        (["video=/nonexistent/clip.mp4"], "does not exist"),
        (["engine.parallel=0"], "engine.parallel=0 is out of range: engine.parallel must be >= 1"),
    ],
)
def test_bad_config_is_one_line(cli_base: list[str], args: list[str], needle: str) -> None:
    video = [] if any(arg.startswith("video=") for arg in args) else [f"video={SAMPLE_VIDEO}"]
    result = run_cli(*video, *cli_base, *args)
    assert_one_line_error(result, 1, needle)


def test_not_a_video_is_an_error_record(cli_base: list[str], tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video")
    result = run_cli(f"video={bogus}", *cli_base)
    assert_one_line_error(result, 3, "not a readable video", str(bogus))  # the only video failed
    df = pd.read_parquet(tmp_path / "out")
    assert list(df.status) == ["error"] and "not a readable video" in df.error[0]


def test_missing_weights_offline(tmp_path: Path) -> None:
    result = run_cli(
        f"video={SAMPLE_VIDEO}", "model=llava16_mistral_7b", f"model.dir={tmp_path}", "model.n_gpu_layers=0",
        f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert_one_line_error(result, 1, "llava-v1.6-mistral-7b.Q5_K_M.gguf", str(tmp_path), "huggingface.co")


def test_mismatched_mmproj_fails_before_any_frame(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.test_caption import write_projector

    models = tmp_path / "models"
    models.mkdir()
    (models / "llava-v1.6-mistral-7b.Q5_K_M.gguf").symlink_to(ensure_tiny_model(tiny_model_dir)[0])
    write_projector(models / "mmproj-model-f16.gguf", out_dims=4096)
    out = tmp_path / "out"
    first = run_cli(f"video={SAMPLE_VIDEO}", "model=tiny", f"model.dir={tiny_model_dir}",
                    f"output_dir={out}", "max_frames=1", "generation.max_tokens=4",
                    f"hydra.run.dir={tmp_path / 'h1'}")
    assert first.returncode == 0, first.stderr
    before = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    result = run_cli(
        f"video={SAMPLE_VIDEO}", "model=llava16_mistral_7b", f"model.dir={models}", "model.n_gpu_layers=0",
        f"output_dir={out}", f"hydra.run.dir={tmp_path / 'h2'}",
    )
    assert_one_line_error(result, 1, "projects to 4096 dims but text model")
    assert {p: p.read_bytes() for p in out.rglob("*.parquet")} == before


def test_unwritable_output_dir(cli_base: list[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"output_dir={blocker / 'out'}")
    assert_one_line_error(result, 1, f"into {blocker / 'out'} ({blocker} is a file, not a folder)")


def test_generated_clip_with_odd_frame_rate(cli_base: list[str], tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", n_frames=15, fps=7.5)
    result = run_cli(f"video={clip}", *cli_base, "sampler=all")
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert list(df.frame_index) == list(range(15))
    assert df.timestamp_s.tolist() == pytest.approx([i / 7.5 for i in range(15)], abs=1e-3)


def test_configs_found_outside_the_checkout(tmp_path: Path) -> None:
    # From another folder, `pipeline` is the installed package (a non-editable install
    # carries conf/ inside it); the composed config must still be there.
    result = run_cli("--cfg", "job", "model=llava16_mistral_7b", "video=x.mp4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chat_format: mistral" in result.stdout


def test_layers_on_a_gpu_with_a_cpu_build_name_the_reinstall(cli_base: list[str], tmp_path: Path) -> None:
    # This machine's llama-cpp-python is a CPU build (llama_supports_gpu_offload() is False).
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "model.n_gpu_layers=-1")
    assert_one_line_error(result, 1, "model.n_gpu_layers=-1", GPU_INSTALL_COMMAND, "model.n_gpu_layers=0")
    assert not list(tmp_path.rglob("*.parquet"))
    # The command named is the README's GPU install line, as written there.
    assert GPU_INSTALL_COMMAND in (ROOT / "README.md").read_text()
    # model.n_gpu_layers=0 (the tiny preset's own setting) runs on the CPU.
    assert run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "model.n_gpu_layers=0", "max_frames=1").returncode == 0


@pytest.mark.parametrize("pattern", ["{inbox}", "{inbox}/*.mp4", "{inbox}/**/*.mov"])
def test_an_empty_inbox_is_nothing_to_do(cli_base: list[str], tmp_path: Path, pattern: str) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "notes.txt").write_text("not a video")
    result = run_cli(f"video={pattern.format(inbox=inbox)}", *cli_base)
    assert result.returncode == 0, result.stderr
    assert "nothing to do: no videos in video=" in result.stderr
    summary = last_run(tmp_path / "out")
    assert summary["exit_code"] == 0 and summary["videos"] == []


def test_a_list_of_videos(cli_base: list[str], tmp_path: Path) -> None:
    clips = [write_video(tmp_path / f"clip{i}.mp4", n_frames=5 + i) for i in range(2)]
    result = run_cli(f"video=[{clips[0]},{clips[1]}]", *cli_base, "max_frames=1")
    assert result.returncode == 0, result.stderr
    assert sorted(pd.read_parquet(tmp_path / "out").video_path) == [str(c) for c in clips]


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("max_frames=-3", "max_frames must be >= 1, or null for no cap"),
        ("max_frames=0", "max_frames must be >= 1"),
        ("min_age_s=-5", "min_age_s must be >= 0"),
        ("checkpoint_frames=0", "checkpoint_frames must be >= 1"),
        ("end_s=0", "end_s must be > 0"),
        ("start_s=-1", "start_s must be >= 0"),
        ("generation.top_p=1.5", "generation.top_p must be > 0 and <= 1"),
        ("model.n_gpu_layers=-2", "model.n_gpu_layers must be >= -1"),
        ("progress_interval_s=0", "progress_interval_s must be >= 1 and <= 86400, or null for no progress lines"),
        ("progress_interval_s=0.001", "progress_interval_s must be >= 1 and <= 86400, or null for no"),
    ],
)
def test_a_number_out_of_range_is_refused_before_anything_runs(
    cli_base: list[str], tmp_path: Path, setting: str, needle: str
) -> None:
    for dry_run in ("false", "true"):
        result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, setting, f"dry_run={dry_run}")
        assert_one_line_error(result, 1, f"{setting} is out of range", needle)
    assert not (tmp_path / "out").exists()



def test_each_unreadable_file_says_what_it_is(cli_base: list[str], tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "notes.mp4").write_text("shopping list: milk, eggs\n")
    write_wav(inbox / "voice.mp4")
    data = SAMPLE_VIDEO.read_bytes()
    (inbox / "cut.mp4").write_bytes(data[: len(data) // 2])  # a copy that stopped half way
    (inbox / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    cv2.VideoWriter(str(inbox / "empty.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (64, 48)).release()  # no frame
    result = run_cli(f"video={inbox}", *cli_base)
    assert result.returncode == 3, result.stderr
    errors = dict(zip(*(pd.read_parquet(tmp_path / "out", columns=["video_path", "error"]).to_dict("list").values())))
    reasons = {Path(path).name: error for path, error in errors.items()}
    assert "(a text file" in reasons["notes.mp4"]
    assert "(an audio file, WAV: no video stream" in reasons["voice.mp4"]
    assert "(an MP4/MOV file cut short or damaged: its index, the moov box, is missing" in reasons["cut.mp4"]
    assert "(not a media file" in reasons["noise.mp4"]
    assert "(an MP4/MOV file with no tracks: a recording that stopped before its first frame" in reasons["empty.mp4"]
    # FFmpeg's own words are in the error record and its log line, never bare on the console.
    assert "; FFmpeg said: moov atom not found)" in reasons["cut.mp4"]
    assert re.search(r"^\[\d\d:\d\d:\d\d WARNING\] failed .*cut\.mp4: .*FFmpeg said: moov atom", result.stderr, re.M)
    assert all(re.match(r"\[\d\d:\d\d:\d\d [A-Z]+\] ", line) for line in result.stderr.splitlines()), result.stderr
    assert "OPENCV" not in result.stderr + result.stdout


def test_fresh_files_wait_and_the_message_says_how_to_take_them(cli_base: list[str], tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_video(inbox / "old.mp4", n_frames=5)
    (inbox / "bad.mp4").write_text("not a video")
    first = run_cli(f"video={inbox}", *cli_base, "max_frames=1")
    assert first.returncode == 2, first.stderr
    hour_ago = time.time() - 3600
    for settled in inbox.iterdir():
        os.utime(settled, (hour_ago, hour_ago))
    write_video(inbox / "new.mp4", n_frames=6)  # just copied in: younger than min_age_s
    result = run_cli(f"video={inbox}", *cli_base, "max_frames=1", "min_age_s=600")
    assert result.returncode == 0, result.stderr
    # "already done" counts the done video only, not the one that failed before.
    assert f"nothing to do: 1 video already done, 1 failed before, 1 waiting in {tmp_path / 'out'}" in result.stderr
    (waiting,) = [line for line in result.stderr.splitlines() if "1 video waiting: " in line]
    assert "min_age_s=600 s" in waiting and "min_age_s=0 takes it now" in waiting
    assert "1 video failed in earlier runs; retry_failed=true tries it again" in result.stderr


def test_a_dry_run_counts_the_prompts_that_would_be_asked(cli_base: list[str], tmp_path: Path) -> None:
    first = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", "prompt=What is shown?")
    assert first.returncode == 0, first.stderr
    both = "prompts=[What is shown?,Which colours?]"
    plan = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", both, "dry_run=true")
    assert plan.returncode == 0, plan.stderr
    assert "2 frames, 1 prompt each (1 of 2 answered before)" in plan.stdout
    assert plan.stdout.strip().splitlines()[-1].startswith("1 video, 1 to caption: 2 frames, 2 questions -> ")
    three = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=3", both, "dry_run=true")
    assert "3 frames, 4 questions (prompts answered before are not asked again)" in three.stdout


def test_counts_of_one_are_singular(cli_base: list[str], tmp_path: Path) -> None:
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=1")
    assert result.returncode == 0, result.stderr
    assert re.search(r"done .*sample\.mp4: 1 frame captioned, 0 already done, 1 row, ", result.stderr)
    assert "; 1 frame in " in result.stderr
    assert "1 of 1 video to caption; loading model tiny" in result.stderr


def run_in(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` from ``cwd`` with this checkout's code (and ``env`` added)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=cli_env(PYTHONPATH=str(ROOT), **env),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("output_dir=", "output_dir= is empty (an unset variable?); give the folder for the results"),
        ("output_dir=  ", "output_dir= is empty (an unset variable?)"),
        ("model.dir=", "model.dir= is empty (an unset variable?); give the weights' folder, or model.dir=null"),
        ("model.text=", "model.text= is empty (an unset variable?); give a text-model GGUF file, or model.text=null"),
        ("model.mmproj=", "model.mmproj= is empty (an unset variable?)"),
        ("model.text_file=", "model.text_file= is empty (an unset variable?)"),
        ("prompts_file=", "prompts_file= is empty (an unset variable?)"),
    ],
)
def test_an_empty_path_is_refused_and_nothing_lands_in_the_working_folder(
    tiny_model_dir: Path, tmp_path: Path, setting: str, needle: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for dry_run in ("false", "true"):
        result = run_in(
            work, f"video={SAMPLE_VIDEO}", "model=tiny", f"model.dir={tiny_model_dir}",
            f"output_dir={tmp_path / 'out'}", "max_frames=1", "generation.max_tokens=4", setting, f"dry_run={dry_run}",
        )
        assert_one_line_error(result, 1, needle)
        assert list(work.iterdir()) == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        (["start_s=5", "end_s=1"], "start_s=5 end_s=1 is an empty window"),
        (["export=xyz"], "unknown export format 'xyz'; choose from vtt, srt, jsonl, csv or all"),
        (["thumbnails.quality=500"], "thumbnails.quality=500 is out of range: thumbnails.quality must be >= 1 and"),
        (["thumbnails.quality=0"], "thumbnails.quality=0 is out of range: thumbnails.quality must be >= 1 and <= 100"),
        (["thumbnails.long_side_px=0"], "thumbnails.long_side_px=0 is out of range: thumbnails.long_side_px must be"),
        (["model.text={tmp}/nope.gguf"], "model.text={tmp}/nope.gguf is not a file; give the path of a GGUF file"),
        *[([f"{key}={{tmp}}/{'d' * 300}/x"], f"{key}={{tmp}}/{'d' * 300}/x: File name too long; choose another {key}")
          for key in ("output_dir", "model.dir", "model.text", "prompts_file")],  # a dry run crashed on them
    ],
)
def test_a_bad_setting_is_refused_alike_by_a_dry_run_and_before_the_night_is_recorded(
    cli_base: list[str], tmp_path: Path, settings: list[str], needle: str
) -> None:
    settings = [s.format(tmp=tmp_path) for s in settings]
    for dry_run in ("false", "true"):
        result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, *settings, f"dry_run={dry_run}")
        assert_one_line_error(result, 1, needle.format(tmp=tmp_path))
        assert not (tmp_path / "out").exists()  # no lock taken, no _last_run.json replaced


@pytest.mark.parametrize("where", ["model.dir", "output_dir", "cache", "cache/sub"])
def test_a_file_where_a_folder_must_be_is_one_line_naming_it(
    cli_base: list[str], tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = [a for a in cli_base if not a.startswith(("model.dir=", "output_dir="))]
    folder = blocker / "sub" if where.endswith("/sub") else blocker
    env = {"VIDEO_CAPTION_CACHE": str(folder)} if where.startswith("cache") else {}
    setting = [f"{where}={blocker}"] if not env else []
    out = [] if where == "output_dir" else [f"output_dir={tmp_path / 'out'}"]
    for dry_run in ("false", "true"):
        result = run_in(ROOT, f"video={SAMPLE_VIDEO}", *args, *out, *setting, f"dry_run={dry_run}", **env)
        assert_one_line_error(result, 1, f"into {folder} ({blocker} is a file, not a folder): that must be a writable")
        assert "crashed" not in result.stderr and not (tmp_path / "out").exists()
        if env:
            assert "set VIDEO_CAPTION_CACHE to a writable folder" in result.stderr


def test_download_into_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for env, setting in (({}, [f"model.dir={blocker}"]), ({"VIDEO_CAPTION_CACHE": str(blocker)}, [])):
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.download", "model=tiny", *setting], cwd=ROOT, env=cli_env(**env),
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )
        assert_one_line_error(result, 1, f"into {blocker} ({blocker} is a file, not a folder)")
        assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_the_library_says_the_same_of_a_file_where_a_folder_must_be(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for folder in (blocker, blocker / "tiny"):
        with pytest.raises(WeightsError, match=re.escape(f"({blocker} is a file, not a folder)")):
            captioner_from_preset("tiny", f"model.dir={folder}")


@pytest.mark.parametrize(
    ("videos", "code", "needle"),
    [
        (["{tmp}/notes.mp4"], 3, "the sweep failed: job 0 exited 3"),
        (["{tmp}/missing.mp4", "{sample}"], 1, "the sweep failed: job 0 exited 1"),
    ],
)
def test_a_failed_sweep_is_one_line_and_its_jobs_code(
    cli_base: list[str], tmp_path: Path, videos: list[str], code: int, needle: str
) -> None:
    (tmp_path / "notes.mp4").write_text("not a video")
    sweep = ",".join(v.format(tmp=tmp_path, sample=SAMPLE_VIDEO) for v in videos)
    result = run_cli("-m", f"video={sweep}", *cli_base, "max_frames=1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_one_line_error(result, code, needle)
    assert "JobFailed" not in result.stderr and "Error executing job" not in result.stderr
    if len(videos) == 2:  # the next jobs ran all the same
        assert list(pd.read_parquet(tmp_path / "out").video_path) == [str(SAMPLE_VIDEO)]


def test_a_failed_job_of_a_launcher_is_one_line_of_ours_and_its_code(cli_base: list[str], tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("not a video")
    result = run_cli(
        "-m", "hydra/launcher=submitit_local", f"video={tmp_path / 'notes.mp4'}", *cli_base, "max_frames=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.launcher.timeout_min=5",
    )
    assert_one_line_error(result, 3, "the sweep failed: job 0 exited 3; its log says why")
    assert "Traceback" not in result.stderr and "JobFailed" not in result.stderr
