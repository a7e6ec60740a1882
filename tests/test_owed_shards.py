"""What a sharded night owes (:mod:`pipeline.owed`): the last shard to finish captioning writes
it; two that end at the same moment never both leave it unpaid; a marker owed again after the
writer looked stays; a record left "running" counts only while its run may still be under way.
(Through ``python -m pipeline`` with two shards at once, one of them killed: tests/test_shards.py.)"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from pipeline.files import read_json
from pipeline.owed import (
    CAPTIONING_ENDED,
    EXPORT_DUE,
    REPORT_DUE,
    last_to_finish,
    owe_export,
    owe_report,
    pay_export,
    pay_report,
    still_captioning,
    under_way,
)
from pipeline.store import RUNS_DIR
from pipeline.summary import RunRecord, RunSummary


def running_shard(out: Path, shard: int, num_shards: int = 2) -> RunRecord:
    """The ``running`` record of a shard under way (this process stands for it)."""
    record = RunRecord(out, time.time(), f"-shard{shard}of{num_shards}", {
        "command": ["python", "-m", "pipeline"], "prompts": [], "model": "tiny", "config_id": None,
        "work_id": None, "min_age_s": 0,
    })
    record.start(RunSummary())
    return record


def test_of_two_shards_that_end_together_the_later_look_sees_the_other_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    owe_report(tmp_path, time.time())
    first, second = running_shard(tmp_path, 0), running_shard(tmp_path, 1)
    with caplog.at_level("INFO", logger="pipeline"):
        assert last_to_finish(tmp_path, first, RunSummary(), 0, 2, report=True) is None
    assert [r.getMessage() for r in caplog.records] == [
        "the report stays owed: shard 1 of 2 is still captioning; the last shard to finish writes it"
        " (the report if it runs with report=true, else the next run with it)"
    ]
    assert json.loads(first.last_path.read_text())[CAPTIONING_ENDED] is True  # said before it looked
    # The other looks after: it sees the first ended, so it writes (and so would both, had both
    # written their word before either looked: each file of the report is written atomically).
    assert last_to_finish(tmp_path, second, RunSummary(), 1, 2, report=True) is not None
    assert last_to_finish(tmp_path, first, RunSummary(), 0, 2, report=True) is not None


def test_a_shard_that_owes_nothing_says_nothing_and_a_run_without_shards_writes_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running_shard(tmp_path, 1)
    with caplog.at_level("INFO", logger="pipeline"):
        assert last_to_finish(tmp_path, running_shard(tmp_path, 0), RunSummary(), 0, 2, report=True) is None
        alone = RunRecord(tmp_path, time.time(), "", {})
        assert last_to_finish(tmp_path, alone, RunSummary(), 0, 1, report=True) is not None
    assert caplog.records == []
    assert not alone.path.exists()  # nothing written for a run without shards


def record_run(out: Path, shard: str | None, started: str, state: str, **fields: object) -> None:
    """A run's record as a run of ``shard`` (``shard1of2``, ``None``: no shards) writes it."""
    (out / RUNS_DIR).mkdir(exist_ok=True)
    record = {"started": started, "shard": shard, "pid": 1, "host": "another-host", "state": state, **fields}
    (out / RUNS_DIR / f"{started[:16]}-{shard or 'alone'}.json").write_text(json.dumps(record))


def test_a_running_record_counts_until_a_run_that_could_not_run_beside_it_started(tmp_path: Path) -> None:
    # Shard 1 of 2 on another host, said running (taken at its word), and its sibling.
    record_run(tmp_path, "shard1of2", "2026-01-01T01:00:00+00:00", "running")
    record_run(tmp_path, "shard0of2", "2026-01-01T01:00:05+00:00", "running")
    assert still_captioning(tmp_path, 0, 2) == ["shard 1 of 2"] and len(under_way(tmp_path)) == 2
    record_run(tmp_path, "shard0of2", "2026-01-01T01:00:05+00:00", "running", **{CAPTIONING_ENDED: True})
    assert still_captioning(tmp_path, 1, 2) == []  # its captioning ended: only what is owed is left
    # Killed there: the next night's shard 1 (the lock held it out while the old one ran) ends it.
    record_run(tmp_path, "shard1of2", "2026-01-02T01:00:00+00:00", "finished", exit_code=0)
    assert still_captioning(tmp_path, 0, 2) == []
    assert [run["shard"] for run in under_way(tmp_path)] == ["shard0of2"]
    # A run without shards, or of another sharding, could run beside none of them.
    record_run(tmp_path, None, "2026-01-03T01:00:00+00:00", "finished", exit_code=0)
    assert under_way(tmp_path) == []
    # A shard of this host whose process is gone did not finish: nobody waits for it.
    record_run(tmp_path, "shard1of2", "2026-01-04T01:00:00+00:00", "running", host=socket.gethostname(), pid=2**22 + 7)
    assert under_way(tmp_path) == [] and still_captioning(tmp_path, 0, 2) == []


def test_a_marker_owed_again_after_the_look_stays_owed(tmp_path: Path) -> None:
    owe_report(tmp_path, 100.0)
    owe_export(tmp_path, ["vtt"], 100.0)
    looked = last_to_finish(tmp_path, RunRecord(tmp_path, time.time(), "", {}), RunSummary(), 0, 1, report=True)
    assert looked is not None
    owe_report(tmp_path, 200.0)  # a shard starts captioning after the look
    owe_export(tmp_path, ["srt"], 200.0)
    pay_report(tmp_path, looked, lambda: tmp_path / "_report.html")
    assert pay_export(tmp_path, looked, lambda formats: tmp_path / "_export")
    assert read_json(tmp_path / REPORT_DUE) == {"since": 100.0}  # owed since the first run that owed it
    assert read_json(tmp_path / EXPORT_DUE) == {"formats": ["vtt", "srt"], "since": 100.0}
    looked = last_to_finish(tmp_path, RunRecord(tmp_path, time.time(), "", {}), RunSummary(), 0, 1, report=True)
    assert looked is not None
    written: list[list[str]] = []

    def export(formats: list[str]) -> Path:
        written.append(formats)
        return tmp_path / "_export"

    pay_report(tmp_path, looked, lambda: tmp_path / "_report.html")
    assert pay_export(tmp_path, looked, export)
    assert written == [["vtt", "srt"]]
    assert not (tmp_path / REPORT_DUE).exists() and not (tmp_path / EXPORT_DUE).exists()
