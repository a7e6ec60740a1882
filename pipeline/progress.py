"""A run's progress on a terminal: a videos bar and a frames bar, each with its total and ETA,
and the run's log lines printed above them instead of through them.

The frames bar starts from an estimate (each video's expected samples, from its container's
duration, less the frames already answered) and takes each video's real count as soon as it
is decoded, so its total and ETA sharpen as the run goes; with a sampler that decides by
content (``sampler=scene``) the total is known once every video is decoded. Off the terminal
(cron, systemd, a pipe) there are no bars: the log lines go out as they are, and every
``progress_interval_s`` a progress line says the same as the bars (frames done of the total,
frames/s, ETA), so that a long video is not a long silence in a journal.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.words import duration, plural

log = logging.getLogger(__name__)


class Progress:
    """The bars of one run (a ``with`` block).

    Args:
        expected_frames: Frames each video to caption is expected to send to the model
            (``None``: not known before it is decoded).
        enabled: Show bars (stderr is a terminal).
        interval_s: Without bars, log a progress line this often (``None``: never).
    """

    def __init__(self, expected_frames: list[int | None], enabled: bool, interval_s: float | None = None) -> None:
        self.enabled = enabled
        self._expected = list(expected_frames)
        self._stack = ExitStack()
        self._videos = tqdm(total=len(self._expected), desc="videos", unit="video", disable=True)
        self._frames = tqdm(desc="frames", unit="frame", disable=True)
        self._interval_s = None if enabled else interval_s
        self._frames_done = 0
        self._videos_done = 0
        self._started = time.monotonic()
        self._stopped = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.enabled:
            # Log records go through tqdm.write: printed above the bars, which are redrawn.
            self._stack.enter_context(logging_redirect_tqdm())
            self._videos = tqdm(total=len(self._expected), desc="videos", unit="video")
            self._frames = tqdm(total=self._total(), desc="frames", unit="frame")
        elif self._interval_s is not None and self._expected:
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._ticker.is_alive():
            self._ticker.join()
        # Closed top first, so that they stay on screen in the order they were shown.
        self._videos.close()
        self._frames.close()
        self._stack.close()

    def frame_answered(self) -> None:
        """One more frame has its answers."""
        self._frames_done += 1
        self._frames.update()

    def line(self) -> str:
        """``progress: 1/3 videos, 40/120 frames, 2.10 frames/s, ETA 38 s``: the bars' figures
        in words."""
        total = self._total()
        elapsed_s = time.monotonic() - self._started
        rate = self._frames_done / elapsed_s if elapsed_s > 0 else 0.0
        frames = f"{self._frames_done}/{total}" if total is not None else f"{self._frames_done}/?"
        if total is None:
            eta = "ETA once every video is decoded (the sampler counts frames as it goes)"
        elif rate > 0:
            eta = f"ETA {duration(max(total - self._frames_done, 0) / rate)}"
        else:
            eta = "ETA after the first answer"
        return (
            f"progress: {self._videos_done}/{plural(len(self._expected), 'video')}, {frames} frames, "
            f"{rate:.2f} frames/s, {eta}"
        )

    def _tick(self) -> None:
        assert self._interval_s is not None
        while not self._stopped.wait(self._interval_s):
            log.info("%s", self.line())

    def video_decoded(self, index: int, sent: int) -> None:
        """Video ``index`` is decoded and sent ``sent`` frames: its estimate becomes exact."""
        self._expected[index] = sent
        total = self._total()
        if self.enabled and total != self._frames.total:
            self._frames.total = total
            self._frames.refresh()

    def video_finished(self) -> None:
        """One more video is complete (done or failed)."""
        self._videos_done += 1
        self._videos.update()

    def _total(self) -> int | None:
        return None if any(n is None for n in self._expected) else sum(n or 0 for n in self._expected)
