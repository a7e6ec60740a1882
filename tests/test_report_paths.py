"""The report and the export read what a night recorded as the night meant it, wherever they
run from: a relative ``video_path`` is placed in the folder the night ran in (not the current
folder), and rows whose file holds no ``config_id`` (null) are counted, shown and exported like
every other row."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.errors import UserError
from pipeline.export import export, tracks_of
from pipeline.report import write_report
from pipeline.results import counts, load_results, slowest_frames, video_summary
from pipeline.store import RUNS_DIR, SCHEMA
from tests.conftest import result_row, run_cli, tinted, write_results, write_video
from tests.test_results import COUNT, write_settings
from tests.test_structured import schema_row

FILE_LINK = re.compile(r'(?:href|src)="(file:[^"#]*)')


def test_a_report_written_from_another_folder_links_the_videos_the_night_read(
    cli_base: list[str], tmp_path: Path
) -> None:
    night, elsewhere = tmp_path / "night", tmp_path / "elsewhere"
    for folder, red in ((night, 200), (elsewhere, 20)):  # the same relative name, other content
        (folder / "clips").mkdir(parents=True)
        write_video(folder / "clips" / "clip.webm", fourcc="VP80", colour_of=tinted(red))
    args = [a for a in cli_base if not a.startswith("output_dir=")]
    done = run_cli(*args, "video=clips/clip.webm", "output_dir=out", "report=false", cwd=night)
    assert done.returncode == 0, done.stderr
    clip = (night / "clips" / "clip.webm").as_uri()

    written = run_cli("report", f"output_dir={night / 'out'}", cwd=elsewhere)

    assert written.returncode == 0, written.stderr
    page = (night / "out" / "_report.html").read_text(encoding="utf-8")
    assert set(FILE_LINK.findall(page)) == {clip}, FILE_LINK.findall(page)
    assert f'<video controls preload="none" src="{clip}">' in page  # VP8: it plays

    # Moved away since: the links still say where the night read it; no player plays the other
    # clip of that name here.
    shutil.move(night / "clips", tmp_path / "moved")
    assert run_cli("report", f"output_dir={night / 'out'}", cwd=elsewhere).returncode == 0
    page = (night / "out" / "_report.html").read_text(encoding="utf-8")
    assert set(FILE_LINK.findall(page)) == {clip} and "<video" not in page


def test_a_run_record_that_names_its_folder_places_its_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record's ``cwd`` (the folder the run ran in) places the paths it lists, however its
    ``output_dir`` was given (here absolute, which says nothing of that folder)."""
    night, elsewhere, out = tmp_path / "night", tmp_path / "elsewhere", tmp_path / "out"
    write_results(out, [result_row("a", 0, video_path="clips/a.mp4")])
    (out / RUNS_DIR).mkdir()
    (out / RUNS_DIR / "1.json").write_text(json.dumps({
        "state": "finished", "started": "2026-01-01T00:00:00+00:00", "exit_code": 0, "cwd": str(night),
        "videos": [{"path": "clips/a.mp4", "video_id": "a", "status": "done"}],
    }))
    (elsewhere / "clips").mkdir(parents=True)
    write_video(elsewhere / "clips" / "a.mp4")  # not video a's content
    monkeypatch.chdir(elsewhere)

    page = write_report(out).read_text(encoding="utf-8")

    assert set(FILE_LINK.findall(page)) == {(night / "clips" / "a.mp4").as_uri()}


