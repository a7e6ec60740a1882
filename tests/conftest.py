"""Shared fixtures and helpers: the generated tiny model (made once per session), small
generated videos and frames, the CLI runners, nights of small videos, result rows written as
the store writes them, headless Chromium for the report's pages, a guard that fails
any test that logs an ERROR it did not expect (as PySceneDetect's tests do), and a guard that
fails any test after which an output folder holds a key twice (:func:`assert_no_key_twice`).

No test asserts on elapsed seconds: where a run must be stopped at a known moment, it runs
under :mod:`tests.paused_run`, which waits at a point the test names.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.caption.engine import EngineSettings
from pipeline.caption.tiny import ensure_tiny_model
from pipeline.chunks import result_files
from pipeline.config import compose_config
from pipeline.decode import format_timecode
from pipeline.presets import captioner_from_config
from pipeline.store import RUNS_DIR, DamagedChunk, ResultRow, read_chunk, table_to_pandas, write_chunk
from pipeline.thumbnails import thumbnailer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_VIDEO = ROOT / "data" / "sample.mp4"


def pytest_configure(config: pytest.Config) -> None:
    """Declare the suite's own marker."""
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


# The key of a row: no (video_id, frame_index, prompt_id, config_id) may be written twice. An
# error record (a video that failed) has no frame and no prompt: one per video and config.
ROW_KEY = ["video_id", "frame_index", "prompt_id", "config_id"]


def assert_no_key_twice(output_dir: Path) -> None:
    """Fail if any row key of ``output_dir`` is there more than once: in every chunk that reads
    whole, twins included (``read_results`` reads each key once, so it would not show one)."""
    tables = []
    for path in result_files(output_dir):
        try:
            tables.append(read_chunk(path, ROW_KEY))
        except DamagedChunk:
            continue  # not whole: no reader reads it, a run over its video moves it aside
    df = table_to_pandas(pa.concat_tables(tables)) if tables else pd.DataFrame(columns=ROW_KEY)
    twice = df[df.duplicated(ROW_KEY, keep=False)]
    assert twice.empty, f"{output_dir}: keys written twice:\n{twice[ROW_KEY].to_string()}"


def _output_dirs(root: Path) -> dict[Path, float]:
    """Every output folder under ``root`` (a folder whose ``<video_id>/`` folders hold chunk
    files), with its newest chunk's modification time."""
    found: dict[Path, float] = {}
    for chunk in root.rglob("*.parquet"):
        output_dir = chunk.parent.parent
        if not chunk.name.startswith(("part-", "errors-")) or output_dir.name.startswith(("_", ".")):
            continue  # not a chunk, or one moved aside (_quarantine/<video_id>/)
        found[output_dir] = max(found.get(output_dir, 0.0), chunk.stat().st_mtime)
    return found


_CHECKED: dict[Path, float] = {}


@pytest.fixture(autouse=True)
def no_key_written_twice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After every test: each output folder under the session's temporary root with a chunk
    written since it was last checked (by this test, a ``python -m pipeline`` or Ray run it
    started, or a module fixture it used) holds no key twice. Every test that writes Parquet
    writes it under that root (``tmp_path``); one whose folder goes away before the end (an
    unmounted disk) calls :func:`assert_no_key_twice` itself."""
    yield
    for output_dir, newest in _output_dirs(tmp_path_factory.getbasetemp()).items():
        if _CHECKED.get(output_dir) != newest:
            _CHECKED[output_dir] = newest  # reported once, by the test that wrote it
            assert_no_key_twice(output_dir)


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


def tiny_engine_settings(model_dir: Path, *overrides: str, **fields: Any) -> EngineSettings:
    """Engine settings of the tiny preset as the config gives them (Hydra ``overrides``),
    with some fields replaced."""
    cfg = compose_config(["model=tiny", f"model.dir={model_dir}", "video=unused", *overrides])
    max_questions = int(fields.pop("max_questions", 1))
    settings = captioner_from_config(cfg, max_questions=max_questions).engine.settings
    return replace(settings, **fields)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the generated tiny model (F32 and Q8_0), made once per session."""
    path = tmp_path_factory.mktemp("tiny-model")
    ensure_tiny_model(path, quantized=True)
    return path


