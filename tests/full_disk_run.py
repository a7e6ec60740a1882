"""``python -m tests.full_disk_run ARGS``: ``python -m pipeline ARGS`` on a disk that is full
under one folder, without root (no small tmpfs): every GGUF file written below it (the
generated tiny model, the projector's reference-layout copies) takes ``FULL_DISK_ROOM`` bytes
(default 0), then each write fails as the kernel fails it, with ``[Errno 28] No space left on
device`` (``FULL_DISK_ERRNO`` another: ``EDQUOT``).

Environment:
    FULL_DISK_UNDER: the folder that is full.
    FULL_DISK_ROOM: bytes each file still takes.
    FULL_DISK_ERRNO: the error's name (``ENOSPC`` unless given).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import gguf


class FullFile:
    """A binary file opened for writing that takes ``room`` bytes, then fails each write."""

    def __init__(self, file: Any, room: int, code: int) -> None:
        self.file, self.room, self.code = file, room, code

    def write(self, data: Any) -> int:
        """Write ``data`` while it fits; else raise the disk's ``OSError``."""
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(self.code, os.strerror(self.code))
        self.room -= size
        return int(self.file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


def gguf_files_full_under(folder: Path, room: int = 0, code: int = errno.ENOSPC) -> Callable[..., None]:
    """A ``GGUFWriter.open_output_file`` whose files below ``folder`` are :class:`FullFile`."""
    open_output_file = gguf.GGUFWriter.open_output_file

    def opened(writer: gguf.GGUFWriter, path: Path | None = None) -> None:
        open_output_file(writer, path)
        if writer.fout and writer.path is not None and Path(writer.path).resolve().is_relative_to(folder.resolve()):
            writer.fout = cast(Any, [FullFile(file, room, code) for file in writer.fout])

    return opened


def main() -> None:
    """Fill the disk under ``FULL_DISK_UNDER`` and run the command line."""
    gguf.GGUFWriter.open_output_file = gguf_files_full_under(  # type: ignore[method-assign]
        Path(os.environ["FULL_DISK_UNDER"]), int(os.environ.get("FULL_DISK_ROOM", "0")),
        getattr(errno, os.environ.get("FULL_DISK_ERRNO", "ENOSPC")),
    )
    from pipeline.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
