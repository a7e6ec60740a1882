"""The run's log file: ``output_dir/_logs/<start><shard>.log``, beside the data it describes.

It holds what the console shows plus the traceback of a crash. Every line logged is one line,
in the file and on the console, whatever a message holds (:class:`OneLineFormatter`). A log file
that cannot be written (a full disk) is said once on the console and written no more
(:class:`LogFile`); the run goes on. Nothing is written to the
working folder (Hydra's ``outputs/`` is off), so a nightly job started from the same folder
every night leaves nothing behind there. A run that crashes before its ``output_dir`` is ready
puts the traceback in the user cache instead (``<cache>/logs/``); the one-line crash notice
names the file either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from pipeline.errors import StoreError
from pipeline.paths import check_file_or_nothing, user_cache_dir, writing_into
from pipeline.words import visible

_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"


class OneLineFormatter(logging.Formatter):
    """A formatter whose records are one line each: the control characters and line separators
    of the message made visible (:func:`pipeline.words.visible`), so that a file name holding a
    newline or an escape sequence cannot split a line or forge one. A traceback logged with the
    record (``exc_info``) follows on lines of its own, as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line, made visible."""
        return visible(super().formatMessage(record))


def console_formatter() -> logging.Formatter:
    """The one style of every line the tool prints on stderr, ``[hh:mm:ss LEVEL] message``: a
    run's (``conf/hydra/job_logging/pipeline.yaml`` names this function), a mistake found
    before Hydra starts, and the sub-commands'."""
    return OneLineFormatter("[%(asctime)s %(levelname)s] %(message)s", datefmt="%H:%M:%S")


def say_error(message: str) -> None:
    """Print one ERROR line on stderr in :func:`console_formatter`'s style, without going
    through logging (a mistake found before a run or a sub-command has set logging up)."""
    say(logging.ERROR, message)


def say(level: int, message: str) -> None:
    """Print one line at ``level`` on stderr in :func:`console_formatter`'s style, without going
    through logging. Where stderr is closed (``2>&-``) or cannot be written, the line is lost:
    nothing else may take its place (``print`` to a closed stderr would write on stdout)."""
    if sys.stderr is None:
        return
    record = logging.LogRecord("pipeline", level, "", 0, message, None, None)
    try:
        print(console_formatter().format(record), file=sys.stderr, flush=True)
    except OSError:  # 2>/dev/full: nowhere to say it
        discard(sys.stderr)


def discard(stream: TextIO | None) -> None:
    """Send what is still written to ``stream`` (stdout or stderr, found unwritable) nowhere:
    its descriptor is pointed at ``/dev/null``, so that the bytes left in its buffer do not
    fail again when Python flushes it at exit (``Exception ignored ...``, exit 120)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no descriptor: nothing to do
        descriptor = stream.fileno()  # type: ignore[union-attr]
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, descriptor)
        finally:
            os.close(null)


def console_logging() -> None:
    """Log INFO and above to stderr in :func:`console_formatter`'s style, unless logging is
    set up already (for the sub-commands, and for a mistake found before Hydra starts)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(console_formatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_stamp(started: float) -> str:
    """The name a run's files carry (its summary, its log, a crash's traceback): its start
    time, UTC."""
    return datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def log_folder(output_dir: Path) -> Path:
    """Where the runs on ``output_dir`` keep their log files."""
    return output_dir / "_logs"


class LogFile(logging.FileHandler):
    """A run's log file. Once it cannot be written (a full disk, an I/O error), it says so in
    one WARNING line on stderr and is written no more: logging's own handling would print a
    traceback on the console for every record (hundreds of lines), and closing the file would
    raise out of the run.

    Raises:
        OSError: The file cannot be created.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``, unless the file has failed before."""
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """A record that could not be written: the file is given up (see the class); any other
        failure (a log call whose arguments do not fit its message) is logging's to report."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            self._give_up(error)
        else:
            super().handleError(record)

    def close(self) -> None:
        """Close the file; what it still held that cannot be written is given up, not raised."""
        try:
            super().close()
        except OSError as error:
            self._give_up(error)

    def _give_up(self, error: OSError) -> None:
        if self.failed:
            return
        self.failed = True
        reason = error.strerror or str(error)
        say(
            logging.WARNING,
            f"cannot write the run's log file {self.baseFilename}: {reason}; the rest of this run's log "
            "is on the console only (free space on that disk, or make it writable)",
        )


class EarlyRecords(logging.Handler):
    """What a run logs before its log file can open (the videos found, a folder it cannot list),
    kept for that file (:func:`run_log`'s ``earlier``): the file holds the whole night, not what
    came after ``output_dir`` was ready. Installed on the root logger until :meth:`stop`."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        logging.getLogger().addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Keep ``record``."""
        self.records.append(record)

    def stop(self) -> list[logging.LogRecord]:
        """Keep no more; the records kept (once stopped, again: the same)."""
        logging.getLogger().removeHandler(self)
        return self.records


@contextmanager
def run_log(path: Path, earlier: list[logging.LogRecord] | None = None) -> Iterator[Path]:
    """Copy everything logged into ``path`` for the ``with`` block, after the ``earlier``
    records (:class:`EarlyRecords`).

    Raises:
        StoreError: The file cannot be created: its folder cannot be written (permissions, a
            full disk) or is not a folder (a file named ``_logs``), or something other than a
            file stands at its name (never opened: a named pipe would block); the line names it
            and the fix.
    """
    with writing_into(path.parent, "the run's log file", StoreError):
        check_file_or_nothing(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = LogFile(path)
    handler.setFormatter(OneLineFormatter(_FORMAT))
    for record in earlier or []:
        handler.handle(record)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


def crash_line(error: BaseException, log_file: Path | None) -> str:
    """The one line a crash (a bug: anything but a ``UserError``) ends a run or a sub-command
    with, ``crashed: <type>: <message> (traceback in <file>)``, its traceback written there
    (:func:`record_crash`)."""
    return f"crashed: {type(error).__name__}: {error} ({record_crash(error, log_file)})"


def record_crash(error: BaseException, log_file: Path | None) -> str:
    """Append ``error``'s traceback to the run's log file, or, before there is one, write it
    to a file of its own in the user cache; returns where it went, in words."""
    path = log_file or user_cache_dir() / "logs" / f"crash-{run_stamp(time.time())}.log"
    try:
        check_file_or_nothing(path)  # never opened: a named pipe there would block for ever
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    except OSError as failure:
        return f"traceback not written to {path}: {failure}"
    return f"traceback in {path}"
