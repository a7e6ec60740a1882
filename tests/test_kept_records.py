"""Records the pipeline keeps in ``output_dir`` and reads back, changed into valid JSON of another
shape (by hand, another version, a damaged disk: a wrong type, an absurd number, a bare ``NaN``):
each reader treats one that does not fit as one that does not read, so no night crashes for
ever and no sub-command prints a traceback; a night's record says only what happened."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.results import load_videos
from tests.conftest import ROOT, assert_one_line_error, cli_env, last_run, make_night, night_args, run_cli

# Values that stand in a field as raw JSON text (json.dumps would not write them so).
RAW = {"@INF@": "1e400", "@NAN@": "NaN", "@HUGE@": "9" * 400}


def write_raw(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON, its :data:`RAW` stand-ins as the raw text they stand for."""
    text = json.dumps(record)
    for stand_in, raw in RAW.items():
        text = text.replace(f'"{stand_in}"', raw)
    path.write_text(text)


def changed_run_record(out: Path, change: dict[str, Any]) -> list[Path]:
    """The night's run records (``_runs/`` and ``_last_run.json``) with ``change`` made to each."""
    paths = [*out.glob("_runs/*.json"), out / "_last_run.json"]
    for path in paths:
        write_raw(path, {**json.loads(path.read_text()), **change})
    return paths


# -- the run records -------------------------------------------------------------------------

RUN_CHANGES = [
    {"frames": "abc"}, {"wall_s": "abc"}, {"videos_done": "two"}, {"frames": "@INF@"}, {"rows": "@NAN@"},
    {"frames": "@HUGE@"}, {"frames_per_s": "fast"}, {"frames": True}, {"videos_failed": -1},
    {"engines": 5}, {"engines": [5]}, {"engines": [{"lanes": "two"}]}, {"engines": {"a": 1}},
    {"videos": 5}, {"videos": ["str"]}, {"videos": [{"path": "v.mp4", "video_id": "x", "status": "waiting",
                                                   "note": {"a": 1}}]},
    {"started": "2026-12-07T18:17:36"}, {"started": None}, {"started": 5}, {"finished": [1]},
    {"pid": 99999999999, "state": "running"}, {"pid": 0, "state": "running"}, {"pid": -1, "state": "running"},
    {"exit_code": "0"}, {"shard": ["x"]}, {"cwd": 5}, {"work_id": "../*"}, {"min_age_s": "@NAN@"},
]


@pytest.mark.parametrize("change", RUN_CHANGES, ids=lambda change: json.dumps(change)[:40])
def test_a_run_record_that_does_not_fit_is_skipped_by_status_with_one_warning(
    night: dict[str, Any], change: dict[str, Any]
) -> None:
    out = night["out"]
    runs, last = changed_run_record(out, {**change, "host": socket.gethostname()})

    result = run_cli("status", f"output_dir={out}")

    field = next(iter(change))  # the one that does not fit
    assert_one_line_error(result, 0, f"WARNING] not a run record, skipped: {runs} ({field}", f"{last} ({field}")
    assert "No runs recorded yet." in result.stdout


def test_a_night_pays_the_owed_report_past_run_records_that_do_not_fit(night: dict[str, Any]) -> None:
    """A record that does not fit once made every later night crash paying the report it owed
    (``int('abc')``), and leave it owed, so that the next crashed too."""
    out = night["out"]
    changed_run_record(out, {"frames": "abc"})
    (out / "_report-due").write_text('{"since": 1}')

    again = run_cli(*[arg.replace("report=false", "report=true") for arg in night["args"]])
    status = run_cli("status", f"output_dir={out}")

    assert_one_line_error(again, 0, "WARNING] not a run record, skipped:", "(frames is 'abc')")
    assert not (out / "_report-due").exists()
    assert "Owed: nothing" in status.stdout
    assert "exit 0  videos: 0 done, 2 skipped" in status.stdout  # the night read back: its own record


def test_the_report_skips_a_run_record_that_does_not_fit(night: dict[str, Any]) -> None:
    out = night["out"]
    changed_run_record(out, {"engines": [5], "videos": ["str"]})

    result = run_cli("report", f"output_dir={out}")

    assert_one_line_error(result, 0, "WARNING] not a run record, skipped:", "(engines[0] is 5)")
    assert (out / "_report.html").is_file()


