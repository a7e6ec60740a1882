"""model.text_type: the text weights as they are, or their F16 copy (made once) on a GPU with room."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.caption import Captioner
from pipeline.caption import gpu_fit as fit
from pipeline.caption.tiny import ensure_tiny_model
from pipeline.caption.weights import model_fingerprint, quantized_weights, read_gguf
from pipeline.config import compose_config
from pipeline.errors import WeightsError
from pipeline.presets import captioner_from_config
from tests.conftest import (
    ROOT,
    RUN_TIMEOUT_S,
    assert_one_line_error,
    cli_env,
    frames,
    mount_tmpfs,
    run_cli,
    write_video,
)


def build(model_dir: Path, *overrides: str) -> Captioner:
    """A tiny-model captioner whose files (and any F16 copy) live in ``model_dir``."""
    ensure_tiny_model(model_dir, quantized=True)
    base = ["model=tiny", f"model.dir={model_dir}", "model.quantized=true", "video=x", "generation.max_tokens=8"]
    cfg = compose_config([*base, *overrides])
    return captioner_from_config(cfg, max_questions=3)


def copies(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.F16.gguf"))


def copy_name(source: Path) -> str:
    """The F16 copy's name: the source's stem and content fingerprint."""
    return f"{source.stem}.{model_fingerprint(source)}.F16.gguf"


def test_f16_copy_is_made_once_and_answers(tmp_path: Path) -> None:
    model = build(tmp_path, "model.text_type=f16")
    text = model.files.loaded_text
    assert model.files.text_model == tmp_path / "tiny-llava-text-v2.Q8_0.gguf"  # the user's file, as found
    assert text.name == copy_name(model.files.text_model) and text.parent == tmp_path
    matrices = Counter(t.tensor_type.name for t in read_gguf(text).tensors if len(t.shape) > 1)
    assert set(matrices) == {"F16"} and not quantized_weights(text)
    assert model.engine.settings.text_model == str(text)
    with model:
        assert model.answer(frames(1, seed=0)[0], "What is shown?")
    written = text.stat().st_mtime_ns
    again = build(tmp_path, "model.text_type=f16")
    assert again.files.loaded_text == text and text.stat().st_mtime_ns == written
    assert copies(tmp_path) == [text]


def test_keep_and_float_weights_load_the_file_as_it_is(tmp_path: Path) -> None:
    assert build(tmp_path, "model.text_type=keep").files.loaded_text.name == "tiny-llava-text-v2.Q8_0.gguf"
    plain = build(tmp_path, "model.text_type=f16", "model.quantized=false").files.loaded_text
    assert plain.name == "tiny-llava-text-v2.gguf"  # F32 already: nothing to convert
    assert copies(tmp_path) == []


def test_auto_keeps_the_file_on_the_cpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="pipeline.caption.gpu_fit"):
        model = build(tmp_path)  # model.text_type=auto is the default; the tiny preset runs on the CPU
    assert model.files.loaded_text.name == "tiny-llava-text-v2.Q8_0.gguf"
    assert copies(tmp_path) == [] and not caplog.records


def pretend_gpu(monkeypatch: pytest.MonkeyPatch, free_bytes: int) -> None:
    """The decision as on a GPU with ``free_bytes`` free (the model itself still runs on the CPU)."""
    monkeypatch.setattr(fit, "runs_on_gpu", lambda n_gpu_layers: True)
    monkeypatch.setattr(fit, "gpu_free_bytes", lambda: free_bytes)


def test_auto_takes_f16_on_a_gpu_with_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_gpu(monkeypatch, free_bytes=80 << 30)
    model = build(tmp_path)
    assert model.files.loaded_text.name.endswith(".F16.gguf")


def test_auto_keeps_the_file_when_the_gpu_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pretend_gpu(monkeypatch, free_bytes=2 << 30)  # less than the margin alone
    with caplog.at_level(logging.INFO, logger="pipeline.caption.gpu_fit"):
        model = build(tmp_path)
    assert model.files.loaded_text.name == "tiny-llava-text-v2.Q8_0.gguf" and copies(tmp_path) == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert "keeping tiny-llava-text-v2.Q8_0.gguf" in line and "GB of the GPUs' 2.1 GB free" in line


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(fit.shutil, "disk_usage", lambda path: usage._replace(free=100 << 20))


def test_auto_keeps_the_file_when_the_disk_is_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_gpu(monkeypatch, free_bytes=80 << 30)
    full_disk(monkeypatch)
    assert build(tmp_path).files.loaded_text.name == "tiny-llava-text-v2.Q8_0.gguf"
    assert copies(tmp_path) == []


def test_f16_without_room_on_the_disk_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full_disk(monkeypatch)
    with pytest.raises(WeightsError, match=r"model.text_type=f16: its F16 copy needs .* GB free; free some space"):
        build(tmp_path, "model.text_type=f16")
    assert copies(tmp_path) == []


def test_kv_bytes_counts_a_stream_per_sequence_slot(tmp_path: Path) -> None:
    model = build(tmp_path, "engine.parallel=4")
    per_cell = 2 * 4 * 16 * 2 * 2  # tiny: 2 layers x 4 KV heads x head size 16, keys and values, F16
    settings: Any = model.engine.settings
    assert fit.kv_bytes(model.files.text_model, settings) == 4096 * 4 * 3 * per_cell
    unified = settings.__class__(**{**settings.__dict__, "kv_unified": True})
    assert fit.kv_bytes(model.files.text_model, unified) == 4096 * 4 * per_cell


def test_bad_text_type_is_one_line(cli_base: list[str], tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", n_frames=4)
    result = run_cli(f"video={video}", *cli_base, "model.text_type=f32")
    assert_one_line_error(result, 1, "model.text_type must be one of auto, keep, f16, got 'f32'")


def test_frames_in_flight_fit_the_free_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pretend_gpu(monkeypatch, free_bytes=80 << 30)
    model = build(tmp_path, "model.text_type=keep", "engine.parallel=16")  # as the GPU's default
    settings, files = model.engine.settings, model.files
    per_frame = fit.kv_bytes(files.text_model, replace(settings, parallel=1))  # 3 prompts
    fixed = files.loaded_text.stat().st_size + fit.clip_bytes(files.mmproj, settings) + fit.GPU_MARGIN_BYTES

    def chosen(free: int, max_questions: int = 3) -> int:
        monkeypatch.setattr(fit, "gpu_free_bytes", lambda: free)
        return fit.frames_in_flight(replace(settings, max_questions=max_questions), files)

    assert chosen(fixed + 16 * per_frame) == 16
    assert chosen(80 << 30, max_questions=1) == 16  # room for more: still the default
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="pipeline.caption.gpu_fit"):
        assert chosen(fixed + 16 * per_frame - 1) == 8  # the default does not fit: the largest half that does
        assert chosen(fixed + 7 * per_frame) == 4
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "engine.parallel: 8 frames in flight instead of 16", "engine.parallel: 4 frames in flight instead of 16"
    ]
    assert chosen(fixed) == 16  # nothing fits: the default, and llama.cpp says why


def test_the_projector_counts_once_per_clip_context(tmp_path: Path) -> None:
    model = build(tmp_path, "engine.lanes_gpu=2")
    settings, size = model.engine.settings, model.files.mmproj.stat().st_size
    assert settings.image_layout == "reference"  # two arrangements, a context each

    def copies_loaded(**changes: Any) -> int:
        return fit.clip_bytes(model.files.mmproj, replace(settings, **changes)) // size

    assert copies_loaded(max_questions=1, clip_threads=None) == 2 * 2  # an encoder per lane, 2 lanes
    assert copies_loaded(max_questions=3, clip_threads=None) == 2  # one lane with several prompts
    assert copies_loaded(max_questions=3, clip_threads=3) == 2 * 3
    assert copies_loaded(max_questions=1, clip_threads=None, image_layout="llamacpp") == 2
    assert copies_loaded(max_questions=3, lanes=2, clip_threads=None) == 2 * 2  # two lanes asked for


def test_a_set_parallel_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_gpu(monkeypatch, free_bytes=80 << 30)
    assert build(tmp_path, "model.text_type=keep", "engine.parallel=3").engine.settings.parallel == 3


def test_a_killed_conversion_s_leftover_goes_and_a_live_one_stays(tmp_path: Path) -> None:
    ensure_tiny_model(tmp_path, quantized=True)
    name = copy_name(tmp_path / "tiny-llava-text-v2.Q8_0.gguf")
    stale = tmp_path / f".{name}.0badc0de.tmp"
    live = tmp_path / f".{name}.5ca1ab1e.tmp"
    stale.write_bytes(b"half a copy")
    live.write_bytes(b"being written")
    old = stale.stat().st_mtime - fit.ABANDONED_S - 1
    os.utime(stale, (old, old))
    assert build(tmp_path, "model.text_type=f16").files.loaded_text.name == name
    assert not stale.exists() and live.exists()


def test_auto_falls_back_to_the_file_when_the_copy_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pretend_gpu(monkeypatch, free_bytes=80 << 30)

    def disk_filled(*args: object, **kwargs: object) -> None:
        raise WeightsError("llama.cpp could not convert it (status 1)")

    monkeypatch.setattr(fit, "llama_quantize", disk_filled)
    with caplog.at_level(logging.WARNING, logger="pipeline.caption.gpu_fit"):
        assert build(tmp_path).files.loaded_text.name == "tiny-llava-text-v2.Q8_0.gguf"
    assert "keeping tiny-llava-text-v2.Q8_0.gguf as it is: llama.cpp could not convert" in caplog.text
    assert copies(tmp_path) == [] and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(WeightsError, match="could not convert"):  # asked for by name: the error
        build(tmp_path, "model.text_type=f16")


def test_f16_on_a_full_disk_is_one_line_and_writes_nothing(cli_base: list[str], tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "8m"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        ensure_tiny_model(disk, quantized=True)
        video = write_video(tmp_path / "clip.mp4", n_frames=4)
        args = [a for a in cli_base if not a.startswith("model.dir=")]
        result = run_cli(f"video={video}", *args, f"model.dir={disk}", "model.quantized=true", "model.text_type=f16")
        assert_one_line_error(
            result, 1, f"model.text_type=f16: its F16 copy needs 0.0 GB in {disk}", "free some space"
        )
        assert copies(disk) == [] and not list(disk.glob(".*.tmp"))
        assert not list((tmp_path / "out").rglob("*.parquet"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_download_ahead_writes_the_copy_a_run_loads(tmp_path: Path) -> None:
    ensure_tiny_model(tmp_path, quantized=True)
    args = ["model=tiny", f"model.dir={tmp_path}", "model.quantized=true", "model.text_type=f16"]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.download", *args], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    copy = tmp_path / copy_name(tmp_path / "tiny-llava-text-v2.Q8_0.gguf")
    assert done.stdout.split() == [str(copy), str(tmp_path / "tiny-llava-mmproj-v2.gguf")]
    assert "writing an F16 copy of tiny-llava-text-v2.Q8_0.gguf" in done.stderr
    written = copy.stat().st_mtime_ns
    assert build(tmp_path, "model.text_type=f16").files.loaded_text == copy and copy.stat().st_mtime_ns == written


def test_the_f16_choice_does_not_depend_on_the_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipeline.download (one prompt) and a run with three decide alike: the copy a download
    writes is the copy the run loads; frames in flight then fit the run's prompts."""
    source = ensure_tiny_model(tmp_path, quantized=True)[0]
    one_prompt = build(tmp_path, "model.text_type=keep", "engine.parallel=16").engine.settings
    need = fit.f16_bytes(source) + (tmp_path / "tiny-llava-mmproj-v2.gguf").stat().st_size + fit.GPU_MARGIN_BYTES
    pretend_gpu(monkeypatch, free_bytes=need + fit.kv_bytes(source, replace(one_prompt, max_questions=1)))
    three = build(tmp_path)  # three prompts: their KV cache does not fit beside the copy at 16 frames
    assert three.files.f16_copy is not None and three.engine.settings.parallel < 16


def test_a_copy_named_by_an_earlier_version_is_not_loaded_and_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unkeyed = tmp_path / "tiny-llava-text-v2.Q8_0.F16.gguf"  # the name before copies were named by content
    unkeyed.write_bytes(b"another model's copy")
    with caplog.at_level(logging.INFO, logger="pipeline.caption.gpu_fit"):
        loaded = build(tmp_path, "model.text_type=f16").files.loaded_text
    assert loaded != unkeyed and loaded.name == copy_name(tmp_path / "tiny-llava-text-v2.Q8_0.gguf")
    assert f"{unkeyed} is an F16 copy named by an earlier version, no longer loaded" in caplog.text
