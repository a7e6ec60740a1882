"""What a person at a terminal sees (issue 16, points 1 and 3): the start line, progress bars
with totals and an ETA that log lines do not overwrite, each video's own time."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.caption import Answer, make_questions
from pipeline.caption.engine.native import default_threads
from pipeline.decode import Frame
from pipeline.executors.base import Captioned, Decoded, FrameJob, Work
from pipeline.run import Pipeline
from pipeline.sampling import AllSampler, Sample
from tests.conftest import ROOT, RUN_TIMEOUT_S, cli_env, make_night, run_cli, write_video

COLUMNS = 120


def run_in_terminal(args: list[str]) -> tuple[int, str]:
    """``python -m pipeline ARGS`` on a pseudo-terminal of COLUMNS columns; its exit code and
    everything it wrote, escape codes included."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=cli_env()
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the run ended and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    return process.wait(timeout=RUN_TIMEOUT_S), output.decode(errors="replace")


def screen(output: str) -> list[str]:
    """The lines a terminal shows after ``output``: printable text overwrites at the cursor;
    carriage return, line feed and cursor-up (``ESC [ A``) move it; nothing scrolls away."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for token in re.findall(r"\x1b\[A|\r|\n|[^\r\n\x1b]", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row += 1
            lines.extend([] for _ in range(row + 1 - len(lines)))
        elif token == "\x1b[A":
            row = max(row - 1, 0)
        else:
            line = lines[row]
            line.extend(" " for _ in range(col + 1 - len(line)))
            line[col] = token
            col += 1
    return ["".join(line).rstrip() for line in lines if "".join(line).strip()]


def test_bars_have_totals_and_an_eta_and_log_lines_stay_whole(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=3, n_frames=6)
    code, output = run_in_terminal([
        f"video={videos}", "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={tmp_path / 'out'}",
        "sampler=all", "generation.max_tokens=4", "report=false", "min_age_s=0",
    ])
    assert code == 0, output
    shown = screen(output)
    # The start lines come first: what loads, then where it runs (files, device, threads,
    # frames in flight, output_dir), before any bar.
    assert "3 of 3 videos to caption; loading model tiny (model.n_gpu_layers=0)" in shown[0]
    started = next(i for i, line in enumerate(shown) if "] started: " in line)
    first_bar = next(i for i, line in enumerate(shown) if line.startswith(("videos:", "frames:")))
    assert started < first_bar
    assert shown[started].split("] ", 1)[1].startswith("started: model tiny (tiny-llava-text-v2.gguf + ")
    assert "on CPU (" in shown[started] and f", {default_threads(None)} CPU thread" in shown[started]
    assert "4 frames in flight" in shown[started] and shown[started].endswith(f"-> {tmp_path / 'out'}")
    # Every log line is whole, none drawn over by a bar, in order.
    logged = [line for line in shown if re.match(r"\[\d\d:\d\d:\d\d INFO\] ", line)]
    done = [line for line in logged if "] done " in line]
    assert len(done) == 3
    assert all(re.search(r"done .*v\d\.mp4: \d+ frames captioned, .* rows, [\d.]+ s$", line) for line in done)
    assert logged[-1].split("] ", 1)[1].startswith("finished: 3 done")
    # The bars end full, with their totals (6 + 7 + 8 frames), and showed an ETA on the way.
    bars = [line for line in shown if line.startswith(("videos:", "frames:"))]
    assert any("| 3/3 [" in bar for bar in bars) and any("| 21/21 [" in bar for bar in bars)
    assert re.search(r"frames: +\d+%\|[^|]*\| \d+/21 \[\d\d:\d\d<\d\d:\d\d", output)
    assert not any(bar.count("%|") > 1 or "INFO]" in bar for bar in bars)


def test_the_default_thread_count_is_computed_not_every_core(cli_base: list[str], tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", n_frames=3)
    default = run_cli(f"video={clip}", *cli_base, "max_frames=1")
    assert default.returncode == 0, default.stderr
    (started,) = [line for line in default.stderr.splitlines() if "] started: " in line]
    threads = int(re.search(r", (\d+) CPU threads?,", started).group(1))  # type: ignore[union-attr]
    assert threads == default_threads(None)
    if (os.cpu_count() or 1) > 1:
        assert threads < (os.cpu_count() or 1)
    chosen = run_cli(f"video={clip}", *cli_base, "max_frames=1", "engine.n_threads=2", f"output_dir={tmp_path / 'o2'}")
    assert ", 2 CPU threads," in chosen.stderr


class _ScriptedExecutor:
    """Replays events as a slow engine would: each frame's answers say how long ago it
    entered the model, and the clock (``pipeline.run.time.time``) moves as scripted."""

    model_name = "scripted"
    model_files: dict[str, str] = {}
    engine_choices: list[dict[str, Any]] = []

    def __init__(self, clock: list[float], script: list[tuple[float, Any]]) -> None:
        self.clock, self.script = clock, script

    def describe(self) -> str:
        return "scripted"

    def start(self, spec: Any, questions: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, work: Work) -> Any:
        for now, event in self.script:
            self.clock[0] = now
            yield event


def test_each_video_gets_its_own_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Two videos of two frames each; video 1's frames enter the model at t=100 while video 0's
    # ran from t=10. Video 1's time is 100..140, not since the run started.
    clock = [0.0]
    monkeypatch.setattr("pipeline.run.time.time", lambda: clock[0])
    (question,) = make_questions(["What?"])

    def answered(video: int, frame: int, latency_s: float) -> Captioned:
        sample = Sample(Frame(frame, frame / 10, np.zeros((0, 0, 3), np.uint8)), "all")
        answer = Answer(question, "ok", 1, 1, latency_s * 1000)
        return Captioned(FrameJob(video, sample, None, None), [answer], "local", "test")

    script = [
        (20.0, answered(0, 0, 10.0)), (30.0, answered(0, 1, 15.0)), (30.0, Decoded(0, 2, 0)),
        (110.0, answered(1, 0, 10.0)), (140.0, answered(1, 1, 35.0)), (140.0, Decoded(1, 2, 0)),
    ]
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for i, path in enumerate(videos):
        path.write_bytes(bytes([i]) * 100)
    pipeline = Pipeline(AllSampler(), ["What?"], tmp_path / "out", "c", prefetch_frames=2, checkpoint_frames=32)
    (tmp_path / "out").mkdir()
    summary = pipeline.run(pipeline.plan(videos), _ScriptedExecutor(clock, script))
    assert [v.wall_s for v in summary.videos] == [20.0, 40.0]


def test_off_a_terminal_a_progress_line_comes_at_the_interval(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = make_night(tmp_path / "videos", n_videos=2, n_frames=12)  # 25 frames: several seconds here
    out = tmp_path / "out"
    result = run_cli(
        f"video={videos}", "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={out}", "sampler=all",
        "generation.max_tokens=4", "report=false", "min_age_s=0", "progress_interval_s=1",
    )
    assert result.returncode == 0, result.stderr
    pattern = r"\] progress: (\d)/2 videos, (\d+)/25 frames, [\d.]+ frames/s, ETA (\d+ s|after the first answer)$"
    shown = [re.search(pattern, line) for line in result.stderr.splitlines() if "] progress: " in line]
    assert shown and all(shown), result.stderr
    frames_done = [int(match.group(2)) for match in shown if match]
    assert frames_done == sorted(frames_done) and max(frames_done) <= 25
    # The same lines are in the run's log file; on a terminal the bars say it instead.
    (log,) = (out / "_logs").glob("*.log")
    assert "][INFO] progress: " in log.read_text()


def test_no_progress_lines_without_an_interval(cli_base: list[str], tmp_path: Path) -> None:
    result = run_cli(f"video={write_video(tmp_path / 'clip.mp4', n_frames=3)}", *cli_base, "progress_interval_s=null")
    assert result.returncode == 0, result.stderr
    assert "progress:" not in result.stderr


SIGNAL_IN_A_CALLBACK = """
import os, signal, threading
import llama_cpp
from pipeline.caption.engine.native import route_native_logs
from pipeline.signals import Stopped, check_stopped, stop_on_signals