def test_a_running_record_of_pid_0_does_not_hold_the_owed_report(night: dict[str, Any]) -> None:
    """``os.kill(0, 0)`` signals the process group, so it always succeeded: a record of pid 0
    (or -1) said running counted as a night under way for ever, and the report stayed owed."""
    out = night["out"]
    changed_run_record(out, {"state": "running", "pid": 0, "host": socket.gethostname(), "exit_code": None})
    (out / "_report-due").write_text('{"since": 1}')

    result = run_cli("report", f"output_dir={out}")

    assert_one_line_error(result, 0, "WARNING] not a run record, skipped:", "(pid is 0)")
    assert not (out / "_report-due").exists()


# -- a sub-command's crash ---------------------------------------------------------------------


def test_a_sub_commands_crash_is_one_line_as_a_runs(tmp_path: Path) -> None:
    """``python -m pipeline.status`` (not through ``python -m pipeline``) printed a bug's bare
    traceback; now it is one line, as a run's crash, the traceback in a file."""
    # A bug stood in for: the status module's main, its work made to fail.
    command = [sys.executable, "-c", "import sys; import pipeline.status as s; "
               "s.status_lines = lambda *a, **k: 1 / 0; sys.exit(s.main(sys.argv[1:]))",
               f"output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, env=cli_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                            timeout=120)

    assert_one_line_error(result, 1, "ERROR] crashed: ZeroDivisionError: division by zero (traceback in ")


# -- a video's facts (_video.json) -------------------------------------------------------------

FACTS_CHANGES = [
    {"size_bytes": "big"}, {"video_id": 7}, {"video_path": ["x"]}, {"video_id": "0123456789abcdef"},
    {"fps": "@NAN@"}, {"duration_s": "@INF@"}, {"frames_decoded": -5}, {"width": 1.5}, {"codec": {}},
    {"frame_count": "@HUGE@"}, {"last_frame_s": False},
]


def changed_facts(out: Path, change: dict[str, Any]) -> Path:
    """The night's video's ``_video.json``, with ``change`` made to it."""
    path = next(out.glob("*/_video.json"))
    write_raw(path, {**json.loads(path.read_text()), **change})
    return path


@pytest.mark.parametrize("change", FACTS_CHANGES, ids=lambda change: json.dumps(change)[:40])
def test_a_videos_facts_that_do_not_fit_are_left_out_of_the_report_with_one_warning(
    night: dict[str, Any], change: dict[str, Any]
) -> None:
    out = night["out"]
    facts = changed_facts(out, change)

    result = run_cli("report", f"output_dir={out}")

    assert_one_line_error(result, 0, f"WARNING] not a video's record, skipped: {facts} ({next(iter(change))} is ")
    assert (out / "_report.html").is_file()


def test_a_night_that_decodes_a_video_gathers_the_facts_past_one_that_does_not_fit(
    night: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Every night that decoded a video crashed gathering ``_videos.parquet`` (ArrowInvalid)."""
    out = night["out"]
    facts = changed_facts(out, {"size_bytes": "big"})
    more = make_night(tmp_path / "more", n_videos=1, n_frames=3)

    result = run_cli(*night_args(more, out, tiny_model_dir, tmp_path))
    export = run_cli("export", f"output_dir={out}", "format=csv")

    assert_one_line_error(result, 0, f"WARNING] not a video's record, skipped: {facts} (size_bytes is 'big')")
    assert last_run(out)["exit_code"] == 0
    assert len(pq.read_table(out / "_videos.parquet")) == 2  # the other video's and the new one's
    assert_one_line_error(export, 0, f"WARNING] not a video's record, skipped: {facts}")


def test_load_videos_leaves_out_facts_that_do_not_fit(night: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    out = night["out"]
    facts = changed_facts(out, {"video_path": ["x"]})

    videos = load_videos(out)

    assert len(videos) == 1  # the other video's
    assert f"not a video's record, skipped: {facts} (video_path is ['x'])" in caplog.text


# -- what a night owes (_report-due, _export-due) ----------------------------------------------

MARKER_CHANGES = [
    ("_export-due", {"formats": ["tsv"], "since": 1}), ("_export-due", {"formats": [["vtt"]], "since": 1}),
    ("_export-due", {"formats": "vtt", "since": 1}), ("_export-due", {"formats": ["vtt"], "since": "@HUGE@"}),
    ("_export-due", {"formats": ["vtt"], "since": 1e300}), ("_report-due", {"since": 1e300}),
    ("_report-due", {"since": "@NAN@"}), ("_report-due", {"since": "@HUGE@"}), ("_report-due", {"since": -5}),
]


@pytest.mark.parametrize(("name", "marker"), MARKER_CHANGES, ids=lambda value: json.dumps(value)[:40])
def test_a_marker_of_owed_work_that_does_not_fit_owes_it_all_and_a_night_pays_it(
    night: dict[str, Any], name: str, marker: dict[str, Any]
) -> None:
    """As one that does not read: the report owed since an unknown time, every export format
    owed. An unknown format once crashed every night (``ValueError: unknown export format``) and
    status offered a command that failed; a huge ``since`` gave status a traceback."""
    out = night["out"]
    write_raw(out / name, marker)

    status = run_cli("status", f"output_dir={out}")
    again = run_cli(*[arg.replace("report=false", "report=true") for arg in night["args"]])

    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    what = "the report" if name == "_report-due" else "the export all"
    assert f"  {what} (owed since the run of ?): the next run" in status.stdout
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert not (out / name).exists()
    assert name == "_report-due" or {path.suffix for path in (out / "_export").rglob("*.*")} >= {".csv", ".jsonl"}


# -- a video's done marker, the lock's text ----------------------------------------------------

DONE_CHANGES = [{"chunks": 5}, {"chunks": "abc"}, {"chunks": {"a": 1}}, {"chunks": ["a\u0000b"]}]


@pytest.mark.parametrize("change", DONE_CHANGES, ids=lambda change: json.dumps(change)[:40])
def test_a_done_marker_that_does_not_fit_reads_as_one_that_lists_no_chunks(
    night: dict[str, Any], change: dict[str, Any]
) -> None:
    """``{"chunks": 5}`` crashed every night (TypeError); ``"abc"`` read as three chunks gone, and
    the done video was captioned again."""
    out = night["out"]
    marker = next(out.glob("*/_done-*"))
    write_raw(marker, {**json.loads(marker.read_text()), **change})

    again = run_cli(*night["args"])

    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert last_run(out)["videos_skipped"] == 2 and last_run(out)["frames"] == 0, again.stderr


LOCK_TEXTS = [
    {"holders": {"a": 5}}, {"holders": {"a": None}}, {"holders": {"a": {"shard": "x"}}},
    {"holders": {"a": {"shard": 0, "num_shards": 1e400}}}, {"holders": {"0of1": {"shard": 0, "num_shards": 10**30}}},
]


@pytest.mark.parametrize("said", LOCK_TEXTS, ids=lambda said: json.dumps(said)[:40])
def test_a_lock_whose_text_does_not_fit_is_taken_as_a_garbage_one(night: dict[str, Any], said: dict[str, Any]) -> None:
    """The text only says who holds the lock, for a refused run's message: one that does not
    fit names nobody, as one that is not JSON (no run holds the lock here)."""
    out = night["out"]
    (out / "_lock").write_text(json.dumps(said))

    again = run_cli(*night["args"])

    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert json.loads((out / "_lock").read_text()) == {"holders": {}}


# -- a record from the future (a host whose clock runs fast, on a shared output_dir) ----------


def future_record(out: Path) -> Path:
    """A record of a run on another host whose clock runs a day fast, said running (it may run
    still, or have been killed: nothing here can tell)."""
    ahead = datetime.now(timezone.utc) + timedelta(days=1)
    record = {**last_run(out), "state": "running", "started": ahead.isoformat(), "finished": None, "exit_code": None,
              "host": "otherhost", "pid": 4242}
    path = out / "_runs" / f"{ahead:%Y%m%dT%H%M%S.%fZ}.json"
    path.write_text(json.dumps(record))
    return path


def test_the_report_a_night_writes_shows_that_night_not_a_record_from_the_future(
    night: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The header's last run was the newest record by date: the other host's, not the night's."""
    out = night["out"]
    future_record(out)
    more = make_night(tmp_path / "more", n_videos=1, n_frames=3)

    result = run_cli(*[arg.replace("report=false", "report=true") for arg in night_args(more, out, tiny_model_dir,
                                                                                        tmp_path)])

    assert result.returncode == 0, result.stderr
    shown = (out / "_report.html").read_text().split("<dt>last run</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert last_run(out)["started"][:19].replace("T", " ") in shown


def test_a_record_from_the_future_does_not_hold_what_is_owed(night: dict[str, Any]) -> None:
    """It was taken as a run under way until this machine's clock passed its date: status said
    so, and the report stayed owed."""
    out = night["out"]
    future_record(out)
    (out / "_report-due").write_text('{"since": 1}')

    status = run_cli("status", f"output_dir={out}")
    report = run_cli("report", f"output_dir={out}")

    assert "running (pid 4242) (dated ahead of this machine's clock: its host's clock runs fast" in status.stdout
    assert f"the next run with report=true writes it, or python -m pipeline.report output_dir={out}" in status.stdout
    assert report.returncode == 0, report.stderr
    assert not (out / "_report-due").exists()
