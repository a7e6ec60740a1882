"""``python -m tests.paused_run ARGS``: ``python -m pipeline ARGS`` that stops at a point the
test names and waits there, so that a test acts (kills the run, kills a worker) at a known
moment of the run instead of after a guessed number of seconds.

Environment:
    PAUSE_AT: where to stop:
        ``commit:<n>:before``: before the Parquet chunk after ``n`` committed ones is written
            (its frames are answered and waiting on the writer thread);
        ``commit:<n>:during``: with that chunk written to its temporary file, not yet renamed;
        ``answer:<worker>:<n>``: when the run has taken the ``n``-th answer of ``worker``
            (e.g. ``actor-0``), on the thread that dispatches the work;
        ``native_log:<n>``: inside llama.cpp's ``n``-th call of the log callback (as the model
            loads), where Python drops an exception that a signal handler raises;
        ``step:<n>``: in the engine's ``n``-th decode step, as a GPU that stops responding;
        ``report``: everything committed, the report about to be written;
        ``plan:<n>``: in the plan, when it reads the ``n``-th video's content id;
        ``run``: the plan made, before the run decodes its first video.
    PAUSE_MARKER: a file touched when the run stops there.
    PAUSE_RELEASE: a file whose appearance lets the run go on; without it, it waits until it
        is killed.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp

import pipeline.plan
import pipeline.report
import pipeline.run
import pipeline.store
from pipeline.caption.engine import Engine, native
from pipeline.executors.base import Captioned
from pipeline.run import Pipeline, VideoTask


def pause() -> None:
    """Touch the marker, then wait for the release file (or forever)."""
    Path(os.environ["PAUSE_MARKER"]).touch()
    release = os.environ.get("PAUSE_RELEASE")
    while not (release and Path(release).exists()):
        time.sleep(0.05)


def pause_at_commit(committed: int, during: bool) -> None:
    """Stop at the Parquet write that follows ``committed`` ones (see the module's docstring)."""
    write_atomic = pipeline.store.write_atomic
    seen = 0

    def paused_write(
        path: Path, write: Callable[[Path], object], before_rename: Callable[[], object] | None = None
    ) -> None:
        nonlocal seen
        if path.suffix == ".parquet":
            seen += 1
            if seen == committed + 1 and not during:
                pause()
            elif seen == committed + 1:

                def write_then_pause(temporary: Path) -> None:
                    write(temporary)
                    pause()

                write_atomic(path, write_then_pause, before_rename)
                return
        write_atomic(path, write, before_rename)

    pipeline.store.write_atomic = paused_write


def pause_at_answer(worker: str, n: int) -> None:
    """Stop when the run has taken the ``n``-th answer of ``worker``."""
    take_answers = Pipeline._take_answers
    seen = 0

    def paused_take(self: Pipeline, task: VideoTask, event: Captioned) -> None:
        nonlocal seen
        take_answers(self, task, event)
        if event.worker == worker:
            seen += 1
            if seen == n:
                pause()

    Pipeline._take_answers = paused_take  # type: ignore[method-assign]


def pause_in_native_log(n: int) -> None:
    """Stop inside llama.cpp's ``n``-th call of the log callback."""
    log_callback = native._log_callback
    seen = 0

    @llama_cpp.llama_log_callback
    def paused(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        nonlocal seen
        log_callback(level, text, user_data)
        seen += 1
        if seen == n:
            pause()

    native._log_callback = paused


def pause_in_step(n: int) -> None:
    """Stop in the engine's ``n``-th decode step."""
    step = Engine._step
    seen = 0

    def paused_step(self: Engine, *args: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == n:
            pause()
        return step(self, *args)

    Engine._step = paused_step  # type: ignore[method-assign,assignment]


def pause_in_plan(n: int) -> None:
    """Stop when the plan reads the ``n``-th video's content id."""
    video_id_of = pipeline.plan.video_id_of
    seen = 0

    def paused_id(path: Path) -> str:
        nonlocal seen
        seen += 1
        if seen == n:
            pause()
        return video_id_of(path)

    pipeline.plan.video_id_of = paused_id


def pause_before_run() -> None:
    """Stop when the plan is made, before the run decodes its first video."""
    run = Pipeline.run

    def paused_run(self: Pipeline, *args: Any) -> Any:
        pause()
        return run(self, *args)

    Pipeline.run = paused_run  # type: ignore[method-assign,assignment]


def pause_before_report() -> None:
    """Stop when the report is about to be written."""
    write_report = pipeline.report.write_report

    def paused_write(output_dir: Path, *args: Any, **kwargs: Any) -> Path:
        pause()
        return write_report(output_dir, *args, **kwargs)

    pipeline.report.write_report = paused_write  # type: ignore[assignment]


def main() -> None:
    """Set the pause point from ``PAUSE_AT`` and run the command line."""
    kind, *where = os.environ["PAUSE_AT"].split(":")
    if kind == "commit":
        pause_at_commit(int(where[0]), during=where[1] == "during")
    elif kind == "answer":
        pause_at_answer(where[0], int(where[1]))
    elif kind == "native_log":
        pause_in_native_log(int(where[0]))
    elif kind == "step":
        pause_in_step(int(where[0]))
    elif kind == "plan":
        pause_in_plan(int(where[0]))
    elif kind == "run":
        pause_before_run()
    else:
        pause_before_report()
    from pipeline.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
