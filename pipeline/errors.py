"""The errors a user can fix, in one family.

A :class:`UserError` carries one line that names the problem and the fix; the command line
prints it and exits 1 (:class:`LockHeld`: 75). Any other exception is a bug: the command line
prints a one-line crash notice and puts the traceback in the run's log file. A ``ValueError``
is therefore always a bug (a caller passed something no config can produce), never a user's
mistake.

Errors that are values rather than exceptions (a video that cannot be read becomes an error
record and the night goes on) are not here: see :class:`pipeline.decode.VideoError`.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message is one line that says what and how."""


class ConfigError(UserError):
    """A config value is out of range or names nothing known (``sampler.interval_s=-1``)."""


class InputError(UserError):
    """The ``video=`` input names nothing usable; the message says what to pass."""


class WeightsError(UserError):
    """Model files are missing, unreadable or do not fit together; the message says the fix."""


class StoreError(UserError):
    """The output folder cannot be written; the message names it and the fix."""


class BuildError(UserError):
    """The installed llama-cpp-python cannot do what the config asks (layers on a GPU with a
    build that has no GPU offload); the message names the reinstall command."""


class ExecutorError(UserError):
    """The executor cannot start or its workers keep failing (no cluster, too few resources)."""


class LockHeld(UserError):
    """Another run holds the lock on ``output_dir``; the message names it."""


class LockLost(UserError):
    """The lock file of ``output_dir`` was removed or replaced while this run held it; the run
    stops before its next write (exit 1)."""


class OutputError(UserError):
    """Standard output cannot be written (``>/dev/full``, an I/O error, a closed descriptor):
    what a command had to show is lost, though the work it did stays done (exit 1)."""
