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

The ends of a command's output live here too: SIGPIPE from a reader that stopped, and an output
that cannot be written (:func:`end_quietly_when_the_reader_stops`, :func:`printing_command`).
"""

from __future__ import annotations

import _thread
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any, NoReturn, ParamSpec, TextIO

from pipeline.errors import OutputError

P = ParamSpec("P")
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received: int | None = None
_deferred = False  # a signal is noted, not raised (stops_deferred)
_ended = False  # the exit code is chosen: signals are ignored from here on (exit_with)


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
    if _ended:
        return
    if _received is not None:  # the second one: stop now
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received = signum
    if not _deferred:
        raise Stopped(signum)


def check_stopped() -> None:
    """Raise :class:`Stopped` if a signal arrived (and its exception was swallowed)."""
    if _received is not None:
        raise Stopped(_received)


@contextmanager
def stops_deferred() -> Iterator[None]:
    """Within the block, a signal (under :func:`stop_on_signals`) is noted, not raised, until
    :func:`resume_stops`, and raised as :class:`Stopped` at the block's end: Hydra composing
    the config, where an exception raised inside OmegaConf is replaced by another in its
    cleanup (``AttributeError``, Hydra's several lines) and a stop would read as a crash."""
    global _deferred
    _deferred = True
    try:
        yield
    finally:
        _deferred = False
    check_stopped()


def resume_stops() -> None:
    """Within :func:`stops_deferred`: raise a signal noted so far as :class:`Stopped`, and raise
    the next ones at once."""
    global _deferred
    _deferred = False
    check_stopped()


def defer_stops() -> None:
    """Within :func:`stops_deferred`, after a run that said its own stop, if any: note the next
    signals again (Hydra composes a sweep's next job), that one said."""
    global _deferred, _received
    _deferred, _received = True, None


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
            signal.signal(signum, signal.SIG_IGN if _ended else handler)


def exit_with(code: int) -> NoReturn:
    """End the command with ``code``, which its record (a run's summary) already holds: a
    signal from here on is ignored, as Python shuts down, where the default action would end
    the process with another code (143) and no line."""
    global _ended
    _ended = True
    sys.exit(code)


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
    """Make standard output safe for a command whose output is what it is for (a sub-command,
    a dry run), for commands that print and change nothing after printing:

    - SIGPIPE ends the process without a word, as it ends ``cat``: output that goes to a
      reader that stops early (``python -m pipeline.status ... | head``) ends there (exit 141
      in the shell) instead of with a ``BrokenPipeError`` traceback.
    - Any other output that cannot be written (``>/dev/full``, an I/O error, ``>&-``) raises
      :class:`~pipeline.errors.OutputError` (a ``UserError``: one line, exit 1) at the print
      that met it: each print is flushed at once, so nothing is left to fail unseen when
      Python flushes at exit (``Exception ignored ...``, exit 120), and a closed output is
      not taken for a written one.
    """
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if not isinstance(sys.stdout, CheckedOutput):
        sys.stdout = CheckedOutput(sys.stdout)  # print() needs only write and flush


def printing_command(main: Callable[P, int]) -> Callable[P, int]:
    """Make ``main`` a sub-command's main whose output is what it is for: standard output made
    safe first (:func:`end_quietly_when_the_reader_stops`), and an output that cannot be
    written (its help, its lines) one ERROR line on stderr and exit 1, not a traceback; a crash
    (a bug) too, as a run's: ``crashed: <type>: <message> (traceback in <file>)``."""

    @functools.wraps(main)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> int:
        end_quietly_when_the_reader_stops()
        try:
            return main(*args, **kwargs)
        except OutputError as error:
            _say_error(str(error))
            return 1
        except Exception as error:  # noqa: BLE001  (a bug: one line, its traceback in a file)
            from pipeline.runlog import crash_line  # only now: nothing more to load on the way in

            _say_error(crash_line(error, None))
            return 1

    return guarded


def show(text: str, done: str) -> int:
    """Print ``text``, the line a command ends with after its work: 0; where it cannot be
    written, one ERROR line on stderr that says so and that the work is ``done`` (``the
    report is written: PATH``): 1."""
    try:
        print(text)
    except OutputError as error:
        _say_error(f"{error}; {done}")
        return 1
    return 0


def _say_error(message: str) -> None:
    from pipeline.runlog import say_error  # only now: nothing more to load on the way in

    say_error(message)


class CheckedOutput:
    """A text stream (standard output) whose every write is flushed at once and whose failure
    is an :class:`~pipeline.errors.OutputError` (see :func:`end_quietly_when_the_reader_stops`).
    After one failure, what is still printed is dropped: ``flush`` does nothing more, so that
    Python's flush at exit adds no second message.

    Args:
        stream: The stream written through; ``None`` where the output is closed (Python's
            ``sys.stdout`` when the command started with ``>&-``).
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.failed: str | None = None

    def write(self, text: str) -> int:
        """Write and flush ``text``.

        Raises:
            OutputError: It cannot be written (or an earlier write could not).
        """
        if self.failed is None and self.stream is None:
            self.failed = "it is closed"
        if self.failed is not None:
            raise OutputError(f"cannot write to standard output: {self.failed}")
        assert self.stream is not None
        try:
            written = self.stream.write(text)
            self.stream.flush()
        except OSError as error:
            self._drop(error)
            raise OutputError(f"cannot write to standard output: {self.failed}") from error
        return written

    def flush(self) -> None:
        """Flush what is written (nothing once a write failed: it is dropped)."""
        if self.failed is None and self.stream is not None:
            try:
                self.stream.flush()
            except OSError as error:
                self._drop(error)
                raise OutputError(f"cannot write to standard output: {self.failed}") from error

    def _drop(self, error: OSError) -> None:
        from pipeline.runlog import discard  # only now: nothing more to load on the way in

        self.failed = error.strerror or str(error)
        discard(self.stream)

    def __getattr__(self, name: str) -> Any:
        """Everything else (``isatty``, ``encoding``, ``fileno``, ...) is the stream's."""
        return getattr(self.stream, name)
