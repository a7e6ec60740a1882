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

A signal's handler runs at the next Python instruction, which may be the first of a callback
that C code calls (llama.cpp's log callback, while it loads a model); no exception can leave a
callback, so ctypes would print "Exception ignored on calling ctypes callback" with a
traceback. :func:`quiet_callbacks` drops such an exception without a word instead, and loses
no signal: a :class:`Stopped` is remembered as above, and a ``KeyboardInterrupt`` (outside
:func:`stop_on_signals`) is raised again at the main thread's next instruction outside it.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any

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


def say_stopped(signum: int, after: str = "") -> int:
    """Say on stderr that a signal stopped the command where no run says it (while Python loads
    the pipeline, the command line is checked or a sub-command runs), in one line in the style
    of every line: ``[hh:mm:ss WARNING] stopped by SIGINT<after>``; returns the exit code,
    128 + the signal's number."""
    import logging

    from pipeline.runlog import say  # only now: nothing more to load on the way in

    stop = Stopped(signum)
    say(logging.WARNING, f"{stop}{after}")
    return stop.exit_code


_quiet_codes: set[CodeType] = set()
_REDELIVER_S = 0.05
_previous_hook = sys.unraisablehook


def quiet_callbacks(*callbacks: Callable[..., Any]) -> None:
    """Keep a signal's exception that lands in one of these Python functions, called from C
    through ctypes, from being printed (see the module's docstring); other exceptions that
    leave them are printed as before."""
    global _previous_hook
    if sys.unraisablehook is not _unraisable:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _unraisable
    _quiet_codes.update(callback.__code__ for callback in callbacks)


def _unraisable(unraisable: Any) -> None:
    code = getattr(unraisable.object, "__code__", None)
    if code in _quiet_codes and issubclass(unraisable.exc_type, (Stopped, KeyboardInterrupt)):
        if not issubclass(unraisable.exc_type, Stopped):
            # Ctrl-C is not lost: raised again in a moment, from a thread, so that it lands
            # outside this hook (here it would land at once, in the hook itself).
            again = threading.Timer(_REDELIVER_S, _thread.interrupt_main)
            again.daemon = True  # a process that ends meanwhile is not held up by it
            again.start()
        return
    _previous_hook(unraisable)


def end_quietly_when_the_reader_stops() -> None:
    """Let SIGPIPE end the process without a word, as it ends ``cat``: a sub-command whose
    output goes to a reader that stops early (``python -m pipeline.status ... | head``) then
    ends there (exit 141 in the shell) instead of with a ``BrokenPipeError`` traceback. For
    commands that print and change nothing after printing."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