def tinted(red: int) -> Callable[[int], tuple[int, int, int]]:
    """A ``colour_of`` for :func:`write_video`: this much red, green changing frame by frame."""
    return lambda index: (red, 9 * index % 255, 90)


def write_video(
    path: Path,
    n_frames: int = 20,
    fps: float = 10.0,
    size: tuple[int, int] = (160, 90),
    fourcc: str = "mp4v",
    colour_of: Callable[[int], tuple[int, int, int]] | None = None,
) -> Path:
    """Write a small test clip: each frame a flat colour (``colour_of(index)``) with a bar
    that moves, so consecutive frames differ."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for index in range(n_frames):
        colour = colour_of(index) if colour_of is not None else (index * 7 % 255, 80, 160)
        frame = np.full((height, width, 3), colour, np.uint8)
        x = (index * 5) % max(width - 10, 1)
        frame[:, x : x + 10] = 255
        writer.write(frame)
    writer.release()
    return path


# Subprocess limits are there to end a hung run, not to judge speed: generous enough for a
# loaded 2-core machine.
RUN_TIMEOUT_S = 1200


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m pipeline`` subprocess: offline, unbuffered."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **extra}


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline ARGS`` (this checkout's, from any ``cwd``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=cli_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """The run exited with ``code`` and said why in exactly one line holding every needle,
    without a traceback."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, result.stderr


def last_run(out: Path) -> dict[str, Any]:
    """The machine-readable summary of the last run into ``out`` (``_last_run.json``)."""
    return cast(dict[str, Any], json.loads((out / "_last_run.json").read_text()))


def start_paused_run(
    args: list[str], pause_at: str, marker: Path, release: Path | None = None, **env: str
) -> subprocess.Popen[str]:
    """Start ``python -m pipeline ARGS`` under :mod:`tests.paused_run`: it waits at
    ``pause_at`` (after touching ``marker``) until ``release`` exists, or for good."""
    pause = {"PAUSE_AT": pause_at, "PAUSE_MARKER": str(marker)}
    if release is not None:
        pause["PAUSE_RELEASE"] = str(release)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.paused_run", *args], cwd=ROOT, env=cli_env(**pause, **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL a run (no handler, no cleanup: as a power cut or the OOM killer) and reap it."""
    process.send_signal(signal.SIGKILL)
    process.wait()


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` (a small full disk) at ``path``; False where that needs root."""
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode == 0


@contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` for the ``with`` block; the test is skipped where mounting
    needs root (CI runs as root)."""
    if not mount_tmpfs(path, size):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path) -> None:
    """Fill a small disk (:func:`mount_tmpfs`) up to its last block."""
    filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(filler, b"x" * 4096):
            pass
    except OSError:  # the disk is full
        pass
    finally:
        os.close(filler)


def wait_for_pause(process: subprocess.Popen[str], marker: Path) -> None:
    """Wait until ``process`` reaches its pause point (it must not end first)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not marker.exists():
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            pytest.fail(f"the run ended (exit {process.returncode}) before its pause point: {stderr}")
        assert time.monotonic() < deadline, "the run never reached its pause point"
        time.sleep(0.02)


@pytest.fixture
def cli_base(tiny_model_dir: Path, tmp_path: Path) -> list[str]:
    """CLI arguments for a fast tiny-model run into a fresh output folder, logs in tmp."""
    return [
        "model=tiny",
        f"model.dir={tiny_model_dir}",
        f"output_dir={tmp_path / 'out'}",
        "generation.max_tokens=8",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "min_age_s=0",  # the tests' videos are written a moment before they are captioned
    ]


