"""Work a night owes after its captions: the report and the exports, kept as markers in
``output_dir`` until they are written.

A run that starts captioning with ``report=true`` makes ``_report-due``, and with ``export=``
makes ``_export-due`` (the formats owed, merged with any already owed); each marker goes once
its files are written. A run killed before then, or whose export failed (a full disk), leaves
the marker, and the next run writes what is owed, whether or not it captions anything.
``python -m pipeline.report`` and ``python -m pipeline.export``, writing to the night's place,
settle it too, unless a run is under way (its later captions would be missing from them).
``python -m pipeline.status`` shows what is owed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.files import read_json, write_json_atomic
from pipeline.summary import RUNNING, read_runs, run_state

REPORT_DUE = "_report-due"
EXPORT_DUE = "_export-due"


def owe_report(output_dir: Path, since: float) -> None:
    """Record that a report is due (``since``: the start of the run that owes it).

    Raises:
        StoreError: The marker cannot be written.
    """
    write_json_atomic(output_dir / REPORT_DUE, {"since": since})


def owe_export(output_dir: Path, formats: list[str], since: float) -> None:
    """Record that exports of ``formats`` are due, beside any already owed.

    Raises:
        StoreError: The marker cannot be written.
    """
    before = read_json(output_dir / EXPORT_DUE) or {}
    merged = list(dict.fromkeys([*owed_export(output_dir), *formats]))
    write_json_atomic(output_dir / EXPORT_DUE, {"formats": merged, "since": before.get("since", since)})


def owed_export(output_dir: Path) -> list[str]:
    """The export formats owed (none: ``[]``; a marker that does not read owes them all)."""
    path = output_dir / EXPORT_DUE
    if not path.exists():
        return []
    formats = (read_json(path) or {}).get("formats")
    return [str(f) for f in formats] if isinstance(formats, list) and formats else ["all"]


def owed(output_dir: Path) -> dict[str, dict[str, Any] | None]:
    """What is owed, for ``status``: ``report`` and ``export``, each ``None`` when nothing is,
    else its marker (``since``: the start of the run that first owed it; ``formats``)."""
    found: dict[str, dict[str, Any] | None] = {}
    for kind, marker in (("report", REPORT_DUE), ("export", EXPORT_DUE)):
        path = output_dir / marker
        found[kind] = (read_json(path) or {}) if path.exists() else None
    if found["export"] is not None:
        found["export"]["formats"] = owed_export(output_dir)
    return found


def paid(output_dir: Path, marker: str) -> None:
    """Drop a marker once what it owed is written."""
    (output_dir / marker).unlink(missing_ok=True)


def settle_report(output_dir: Path) -> None:
    """The report was written where a night writes it, by ``python -m pipeline.report``: it is
    no longer owed, unless a run is under way.

    Raises:
        OSError: The marker cannot be removed.
    """
    if not _run_under_way(output_dir):
        paid(output_dir, REPORT_DUE)


def settle_export(output_dir: Path, written: list[str], every: list[str]) -> None:
    """Exports of ``written`` formats were written where a night writes them, by
    ``python -m pipeline.export``: only the other formats owed stay owed (``every``: what
    ``all`` stands for), unless a run is under way.

    Raises:
        StoreError: The marker cannot be rewritten.
        OSError: It cannot be removed.
    """
    owed_now = owed_export(output_dir)
    if not owed_now or _run_under_way(output_dir):
        return
    left = [f for f in (every if "all" in owed_now else owed_now) if f not in written]
    if not left:
        paid(output_dir, EXPORT_DUE)
        return
    before = read_json(output_dir / EXPORT_DUE) or {}
    write_json_atomic(output_dir / EXPORT_DUE, {"formats": left, "since": before.get("since")})


def _run_under_way(output_dir: Path) -> bool:
    return any(run_state(record) == RUNNING for record in read_runs(output_dir))
