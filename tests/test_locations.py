"""Where a run's files land (issue 16, points 5 and 6): the tiny model in the user cache, a
preset's weights in the Hugging Face cache unless ``model.dir`` says otherwise, the run's log
under ``output_dir``; nothing in the working folder. A missing model with no reachable hub
fails at once, in one line."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.caption.tiny import TINY_MMPROJ_FILE, TINY_TEXT_FILE
from pipeline.presets import captioner_from_preset
from tests.conftest import ROOT, RUN_TIMEOUT_S, SAMPLE_VIDEO, assert_one_line_error, cli_env


def run_elsewhere(cwd: Path, *args: str, code: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` (or ``python -c CODE ARGS``) from ``cwd``, with this checkout's code."""
    command = ["-c", code] if code is not None else ["-m", "pipeline"]
    return subprocess.run(
        [sys.executable, *command, *args], cwd=cwd, env=cli_env(PYTHONPATH=str(ROOT), **env),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )


def test_a_run_leaves_nothing_in_the_working_folder(user_cache: Path, tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    result = run_elsewhere(work, f"video={SAMPLE_VIDEO}", "model=tiny", f"output_dir={out}", "max_frames=1",
                           "generation.max_tokens=4")
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []  # no outputs/, no data/cache/tiny
    assert (user_cache / "tiny" / TINY_TEXT_FILE).is_file() and (user_cache / "tiny" / TINY_MMPROJ_FILE).is_file()
    (log_file,) = (out / "_logs").glob("*.log")
    assert "done " in log_file.read_text() and "finished:" in log_file.read_text()
    # The log is named as the run's summary is.
    (summary,) = (out / "_runs").glob("*.json")
    assert log_file.stem == summary.stem


def test_library_tiny_model_comes_from_the_user_cache(user_cache: Path) -> None:
    captioner = captioner_from_preset("tiny")
    assert captioner.files.text_model == user_cache / "tiny" / TINY_TEXT_FILE
    assert captioner.files.mmproj == user_cache / "tiny" / TINY_MMPROJ_FILE


@pytest.mark.allow_error_logs
def test_a_crash_is_one_line_and_its_traceback_is_in_the_run_log(tmp_path: Path) -> None:
    crash = (
        "import pipeline.run\n"
        "def boom(*args):\n    raise KeyError('injected bug')\n"
        "pipeline.run.Pipeline._take_answers = boom\n"
        "from pipeline.cli import main\nmain()\n"
    )
    out = tmp_path / "out"
    result = run_elsewhere(tmp_path, f"video={SAMPLE_VIDEO}", "model=tiny", f"output_dir={out}", "max_frames=1",
                           code=crash)
    assert_one_line_error(result, 1, "crashed: KeyError", "injected bug", str(out / "_logs"))
    (log_file,) = (out / "_logs").glob("*.log")
    assert "Traceback" in log_file.read_text() and "in boom" in log_file.read_text()


def test_missing_weights_are_looked_up_in_the_hugging_face_cache(tmp_path: Path) -> None:
    result = run_elsewhere(
        tmp_path, f"video={SAMPLE_VIDEO}", "model=llava16_mistral_7b", "model.n_gpu_layers=0",
        f"output_dir={tmp_path / 'out'}", HF_HOME=str(tmp_path / "hf"),
    )
    assert_one_line_error(
        result, 1, "llava-v1.6-mistral-7b.Q5_K_M.gguf", f"the Hugging Face cache ({tmp_path / 'hf' / 'hub'})",
        "HF_HUB_OFFLINE is set", "model.dir",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_unreachable_hub_fails_at_once_in_one_line(tmp_path: Path) -> None:
    # Not offline by the environment, but nothing answers: the endpoint is a closed local port.
    result = run_elsewhere(
        tmp_path, f"video={SAMPLE_VIDEO}", "model=llava16_mistral_7b", "model.n_gpu_layers=0",
        f"model.dir={tmp_path / 'models'}", f"output_dir={tmp_path / 'out'}",
        HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"),
    )
    assert_one_line_error(result, 1, "llava-v1.6-mistral-7b.Q5_K_M.gguf", "the hub cannot be reached",
                          "HF_HUB_OFFLINE=1")
    assert "Retrying" not in result.stderr
    lines = [line.split("] ", 1)[-1] for line in result.stderr.splitlines()]
    assert len(lines) == len(set(lines)), result.stderr  # nothing said twice


def test_download_ahead_generates_or_names_the_files(user_cache: Path, tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "pipeline.download", "model=tiny"], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == [str(user_cache / "tiny" / name) for name in (TINY_TEXT_FILE, TINY_MMPROJ_FILE)]
    missing = subprocess.run(
        [sys.executable, "-m", "pipeline.download", "model=llava16_vicuna_7b", f"model.dir={tmp_path}"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(missing, 1, "llava-v1.6-vicuna-7b.Q5_K_M.gguf", str(tmp_path), "HF_HUB_OFFLINE is set")


def test_hub_warnings_reach_the_console_once(caplog: pytest.LogCaptureFixture) -> None:
    import huggingface_hub  # noqa: F401  (gives its logger a console handler of its own)

    from pipeline.caption.weights import _print_hub_warnings_once

    _print_hub_warnings_once()
    hub_logger = logging.getLogger("huggingface_hub.utils._http")
    with caplog.at_level(logging.WARNING):
        hub_logger.warning("Retrying in 1s [Retry 1/5].")
    assert [r.getMessage() for r in caplog.records] == ["Retrying in 1s [Retry 1/5]."]
    assert not logging.getLogger("huggingface_hub").handlers  # only the root's handlers print it


def test_the_missing_weights_line_names_a_download_of_the_same_files(tmp_path: Path) -> None:
    """Another quant of a preset (``model.text_file``) in ``model.dir``: the one-line error's
    download command fetches that file into that folder, not the preset's default."""
    quant, models = "llava-v1.6-mistral-7b.Q8_0.gguf", tmp_path / "models"
    result = run_elsewhere(
        tmp_path, f"video={SAMPLE_VIDEO}", "model=llava16_mistral_7b", "model.n_gpu_layers=0",
        f"model.text_file={quant}", f"model.dir={models}", f"output_dir={tmp_path / 'out'}",
    )
    command = (
        f"python -m pipeline.download model=llava16_mistral_7b model.text_file={quant} "
        f"model.mmproj_file=mmproj-model-f16.gguf model.dir={models}"
    )
    assert_one_line_error(result, 1, quant, command)
    download = subprocess.run(
        [sys.executable, *command.split()[1:]], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(download, 1, f"missing {quant}, mmproj-model-f16.gguf in {models}", "HF_HUB_OFFLINE is set")