def frames(n: int, seed: int) -> list[np.ndarray]:
    """``n`` RGB frames of noise, each 10 rows taller than the one before."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (90 + 10 * i, 160, 3), dtype=np.uint8) for i in range(n)]


# -- nights of small videos (test_nightly, test_ray) ----------------------------------------

KEY = ["video_id", "frame_index", "prompt_id"]  # one answer
PROMPTS = "prompts=[What is shown?,Which colours?]"


def night_args(videos: Path, out: Path, tiny_model_dir: Path, tmp: Path, max_tokens: int = 12) -> list[str]:
    """CLI arguments for a night: every frame, two prompts, chunks of 3 frames, 2 in flight;
    videos just written are taken (``min_age_s=0``)."""
    return [
        f"video={videos}", "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={out}",
        f"generation.max_tokens={max_tokens}", "sampler=all", "checkpoint_frames=3",
        "engine.parallel=2", "engine.n_threads=1", PROMPTS, "report=false",
        f"hydra.run.dir={tmp / 'hydra'}", "min_age_s=0",
    ]


def make_night(folder: Path, n_videos: int = 4, n_frames: int = 18) -> Path:
    """``n_videos`` small clips ``v<i>.mp4`` of ``n_frames + i`` frames, each its own colour."""
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(n_videos):
        write_video(folder / f"v{v}.mp4", n_frames=n_frames + v, colour_of=tinted(40 * v))
    return folder


@pytest.fixture(scope="module")
def finished(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished night of two small videos, once a module (copied by each test: :func:`night`)."""
    tmp = tmp_path_factory.mktemp("finished")
    videos = make_night(tmp / "videos", n_videos=2, n_frames=4)
    result = run_cli(*night_args(videos, tmp / "out", tiny_model_dir, tmp))
    assert result.returncode == 0, result.stderr
    return {"videos": videos, "out": tmp / "out"}