def test_the_export_finds_a_video_named_by_its_path_where_the_night_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``video=<path>`` names the file the night read, given as a path from here; the file of
    that relative name here (another video's content) is not it."""
    night, elsewhere, out = tmp_path / "night", tmp_path / "elsewhere", tmp_path / "out"
    rows = [result_row("a", 0, video_path="clips/a.mp4"), result_row("b", 0, video_path="clips/b.mp4")]
    write_results(out, rows)
    (out / RUNS_DIR).mkdir()
    (out / RUNS_DIR / "1.json").write_text(json.dumps({
        "state": "finished", "started": "2026-01-01T00:00:00+00:00", "exit_code": 0, "cwd": str(night),
        "videos": [{"path": f"clips/{v}.mp4", "video_id": v, "status": "done"} for v in "ab"],
    }))
    (elsewhere / "clips").mkdir(parents=True)
    write_video(elsewhere / "clips" / "a.mp4")
    monkeypatch.chdir(elsewhere)

    written = export(out, ["vtt"], video=str(night / "clips" / "b.mp4"))

    assert [path.name for path in written.files if path.suffix == ".vtt"] == ["b.prompt1.vtt"]
    with pytest.raises(ValueError, match="is not in the results"):
        export(out, ["vtt"], video=str(elsewhere / "clips" / "a.mp4"))


# -- rows whose file holds no config_id ------------------------------------------------------


@pytest.fixture
def without_config_id(tmp_path: Path) -> Path:
    """Video ``a``: frames 0 and 25 in a file of a schema without ``config_id`` (null when
    read), frame 50 under ``cfg1``; video ``b``: frame 0 under ``cfg1``."""
    out = tmp_path / "out"
    older = pa.schema([f for f in SCHEMA if f.name != "config_id"])
    write_results(out, [result_row("a", 0), result_row("a", 25)], schema=older)
    write_results(out, [result_row("a", 50), result_row("b", 0)])
    return out


def test_every_row_is_counted_once_where_some_have_no_config_id(without_config_id: Path) -> None:
    df = load_results(without_config_id)
    assert df["config_id"].isna().sum() == 2

    summary = video_summary(df)
    frames = slowest_frames(df, n=100)

    assert counts(df)["frames"] == 4 and counts(df)["answers"] == 4
    assert int(summary["ok_rows"].sum()) == 4 and int(summary["frames"].sum()) == 4
    assert len(frames) == 4 and int(frames["answers"].sum()) == 4
    assert sorted(frames["frame_index"]) == [0, 0, 25, 50]


def test_answers_without_config_id_are_named_apart_from_those_with_one(without_config_id: Path) -> None:
    page = write_report(without_config_id).read_text(encoding="utf-8")

    assert page.count("tiny config not recorded · ") == 2 and page.count("tiny config cfg1 · ") == 1


def test_a_relative_path_two_nights_recorded_names_the_one_it_names_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nights run in two folders both recorded ``clips/a.mp4``, other videos: from one of
    those folders, the name is that folder's video."""
    one, two, out = tmp_path / "one", tmp_path / "two", tmp_path / "out"
    write_results(out, [result_row("a", 0, video_path="clips/a.mp4"), result_row("b", 0, video_path="clips/a.mp4")])
    (out / RUNS_DIR).mkdir()
    for name, (cwd, video_id) in {"1": (one, "a"), "2": (two, "b")}.items():
        (out / RUNS_DIR / f"{name}.json").write_text(json.dumps({
            "state": "finished", "started": f"2026-01-0{name}T00:00:00+00:00", "exit_code": 0, "cwd": str(cwd),
            "videos": [{"path": "clips/a.mp4", "video_id": video_id, "status": "done"}],
        }))
    (two / "clips").mkdir(parents=True)
    monkeypatch.chdir(two)

    written = export(out, ["csv"], video="clips/a.mp4")

    assert {p.parent.name for p in written.files} == {"a.b"}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="matches 2 videos"):
        export(out, ["csv"], video="clips/a.mp4")


def test_rows_without_a_prompt_id_make_no_track_and_stop_nothing(tmp_path: Path) -> None:
    """Rows of a file written without ``prompt_id`` or ``config_id`` (foreign or hand-made data)."""
    out = tmp_path / "out"
    older = pa.schema([f for f in SCHEMA if f.name not in ("config_id", "prompt_id")])
    write_results(out, [result_row("a", 0), result_row("a", 25)], schema=older)
    write_results(out, [result_row("b", 0)])

    written = export(out, ["vtt", "jsonl"])

    assert sorted(p.name for p in written.files if p.suffix == ".vtt") == ["b.prompt1.vtt"]
    assert len(pd.read_json(out / "_export" / "captions.jsonl", lines=True)) == 3
    assert write_report(out).is_file()


def test_answers_without_config_id_are_exported_in_tracks_of_their_own(without_config_id: Path) -> None:
    written = export(without_config_id, ["vtt", "jsonl"])

    tracks = {(t.video_id, t.config_id, t.label): [c.frame_index for c in t.cues] for t in tracks_of(
        pd.read_json(without_config_id / "_export" / "captions.jsonl", lines=True, dtype={"config_id": object})
    )}
    assert tracks == {
        ("a", "not recorded", "prompt1-no-config-id"): [0, 25], ("a", "cfg1", "prompt1-cfg1"): [50],
        ("b", "cfg1", "prompt1"): [0],
    }
    vtt = sorted(path.name for path in written.files if path.suffix == ".vtt")
    assert vtt == ["a.prompt1-cfg1.vtt", "a.prompt1-no-config-id.vtt", "b.prompt1.vtt"]
    assert "config_id: not recorded" in (without_config_id / "_export" / "a" / "a.prompt1-no-config-id.vtt").read_text()


def test_the_structured_section_counts_answers_without_config_id(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rows = [schema_row("a", 0, COUNT, {"people": 1, "outdoor": True}, config_id=None),
            schema_row("a", 25, COUNT, {"people": 3, "outdoor": False}, config_id=None)]
    write_settings(out, "cfg0", rows, [COUNT])

    page = write_report(out).read_text(encoding="utf-8")

    section = page[page.index("<h2>Structured answers</h2>"):].split("<h3>")[1]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", section)
    assert cells == ["outdoor", "True", "1", "", "False", "1", "people", "2", "1", "2", "3"]


def test_a_video_id_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [result_row("a", 0)])

    with pytest.raises(UserError, match=r"^video_id=\\xe9 is not in .* \(it has: a\)$"):
        write_report(out, video_id=os.fsdecode(b"\xe9"))
