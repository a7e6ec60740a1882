"""A run's progress on a terminal: a videos bar and a frames bar, each with its total and ETA,
and the run's log lines printed above them instead of through them.

The frames bar starts from an estimate (each video's expected samples, from its container's
duration, less the frames already answered) and takes each video's real count as soon as it
is decoded, so its total and ETA sharpen as the run goes; with a sampler that decides by
content (``sampler=scene``) the total is known once every video is decoded. Off the terminal
(cron, systemd, a pipe) there are no bars and the log lines go out as they are.
"""

from __future__ import annotations

from contextlib import ExitStack

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


class Progress:
    """The bars of one run (a ``with`` block).

    Args:
        expected_frames: Frames each video to caption is expected to send to the model
            (``None``: not known before it is decoded).
        enabled: Show bars (stderr is a terminal); otherwise every call does nothing.
    """

    def __init__(self, expected_frames: list[int | None], enabled: bool) -> None:
        self.enabled = enabled
        self._expected = list(expected_frames)
        self._stack = ExitStack()
        self._videos = tqdm(total=len(self._expected), desc="videos", unit="video", disable=True)
        self._frames = tqdm(desc="frames", unit="frame", disable=True)

    def __enter__(self) -> Progress:
        if self.enabled:
            # Log records go through tqdm.write: printed above the bars, which are redrawn.
            self._stack.enter_context(logging_redirect_tqdm())
            self._videos = tqdm(total=len(self._expected), desc="videos", unit="video")
            self._frames = tqdm(total=self._total(), desc="frames", unit="frame")
        return self

    def __exit__(self, *exc: object) -> None:
        # Closed top first, so that they stay on screen in the order they were shown.
        self._videos.close()
        self._frames.close()
        self._stack.close()

    def frame_answered(self) -> None:
        """One more frame has its answers."""
        self._frames.update()

    def video_decoded(self, index: int, sent: int) -> None:
        """Video ``index`` is decoded and sent ``sent`` frames: its estimate becomes exact."""
        self._expected[index] = sent
        total = self._total()
        if self.enabled and total != self._frames.total:
            self._frames.total = total
            self._frames.refresh()

    def video_finished(self) -> None:
        """One more video is complete (done or failed)."""
        self._videos.update()

    def _total(self) -> int | None:
        return None if any(n is None for n in self._expected) else sum(n or 0 for n in self._expected)