@pytest.fixture
def night(finished: dict[str, Any], tiny_model_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """A copy of the finished night, with the arguments that run it again (``args``)."""
    out = tmp_path / "out"
    shutil.copytree(finished["out"], out)
    videos = finished["videos"]
    return {"out": out, "videos": videos, "args": night_args(videos, out, tiny_model_dir, tmp_path)}


def answers(out: Path) -> pd.DataFrame:
    """The answer rows of an output folder, in key order."""
    df = pd.read_parquet(out)
    return df[df.status == "ok"].sort_values(KEY).reset_index(drop=True)


@functools.cache
def _default_thumbnailer() -> Callable[[np.ndarray], bytes]:
    make = thumbnailer(**compose_config(["video=unused"]).thumbnails)
    assert make is not None
    return make


def default_thumbnail(rgb: np.ndarray) -> bytes:
    """A frame's thumbnail as a run with the default settings (``conf/``) makes it."""
    return _default_thumbnailer()(rgb)


# -- results written as the store writes them, and Chromium for the report's tests -----------

def result_row(video_id: str = "v1", frame_index: int | None = 0, **fields: Any) -> dict[str, Any]:
    """A result row as the store writes it (its :class:`~pipeline.store.ResultRow`, by column):
    an ok answer at 25 fps unless ``fields`` say otherwise; ``frame_index=None`` makes a
    video-level error record."""
    if frame_index is None:
        row = ResultRow(
            video_path=f"/videos/{video_id}.mp4", video_id=video_id, model="tiny", status="error",
            error="not a readable video", config_id="cfg1",
        )
    else:
        timestamp_s = frame_index / 25
        row = ResultRow(
            video_path=f"/videos/{video_id}.mp4", video_id=video_id, frame_index=frame_index,
            timestamp_s=timestamp_s, timecode=format_timecode(timestamp_s), prompt_id="p1",
            prompt="Describe this frame.", answer="A red car on a road.", model="tiny", status="ok",
            prompt_tokens=100, completion_tokens=10, latency_ms=100.0, sample_reason="interval",
            config_id="cfg1", finish_reason="stop",
        )
    return {**asdict(row), **fields}


def write_wav(path: Path) -> Path:
    """A second of sound as a WAV file (audio only, no video stream), whatever its name."""
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x00\x01" * 8000)
    return path


def run_without_results(output_dir: Path) -> Path:
    """``output_dir`` as a run leaves it that committed nothing (its record, no chunk)."""
    (output_dir / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    return output_dir


def write_results(output_dir: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> list[Path]:
    """Commit rows as the store does (:func:`pipeline.store.write_chunk`: a chunk per video,
    kind and config); with ``schema``, the chunks then hold the rows under that older schema,
    as an earlier version of the pipeline wrote them. Returns the chunk files."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        kind = "part" if row["status"] == "ok" else "errors"
        groups.setdefault((row["video_id"], kind, row["config_id"]), []).append(row)
    written = []
    for (video_id, kind, config_id), group in groups.items():
        path = write_chunk(output_dir, video_id, kind, config_id, [ResultRow(**row) for row in group], {})
        if schema is not None:
            pq.write_table(pa.Table.from_pylist(group, schema=schema), path)
        written.append(path)
    return written


CHROMIUM = shutil.which("chromium")
# CI installs Chromium (.ci/run), so there a missing browser fails the test instead.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install -y chromium)",
)


def chromium_command(tmp_path: Path, *args: str) -> list[str]:
    """Headless Chromium, offline (every host name fails to resolve), with ``args``."""
    assert CHROMIUM is not None
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        *args,
    ]


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium on a page in virtual time (a static page: it runs no media); its stdout."""
    command = chromium_command(tmp_path, "--virtual-time-budget=5000", *args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


PROBE_MARK = "PROBE-RESULT "
# Appended to a copy of a probe page: once the page's probe has put its <pre id="result">, the
# result goes to the console, which --enable-logging=stderr prints.
PROBE_WATCH = """<script>
const probeWatch = setInterval(() => {
  const result = document.getElementById("result");
  if (result) { clearInterval(probeWatch); console.log(%s + result.textContent); }
}, 50);
</script>""" % json.dumps(PROBE_MARK)


def probe_result(tmp_path: Path, page: Path, *args: str) -> dict[str, Any]:
    """What the probe script of a static ``page`` put into its ``<pre id="result">``, read back
    with ``--dump-dom`` once Chromium's virtual time runs out (Chromium run with ``args``)."""
    dom = chromium(tmp_path, *args, "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the probe did not finish; the DOM ends: {dom[-1000:]}"
    return dict(json.loads(html.unescape(found.group(1))))


def play_probe_result(tmp_path: Path, page: Path, *args: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """What the probe script of ``page``, a page that plays media, put into its
    ``<pre id="result">`` (Chromium run with ``args``), in real time.

    Virtual time does not wait for the media pipeline: on a busy machine a video had not yet
    played or seeked when ``--dump-dom`` dumped the page, five tries running. So the page runs in
    real time, its result comes back through the console, and Chromium is stopped once it has;
    only a page that shows nothing within ``timeout_s`` fails.
    """
    watched = page.with_name(f"{page.stem}-watched.html")
    watched.write_text(page.read_text(encoding="utf-8") + PROBE_WATCH, encoding="utf-8")
    command = chromium_command(tmp_path, "--enable-logging=stderr", "--v=0", *args, watched.as_uri())
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        for line in browser.stderr or ():
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                if browser.poll() is not None and lines.empty():
                    break
                continue
            seen.append(line)
            found = re.search(re.escape(PROBE_MARK) + r'(.*)", source:', line)
            if found:
                return dict(json.loads(found.group(1)))
    finally:
        browser.kill()
        browser.wait()
    raise AssertionError(f"the probe showed no result in {timeout_s:.0f} s; Chromium said: {''.join(seen[-20:])}")
