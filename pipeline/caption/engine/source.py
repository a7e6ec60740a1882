"""The prefetch source: jobs in, prepared frames out, with some always being prepared ahead."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from threading import Lock
from typing import Generic, TypeVar

from pipeline.caption.engine.records import EngineStats

Job = TypeVar("Job")
Prepared = TypeVar("Prepared")

END = object()  # no more frames (or the source was stopped)


class FrameSource(Generic[Job, Prepared]):
    """Prepared frames for the lanes: pulls jobs and keeps ``ahead`` of them being prepared.

    Shared by the lanes' threads; one of them at a time pulls from ``jobs``.

    Args:
        jobs: What to prepare; consumed on the lanes' threads, one at a time.
        prepare: Starts preparing a job; the future's result is what :meth:`take` hands out.
        release: Frees a prepared result nobody took.
        stats: Receives the time spent waiting for jobs and their preparation.
        ahead: Jobs kept in preparation.
    """

    def __init__(
        self,
        jobs: Iterator[Job],
        prepare: Callable[[Job], Future[Prepared]],
        release: Callable[[Prepared], None],
        stats: EngineStats,
        ahead: int,
    ) -> None:
        self._jobs = jobs
        self._prepare = prepare
        self._release = release
        self._stats = stats
        self._ahead = ahead
        self._pending: deque[Future[Prepared]] = deque()
        self._exhausted = False
        self._stopped = False
        self._lock = Lock()

    def take(self, fits: Callable[[Prepared], bool]) -> Prepared | object | None:
        """The next prepared result, if ``fits`` takes it; waits while it is being prepared.

        Returns:
            The result; ``None`` when the next does not fit; :data:`END` when there are no more.
        """
        while True:
            with self._lock:
                if self._stopped:
                    return END
                self._top_up()
                if not self._pending:
                    return END
                head = self._pending[0]
                if head.done():
                    item = head.result()
                    if not fits(item):
                        return None
                    self._pending.popleft()
                    self._top_up()
                    return item
            t0 = time.perf_counter()
            futures_wait([head])
            with self._lock:
                self._stats.wait_s += time.perf_counter() - t0

    def _top_up(self) -> None:
        """Pull jobs until ``ahead`` are being prepared (the lock is held)."""
        while not self._exhausted and len(self._pending) < self._ahead:
            t0 = time.perf_counter()
            job = next(self._jobs, None)
            self._stats.wait_s += time.perf_counter() - t0
            if job is None:
                self._exhausted = True
            else:
                self._pending.append(self._prepare(job))

    def stop(self) -> None:
        """Make every :meth:`take` answer :data:`END` from now on."""
        with self._lock:
            self._stopped = True

    def close(self) -> None:
        """Free the results prepared but never taken."""
        while self._pending:
            future = self._pending.popleft()
            try:
                item = future.result()
            except Exception:  # noqa: BLE001, S112  (already raised on a lane, or tearing down)
                continue
            self._release(item)
