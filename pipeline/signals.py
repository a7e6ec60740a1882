"""Ctrl-C and SIGTERM: stop the run promptly, keep what is committed, exit 130 or 143.

While :func:`stop_on_signals` is active, SIGINT and SIGTERM raise :class:`Stopped` on the main
thread, wherever it is, as Ctrl-C raises ``KeyboardInterrupt``. Where that exception is
swallowed (Python drops an exception raised inside a ctypes callback, such as llama.cpp's log
callback), the signal is still remembered: the run loop calls :func:`check_stopped` at each
event, its safe point, and stops there. A second signal while the run is stopping ends the
process at once, as the signal's default does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None


class Stopped(BaseException):
    """A signal asked the run to stop (a ``BaseException``: no ``except Exception`` takes it).

    Attributes:
        signum: The signal.
        exit_code: The shell's code for it: 128 + the signal's number (130 Ctrl-C, 143 SIGTERM).
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:  # the second one: stop now
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received = signum
    raise Stopped(signum)


def check_stopped() -> None:
    """Raise :class:`Stopped` if a signal arrived (and its exception was swallowed)."""
    if _received is not None:
        raise Stopped(_received)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Stopped` for the ``with`` block (main thread only);
    the previous handlers come back after it."""
    global _received
    _received = None
    previous = {signum: signal.signal(signum, _handle) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
