"""Ctrl-C, SIGTERM and SIGHUP: stop the run promptly, keep what is committed, exit 130, 143
or 129.

SIGHUP comes when the terminal or SSH session that started a run goes away; without a handler
it would end the process at once, with no line and no run summary. While
:func:`stop_on_signals` is active, SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` on the main
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

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received: int | None = None


class Stopped(BaseException):
    """A signal asked the run to stop (a ``BaseException``: no ``except Exception`` takes it).

    Attributes:
        signum: The signal.
        exit_code: The shell's code for it: 128 + the signal's number (130 Ctrl-C, 143 SIGTERM, 129
            SIGHUP).
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
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Stopped` for the ``with`` block (main thread
    only); the previous handlers come back after it. A signal that was ignored stays ignored
    (``nohup`` ignores SIGHUP so that the run outlives its terminal)."""
    global _received
    _received = None
    previous = {
        signum: signal.signal(signum, _handle)
        for signum in _SIGNALS
        if signal.getsignal(signum) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
