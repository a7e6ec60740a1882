"""The prefetch source: jobs in, prepared frames out, dealt to the lanes in turn, with some
always being prepared ahead."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from threading import Condition
from typing import Generic, TypeVar

from pipeline.caption.engine.records import EngineStats

Job = TypeVar("Job")
Prepared = TypeVar("Prepared")

END = object()  # no more frames for this lane (or the source was stopped)


class FrameSource(Generic[Job, Prepared]):
    """Prepared frames for the lanes: pulls jobs, deals them to the lanes in turn (job ``k`` to
    lane ``k % lanes``) and keeps ``ahead`` of them being prepared.

    Dealing by turn, not to whichever lane asks first, makes the frames of each lane, and so
    the batches of its decode steps, the same in every run: on a GPU, whose kernels round
    differently for other batch sizes, two lanes give the same answers run to run.

    Shared by the lanes' threads; one of them at a time pulls from ``jobs``.

    Args:
        jobs: What to prepare; consumed on the lanes' threads, one at a time.
        prepare: Starts preparing a job; the future's result is what :meth:`take` hands out.
        release: Frees a prepared result nobody took.
        stats: Receives the time spent waiting for jobs and their preparation.
        ahead: Jobs kept in preparation; a lane whose next job is further ahead than
            ``ahead + lanes - 1`` jobs waits for the other lanes to take theirs.
        lanes: The lanes that take frames.
    """

    def __init__(
        self,
        jobs: Iterator[Job],
        prepare: Callable[[Job], Future[Prepared]],
        release: Callable[[Prepared], None],
        stats: EngineStats,
        ahead: int,
        lanes: int = 1,
    ) -> None:
        self._jobs = jobs
        self._prepare = prepare
        self._release = release
        self._stats = stats
        self._ahead = ahead
        self._most = ahead + lanes - 1
        self._pending: list[deque[Future[Prepared]]] = [deque() for _ in range(lanes)]
        self._dealt = 0
        self._exhausted = False
        self._stopped = False
        self._changed = Condition()

    def take(self, lane: int, fits: Callable[[Prepared], bool]) -> Prepared | object | None:
        """Lane ``lane``'s next prepared result, if ``fits`` takes it; waits while it is being
        prepared (or not yet pulled, while the other lanes hold the frames being prepared).

        Returns:
            The result; ``None`` when the next does not fit; :data:`END` when the lane gets
            no more.
        """
        mine = self._pending[lane]
        while True:
            with self._changed:
                while True:
                    if self._stopped:
                        return END
                    self._top_up(lane)
                    if mine or self._exhausted:
                        break
                    t0 = time.perf_counter()
                    self._changed.wait()
                    self._stats.wait_s += time.perf_counter() - t0
                if not mine:
                    return END
                head = mine[0]
                if head.done():
                    item = head.result()
                    if not fits(item):
                        return None
                    mine.popleft()
                    self._top_up(lane)
                    self._changed.notify_all()
                    return item
            t0 = time.perf_counter()
            futures_wait([head])
            with self._changed:
                self._stats.wait_s += time.perf_counter() - t0

    def _top_up(self, lane: int) -> None:
        """Pull jobs until ``ahead`` are being prepared, and on until ``lane`` has one if that
        stays within the most allowed (the lock is held)."""
        while not self._exhausted:
            held = sum(len(pending) for pending in self._pending)
            if held >= self._most or (held >= self._ahead and self._pending[lane]):
                return
            t0 = time.perf_counter()
            job = next(self._jobs, None)
            self._stats.wait_s += time.perf_counter() - t0
            if job is None:
                self._exhausted = True
                self._changed.notify_all()
            else:
                self._pending[self._dealt % len(self._pending)].append(self._prepare(job))
                self._dealt += 1

    def stop(self) -> None:
        """Make every :meth:`take` answer :data:`END` from now on."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def close(self) -> None:
        """Free the results prepared but never taken."""
        for pending in self._pending:
            while pending:
                future = pending.popleft()
                try:
                    item = future.result()
                except Exception:  # noqa: BLE001, S112  (already raised on a lane, or tearing down)
                    continue
                self._release(item)
