"""One run at a time per ``output_dir``.

The lock is an ``flock`` on ``output_dir/_lock``: the kernel drops it when the holding process
ends in any way, ``kill -9`` and power loss included, so a killed run never leaves a lock that
blocks the next one. The file also says who holds it, for the message a second run prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO

from pipeline.errors import LockHeld


class RunLock:
    """Hold ``output_dir/_lock`` for the life of a ``with`` block.

    Args:
        output_dir: The dataset folder (must exist).
        name: The lock file's name: shards of one night, whose videos are disjoint, each
            lock their own (``_lock-shard0of4``).

    Raises:
        LockHeld: On entry, when another process holds it.
    """

    def __init__(self, output_dir: Path, name: str = "_lock") -> None:
        self.path = output_dir / name
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunLock:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            raise LockHeld(
                f"another run holds {self.path} ({holder}); wait for it to finish, "
                "or use another output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv),
                }
            )
        )
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.truncate(0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
