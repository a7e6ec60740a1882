"""Shared fixtures: the generated tiny model, small generated videos, the CLI runner, and a
guard that fails any test that logs an ERROR it did not expect (as PySceneDetect's tests do).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.caption import Captioner
from pipeline.caption.engine import EngineSettings
from pipeline.caption.tiny import ensure_tiny_model
from pipeline.cli import compose_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_VIDEO = ROOT / "data" / "sample.mp4"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_error_logs: the test expects ERROR log records")


class _ErrorRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if anything logged at ERROR, unless marked ``allow_error_logs``."""
    recorder = _ErrorRecorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    try:
        yield
    finally:
        root.removeHandler(recorder)
    if recorder.records and not request.node.get_closest_marker("allow_error_logs"):
        messages = "; ".join(r.getMessage() for r in recorder.records)
        pytest.fail(f"unexpected ERROR log: {messages}")


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The user cache (derived projector files) in a folder of the session, also for the
    ``python -m pipeline`` runs it starts."""
    path = tmp_path_factory.mktemp("user-cache")
    before = os.environ.get("VIDEO_CAPTION_CACHE")
    os.environ["VIDEO_CAPTION_CACHE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("VIDEO_CAPTION_CACHE", None)
    else:
        os.environ["VIDEO_CAPTION_CACHE"] = before


def tiny_engine_settings(model_dir: Path, *overrides: str, **fields: object) -> EngineSettings:
    """Engine settings of the tiny preset as the config gives them (Hydra ``overrides``),
    with some fields replaced."""
    cfg = compose_config(["model=tiny", f"model.dir={model_dir}", "video=unused", *overrides])
    settings = Captioner.from_config(cfg, max_questions=int(fields.pop("max_questions", 1))).engine.settings  # type: ignore[arg-type]
    return replace(settings, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the generated tiny model (F32 and Q8_0), made once per session."""
    path = tmp_path_factory.mktemp("tiny-model")
    ensure_tiny_model(path, quantized=True)
    return path


def write_video(
    path: Path,
    n_frames: int = 20,
    fps: float = 10.0,
    size: tuple[int, int] = (160, 90),
    fourcc: str = "mp4v",
    colour_of: object = None,
) -> Path:
    """Write a small test clip: each frame a flat colour (``colour_of(index)``) with a bar
    that moves, so consecutive frames differ."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for index in range(n_frames):
        colour = colour_of(index) if callable(colour_of) else (index * 7 % 255, 80, 160)
        frame = np.full((height, width, 3), colour, np.uint8)
        x = (index * 5) % max(width - 10, 1)
        frame[:, x : x + 10] = 255
        writer.write(frame)
    writer.release()
    return path


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline ARGS`` and capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_base(tiny_model_dir: Path, tmp_path: Path) -> list[str]:
    """CLI arguments for a fast tiny-model run into a fresh output folder, logs in tmp."""
    return [
        "model=tiny",
        f"model.dir={tiny_model_dir}",
        f"output_dir={tmp_path / 'out'}",
        "generation.max_tokens=8",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]


# -- nights of small videos (test_nightly, test_ray) ----------------------------------------

KEY = ["video_id", "frame_index", "prompt_id"]  # one answer


def make_night(folder: Path, n_videos: int = 4, n_frames: int = 18) -> Path:
    """``n_videos`` small clips ``v<i>.mp4`` of ``n_frames + i`` frames, each its own colour."""
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(n_videos):
        write_video(folder / f"v{v}.mp4", n_frames=n_frames + v, colour_of=lambda i, v=v: (40 * v, 9 * i % 255, 90))
    return folder


def answers(out: Path) -> pd.DataFrame:
    """The answer rows of an output folder, in key order."""
    df = pd.read_parquet(out)
    return df[df.status == "ok"].sort_values(KEY).reset_index(drop=True)
