"""One lock per ``output_dir``, for sharded and unsharded runs alike.

A run is shard ``i`` of ``n`` (a run without shards is shard 0 of 1). Runs may share an
``output_dir`` only when they are shards of one ``n`` with different ``i``: their videos are
disjoint. Any other pair (a run with shards and one without, shards of different ``n``, one
shard twice) would write keys twice, so the later run is refused (:class:`LockHeld`, exit 75).

Every run locks ``output_dir/_lock`` with POSIX byte-range locks (``fcntl``), which the kernel
drops when the holding process ends in any way, ``kill -9`` and power loss included (and which
NFS carries between machines), so a killed run never blocks the next one. The bytes locked
(the file need not have them):

- byte 0, the entry: held exclusively for the moment a run checks the others and takes its
  own locks, so that two runs never decide at once;
- byte ``n``, the sharding: held shared by every run with ``n`` shards; a run with another
  ``n`` finds it taken;
- one byte per (``i``, ``n``) above ``_SHARD_BASE``, the shard: held exclusively.

The file's text says who holds it (each run's pid, host, start, command and shard), for the
message a refused run prints.

A lock lives on the file, not on its name: deleting ``_lock`` under a running night (to "clear
a stale lock") lets the next run create and lock a new file beside it. So before each write a
run checks that the file at ``_lock`` is still the one it locked (:meth:`RunLock.check`), and
stops with one line if not, before it writes anything that the new holder also writes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import LockHeld, LockLost, StoreError
from pipeline.paths import in_place_of_a_file, room_or_rights, what_stands_at
from pipeline.shapes import Fields, between, misfit, optional, text

_ENTRY = 0
_SHARD_BASE = 1 << 40  # sharding bytes lie below, shard bytes above
_MOST_SHARDS = 1 << 31  # a shard byte of more lies beyond what a lock can name (off_t)
# A holder's entry in the file's text (:meth:`RunLock.__enter__` writes it).
HOLDER_FIELDS: Fields = {
    "shard": between(0, _MOST_SHARDS - 1), "num_shards": between(1, _MOST_SHARDS),
    **dict.fromkeys(("host", "started", "command"), optional(text)), "pid": optional(between(1, 2**31 - 1)),
}


class RunLock:
    """Hold ``output_dir/_lock`` as shard ``shard`` of ``num_shards`` for a ``with`` block.

    Args:
        output_dir: The dataset folder (must exist).
        shard: This run's shard (0 without shards).
        num_shards: The number of shards (1 without shards).
        when_alone: Called on entry, while no other run can start, when no other run holds
            the lock (e.g. to clean up what killed runs left).

    Raises:
        LockHeld: On entry, when a run that must not run beside this one holds it.
        StoreError: On entry, when the lock file cannot be written (full disk, permissions).
    """

    def __init__(
        self, output_dir: Path, shard: int, num_shards: int, when_alone: Callable[[], object] | None
    ) -> None:
        self.path = output_dir / "_lock"
        self.shard = shard
        self.num_shards = num_shards
        self.when_alone = when_alone
        self._fd: int | None = None

    @property
    def _name(self) -> str:
        return f"{self.shard}of{self.num_shards}"

    def __enter__(self) -> RunLock:
        if in_place_of_a_file(self.path) is not None:  # never opened: a device may act on it
            raise self._store_error(None)
        try:  # without blocking: a named pipe put there meanwhile would block the open for ever
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY, 0o644)
        except OSError as error:
            raise self._store_error(error) from error
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a named pipe, a device: not a file to lock
            os.close(fd)
            raise self._store_error(None)
        os.set_blocking(fd, True)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, _ENTRY)
            try:
                holders = self._live_holders(fd)
                self._check(fd, holders)
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, self.num_shards)
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _shard_byte(self.shard, self.num_shards))
                if not holders and self.when_alone is not None:
                    self.when_alone()
                holders[self._name] = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv),
                    "shard": self.shard,
                    "num_shards": self.num_shards,
                }
                _write_holders(fd, holders)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, _ENTRY)
        except OSError as error:
            os.close(fd)  # drops every lock this process took on the file
            raise self._store_error(error) from error
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, _ENTRY)
            holders = _read_holders(fd)
            holders.pop(self._name, None)
            _write_holders(fd, holders)
        except OSError:
            pass  # the text is only for messages; the locks go with the file below
        finally:
            os.close(fd)

    def held(self) -> bool:
        """Whether the file at ``output_dir/_lock`` is still the one this run locked (``True``
        outside the ``with``, where there is nothing to lose)."""
        if self._fd is None:
            return True
        mine = os.fstat(self._fd)
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def check(self) -> None:
        """Make sure the file at ``output_dir/_lock`` is still the one this run locked.

        Raises:
            LockLost: It was deleted or replaced (another run may hold the new one).
        """
        if not self.held():
            raise LockLost(
                f"{self.path} was deleted or replaced while this run held it, so another run may be writing "
                "there now: this run stops before its next write (what it committed is kept). Never delete "
                "_lock by hand: the lock of a killed run goes with the process"
            )

    def _live_holders(self, fd: int) -> dict[str, dict[str, Any]]:
        """The holders the file names whose shard lock is still held (killed runs dropped)."""
        live = {}
        for name, holder in _read_holders(fd).items():
            shard_byte = _shard_byte(holder["shard"], holder["num_shards"])
            if not _free(fd, shard_byte, 1):
                live[name] = holder
        return live

    def _check(self, fd: int, holders: dict[str, dict[str, Any]]) -> None:
        """Raise :class:`LockHeld` when a run that must not run beside this one holds the lock."""
        n = self.num_shards
        same_shard = not _free(fd, _shard_byte(self.shard, n), 1)
        other_sharding = not (_free(fd, 1, n - 1) and _free(fd, n + 1, _SHARD_BASE - n - 1))
        if not (same_shard or other_sharding):
            return
        if same_shard:
            others = {k: v for k, v in holders.items() if k == self._name}
            why = ""
        else:
            others = {k: v for k, v in holders.items() if v["num_shards"] != n}
            why = f"; a run {_sharding(self.shard, n)} beside it would write the same keys twice"
        holder = "; ".join(f"{_sharding(h['shard'], h['num_shards'])}: {json.dumps(h)}"
                           for h in others.values()) or "unknown process"
        raise LockHeld(
            f"another run holds {self.path} ({holder}){why}; wait for it to finish, or use another output_dir"
        )

    def _store_error(self, error: OSError | None) -> StoreError:
        """The line for a lock file that cannot be written (``error``), or for something
        other than a file standing at its name (``None``, or found now)."""
        kind = what_stands_at(self.path)
        if kind is not None:
            return StoreError(
                f"cannot use the lock file {self.path}: {kind} stands there, where the runs keep their lock file; "
                "move or rename it, then run again"
            )
        assert error is not None
        fix = room_or_rights(error, self.path.parent)
        if fix is None and error.errno == errno.ENOLCK:
            fix = "put output_dir on a file system that has file locks (on NFS, its lock service must run)"
        line = f"cannot write the lock file {self.path}: {error.strerror or error}"
        return StoreError(f"{line}; {fix}, then run again" if fix else line)


def _shard_byte(shard: int, num_shards: int) -> int:
    """The byte that stands for shard ``shard`` of ``num_shards`` (one per pair)."""
    return _SHARD_BASE + num_shards * (num_shards - 1) // 2 + shard


def _free(fd: int, start: int, length: int) -> bool:
    """Whether no other process holds any lock on ``length`` bytes from ``start`` (tested by
    taking and dropping an exclusive lock on them; this process holds none there)."""
    if length <= 0:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
    except OSError:
        return False
    fcntl.lockf(fd, fcntl.LOCK_UN, length, start)
    return True


def _sharding(shard: int, num_shards: int) -> str:
    return "without shards" if num_shards == 1 else f"as shard {shard} of {num_shards}"


def _read_holders(fd: int) -> dict[str, dict[str, Any]]:
    """The holders the file's text names (none if it is empty or not ours: not JSON, or not of
    :data:`HOLDER_FIELDS`). The text is only for messages: the locks themselves are the bytes."""
    size = os.fstat(fd).st_size
    try:
        said = json.loads(os.pread(fd, size, 0) or b"{}")
    except ValueError:
        return {}
    holders = said.get("holders") if isinstance(said, dict) else None
    if not isinstance(holders, dict) or not all(isinstance(h, dict) and _holder(h) for h in holders.values()):
        return {}
    return holders


def _holder(holder: dict[str, Any]) -> bool:
    """Whether a holder's entry fits :data:`HOLDER_FIELDS`, its shard one of its sharding."""
    return misfit(holder, HOLDER_FIELDS) is None and holder["shard"] < holder["num_shards"]


def _write_holders(fd: int, holders: dict[str, dict[str, Any]]) -> None:
    data = json.dumps({"holders": holders}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