route_native_logs()
params = llama_cpp.llama_model_default_params()
stopped = 0
for _ in range(100):
    with stop_on_signals():
        try:
            threading.Timer(0.002, os.kill, (os.getpid(), signal.SIGINT)).start()
            while True:  # llama.cpp logs from C each time: the signal often lands in the callback
                llama_cpp.llama_model_load_from_file(b"/nonexistent/model.gguf", params)
                check_stopped()
        except Stopped:
            stopped += 1
print(stopped)
"""


def test_ctrl_c_inside_llama_cpps_log_callback_prints_nothing_and_still_stops() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_A_CALLBACK], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "100"  # every signal stopped its round, none was lost
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr


def test_a_night_started_with_stderr_closed_captions_its_videos(cli_base: list[str], tmp_path: Path) -> None:
    """``2>&-`` (a daemon's way to detach): nothing to say it on, but the night runs whole."""
    video = write_video(tmp_path / "clip.mp4", n_frames=4)
    out = tmp_path / "out"
    args = [a for a in cli_base if not a.startswith("output_dir=")]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, f"video={video}", f"output_dir={out}", "report=false"],
        cwd=ROOT, env=cli_env(PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, timeout=RUN_TIMEOUT_S,
        preexec_fn=lambda: os.close(2),
    )
    record = json.loads((out / "_last_run.json").read_text())
    assert done.returncode == 0, record
    assert (record["state"], record["exit_code"], record["videos_done"]) == ("finished", 0, 1)


SIGNAL_WHILE_COMPOSING = """
import os, signal, threading
from pipeline.config import compose_config
from pipeline.signals import Stopped, stop_on_signals, stops_deferred

ends = []
for delay in range(60):
    composed = 0
    with stop_on_signals():
        try:
            with stops_deferred():  # as python -m pipeline while Hydra composes the config
                threading.Timer(delay / 2000, os.kill, (os.getpid(), signal.SIGINT)).start()
                for _ in range(3):
                    compose_config(["video=x.mp4", "model=tiny", "sampler=scene"])
                    composed += 1
        except Stopped:
            ends.append(composed)
print(sorted(set(ends)), len(ends))
"""


def test_ctrl_c_while_the_config_is_composed_stops_the_command_once_it_is_composed() -> None:
    """A signal raised inside OmegaConf can be replaced by another exception in its cleanup
    (AttributeError: a stop read as a crash): while the config is composed it is noted, and
    raised when composing ends."""
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_WHILE_COMPOSING], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["[3]", "60"], result.stdout  # every stop, each after the whole composition


SIGNAL_AS_PYTHON_ENDS = """
import atexit, os, signal
from pipeline.signals import exit_with, stop_on_signals

atexit.register(os.kill, os.getpid(), signal.SIGTERM)  # a service manager's stop, as Python shuts down
with stop_on_signals():
    exit_with(2)  # the code the run's record holds
"""


def test_a_signal_once_the_exit_code_is_chosen_leaves_that_code() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_AS_PYTHON_ENDS], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert (result.returncode, result.stderr) == (2, "")  # not 143 without a line, against the record's 2
