"""A run whose work stops coming back ends instead of waiting for ever.

A GPU that stops responding (three-prompt runs with two engine lanes hung so on an H200:
BENCHMARKS.md) or a network mount that stops answering leaves llama.cpp or the decoder
waiting inside C, where no signal reaches it. Such a run would hold ``output_dir``'s lock for
good, and every later night would stand down with exit 75, which a scheduler counts as
success. :class:`StallWatch` notices that nothing has come back for ``stall_timeout_s`` and
calls the run's way out (the command line's: one error line, the writes already under way
finished, ``_last_run.json``, exit 1).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class StallWatch:
    """Call ``on_stall(idle_s)`` once, from a watching thread, when ``last_progress()`` (a
    ``time.monotonic()`` reading, or ``None`` while no work is out) is ``timeout_s`` old.

    Use it as a context manager around the work; ``timeout_s=None`` watches nothing.

    Args:
        last_progress: When the work last moved (``None``: nothing to watch now).
        timeout_s: How long no progress is a stall.
        on_stall: The way out; it gets the seconds since the last progress.
        poll_s: How often to look (default: a quarter of the timeout, at most 30 s).
    """

    def __init__(
        self,
        last_progress: Callable[[], float | None],
        timeout_s: float | None,
        on_stall: Callable[[float], None],
        poll_s: float | None = None,
    ) -> None:
        self._last_progress = last_progress
        self._timeout_s = timeout_s
        self._on_stall = on_stall
        self._poll_s = poll_s if poll_s is not None else min(30.0, (timeout_s or 0) / 4)
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StallWatch:
        if self._timeout_s is not None:
            self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        assert self._timeout_s is not None
        while not self._done.wait(self._poll_s):
            since = self._last_progress()
            if since is not None and time.monotonic() - since >= self._timeout_s:
                self._on_stall(time.monotonic() - since)
                return
