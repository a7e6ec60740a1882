"""What a chunk of results is: the one definition that the night (:mod:`pipeline.committed`)
and every reader (:func:`pipeline.store.read_results`) use.

A chunk is a file in a video's folder named ``<kind>-<config_id>-<written_ns>-<nonce>.parquet``
exactly as :class:`ChunkName` writes it. Anything else in that folder whose name does not start
with ``_`` or ``.`` (bookkeeping) is a *stray* (a backup copy ``part-…-backup.parquet``, a
Syncthing ``part-….sync-conflict-….parquet``, a renamed chunk): it is no result, nobody reads
it, and a night moves it aside as it does a damaged chunk. Two chunks that hold a key in common
are *twins* (a chunk copied under another chunk's name, or over one): the one whose file changed
first is read, the other is left out (:func:`twins`), so that no key is ever read twice. A
chunk read whole (every page, checksums checked) is remembered by its file's stamp in
``<video_id>/_verified.json`` (:func:`verified_stamps`): a reader then reads only the columns
it needs of it, and any other chunk whole, as the night would.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pipeline.files import read_json

VERIFIED_FILE = "_verified.json"


@dataclass(frozen=True)
class ChunkName:
    """The name of a chunk file, ``<kind>-<config_id>-<written_ns>-<nonce>.parquet``: the one
    place that writes, globs and reads it.

    Attributes:
        kind: ``part`` (answers) or ``errors`` (error records).
        config_id: The settings its rows were made with (letters, digits, ``_``).
        written_ns: When it was written (``time.time_ns()``).
        nonce: Letters and digits (random hex as written now), so that two chunks written in one
            nanosecond differ.
    """

    kind: str
    config_id: str
    written_ns: int
    nonce: str

    KINDS: ClassVar[tuple[str, ...]] = ("part", "errors")
    _FORM: ClassVar[re.Pattern[str]] = re.compile(r"(part|errors)-(\w+)-([0-9]+)-([0-9A-Za-z]+)\.parquet", re.ASCII)

    @classmethod
    def new(cls, kind: str, config_id: str) -> ChunkName:
        """A fresh name for a chunk written now."""
        return cls(kind, config_id, time.time_ns(), uuid.uuid4().hex[:8])

    @property
    def file_name(self) -> str:
        """The file's name."""
        return f"{self.kind}-{self.config_id}-{self.written_ns}-{self.nonce}.parquet"

    @classmethod
    def parse(cls, file_name: str) -> ChunkName | None:
        """The name's parts, or ``None`` when ``file_name`` is no chunk's name (a stray)."""
        form = cls._FORM.fullmatch(file_name)
        if form is None:
            return None
        return cls(form[1], form[2], int(form[3]), form[4])


def chunk_files(folder: Path, config_id: str | None = None, kinds: Iterable[str] = ChunkName.KINDS) -> list[Path]:
    """The chunk files of one video's ``folder`` (of ``config_id`` and ``kinds``, where given),
    sorted by name; strays are none of them."""
    wanted = set(kinds)
    found = []
    for path in _entries(folder):
        name = ChunkName.parse(path.name)
        if name is not None and name.kind in wanted and config_id in (None, name.config_id):
            found.append(path)
    return sorted(found)


def strays(folder: Path) -> list[Path]:
    """What stands in one video's ``folder`` that is neither a chunk nor bookkeeping (a name
    starting with ``_`` or ``.``): copies, backups, renamed chunks; sorted."""
    return sorted(p for p in _entries(folder) if not p.name.startswith(("_", ".")) and ChunkName.parse(p.name) is None)


def video_folders(output_dir: Path) -> list[Path]:
    """The video folders of ``output_dir`` (every folder whose name does not start with ``_``
    or ``.``), sorted."""
    return sorted(p for p in _entries(output_dir) if not p.name.startswith(("_", ".")) and p.is_dir())


def result_files(output_dir: Path) -> list[Path]:
    """The chunk files of every video of ``output_dir`` (answers and error records), sorted."""
    return [path for folder in video_folders(output_dir) for path in chunk_files(folder)]


def twins(keys_of: Mapping[Path, Iterable[Hashable]]) -> dict[Path, Path]:
    """The chunks to leave out because another holds a key of theirs: each → the chunk kept
    that holds it.

    Chunks are taken in the order their files last changed (``st_ctime_ns``: a copy, or a copy
    over a chunk, is newer than what it copies; then by name), and one is kept unless a chunk
    kept before holds one of its keys. The night (:func:`pipeline.committed.verify_chunks`) and
    the readers (:func:`pipeline.store.read_results`) both decide so, so they agree.
    """
    holder: dict[Hashable, Path] = {}
    left_out = {}
    for path in sorted(keys_of, key=_changed_order):
        keys = set(keys_of[path])
        kept = min((holder[key] for key in keys if key in holder), default=None)
        if kept is not None:
            left_out[path] = kept
            continue
        holder.update(dict.fromkeys(keys, path))
    return left_out


def file_stamp(path: Path) -> list[int]:
    """What tells that a chunk file changed: its size, modification and change time (``OSError``:
    it cannot be looked at)."""
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def verified_stamps(folder: Path) -> dict[str, Any]:
    """The chunks of one video's ``folder`` read whole since they last changed: name → its
    :func:`file_stamp` then (kept by :func:`pipeline.committed.verify_chunks`)."""
    return read_json(folder / VERIFIED_FILE) or {}


def read_whole_since(path: Path, verified: dict[str, Any]) -> bool:
    """Whether chunk ``path`` was read whole and is unchanged since (``verified``:
    :func:`verified_stamps` of its folder)."""
    try:
        return verified.get(path.name) == file_stamp(path)
    except OSError:
        return False


def _changed_order(path: Path) -> tuple[float, str]:
    try:
        return (path.stat().st_ctime_ns, path.name)
    except OSError:
        return (float("inf"), path.name)


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:  # not there (yet), or not a folder: as a glob, nothing
        return []
