"""The stall watch (pipeline/watchdog.py): quiet while work comes back or none is out, one call
of the way out once the last progress is older than the timeout. The end to end case (a run
whose engine stops answering) is in test_hostile_night.py."""

from __future__ import annotations

import threading
import time

from pipeline.watchdog import StallWatch


def test_fires_once_when_progress_is_older_than_the_timeout() -> None:
    now = time.monotonic()
    readings = iter([None, now, None, now])  # nothing out, fresh, nothing out, fresh; then stale
    stalls: list[float] = []
    fired = threading.Event()

    def on_stall(idle_s: float) -> None:
        stalls.append(idle_s)
        fired.set()

    with StallWatch(lambda: next(readings, now - 100), 50, on_stall, poll_s=0.01):
        assert fired.wait(60)
    assert len(stalls) == 1 and stalls[0] >= 100  # the watch ends after its one call


def test_no_timeout_watches_nothing() -> None:
    stalls: list[float] = []
    threads = set(threading.enumerate())
    with StallWatch(lambda: 0.0, None, stalls.append, poll_s=0.01):  # progress long ago
        assert set(threading.enumerate()) == threads  # no watching thread started
    assert stalls == []
