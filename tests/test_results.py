"""Tests of the pandas helpers in ``pipeline.results`` against Parquet written here with pyarrow
(``result_row`` and ``write_results`` in ``conftest.py``)."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.caption import make_questions
from pipeline.errors import ConfigError
from pipeline.report import write_report
from pipeline.results import (
    COVERAGE_COLUMNS,
    THUMBNAIL,
    counts,
    coverage,
    load_results,
    load_schemas,
    schema_summary,
    search_answers,
    slowest,
    slowest_frames,
    thumbnail_bytes,
    thumbnail_image,
    video_summary,
)
from pipeline.store import SCHEMA, ResultRow, write_chunk
from pipeline.structured import check_schemas
from tests.conftest import default_thumbnail, result_row, run_without_results, write_results
from tests.test_notebook import run_notebook
from tests.test_structured import schema_row, write_run


@pytest.fixture
def thumbnail() -> bytes:
    """A 256x144 JPEG of a flat red frame."""
    return default_thumbnail(np.full((360, 640, 3), (200, 30, 30), np.uint8))


@pytest.fixture
def two_videos(tmp_path: Path, thumbnail: bytes) -> Path:
    """``b``: 2 frames x 2 prompts, one answer failed; ``a``: a video-level error only."""
    rows = [
        result_row(
            "b", 50, prompt_id="p1", latency_ms=300.0, answer="Zebra crossing", thumbnail=thumbnail
        ),
        result_row(
            "b",
            50,
            prompt_id="p2",
            prompt="Colour?",
            latency_ms=0.0,
            status="error",
            answer=None,
            error="decode failed",
            completion_tokens=0,
            thumbnail=thumbnail,
        ),
        result_row(
            "b", 0, prompt_id="p1", latency_ms=100.0, answer="A ZEBRA.", thumbnail=thumbnail
        ),
        result_row(
            "b",
            0,
            prompt_id="p2",
            prompt="Colour?",
            latency_ms=200.0,
            answer="red (mostly)",
            thumbnail=thumbnail,
        ),
        result_row("a", None),
    ]
    write_results(tmp_path / "out", rows)
    return tmp_path / "out"


def test_load_results_reads_every_video_in_time_order(two_videos: Path, thumbnail: bytes) -> None:
    df = load_results(two_videos)

    assert df["video_id"].tolist() == ["a", "b", "b", "b", "b"]
    assert df["frame_index"].iloc[1:].tolist() == [0, 0, 50, 50]
    assert df[THUMBNAIL].iloc[1:].tolist() == [thumbnail] * 4
    assert df[THUMBNAIL].iloc[0] is None


def test_load_results_adds_a_null_thumbnail_column_to_runs_without_one(tmp_path: Path) -> None:
    without = pa.schema([field for field in SCHEMA if field.name != THUMBNAIL])
    row = result_row()
    del row[THUMBNAIL]
    write_results(tmp_path, [row], schema=without)

    df = load_results(tmp_path)

    assert df[THUMBNAIL].tolist() == [None]
    assert thumbnail_image(df.iloc[0]) is None


def test_load_results_reads_runs_from_before_the_shot_start_and_duplicate_columns(tmp_path: Path) -> None:
    newer = ("shot_start_s", "duplicate_of", "finish_reason")
    older = pa.schema([f for f in SCHEMA if f.name not in newer])
    row = result_row()
    for name in newer:
        row.pop(name, None)
    write_results(tmp_path, [row], schema=older)

    df = load_results(tmp_path)

    assert df.shot_start_s.isna().all() and df.duplicate_of.isna().all()
    assert df.finish_reason.isna().all()


def test_load_results_keeps_integer_columns_integer_where_some_rows_are_null(tmp_path: Path) -> None:
    write_results(
        tmp_path,
        [
            result_row("v", 7, shot_index=2, duplicate_of=None),
            result_row("v", 9_007_199_254_740_993, shot_index=None, duplicate_of=7),
            result_row("w", None),  # a video-level error: no frame
        ],
    )

    df = load_results(tmp_path)

    for column in ("frame_index", "shot_index", "duplicate_of", "prompt_tokens", "completion_tokens"):
        assert df[column].dtype == "Int64", (column, df[column].dtype)
    assert df["frame_index"].tolist()[:2] == [7, 9_007_199_254_740_993]  # exact: not via float
    assert df["frame_index"].isna().tolist() == [False, False, True]
    assert df["shot_index"].isna().tolist() == [False, True, True] and df["shot_index"].iloc[0] == 2
    assert df["duplicate_of"].iloc[1] == 7


def test_load_results_of_a_run_that_committed_nothing_has_the_columns(tmp_path: Path) -> None:
    df = load_results(run_without_results(tmp_path))

    assert df.empty
    assert set(SCHEMA.names) <= set(df.columns)


def test_load_results_refuses_a_folder_no_run_wrote_to(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "stats.parquet").write_bytes(b"someone else's")
    with pytest.raises(FileNotFoundError, match="holds no run of the pipeline"):
        load_results(tmp_path)


def test_load_results_names_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the pipeline first"):
        load_results(tmp_path / "missing")


def test_video_summary_counts_tokens_and_latency(two_videos: Path) -> None:
    summary = video_summary(load_results(two_videos))

    assert summary.index.tolist() == ["a", "b"]
    b = summary.loc["b"]
    assert (b["frames"], b["prompts"], b["ok_rows"], b["error_rows"]) == (2, 2, 3, 1)
    assert (b["prompt_tokens"], b["completion_tokens"]) == (400, 30)
    # Latency over the three ok answers (100, 200, 300 ms); the failed one does not count.
    assert b["latency_mean_ms"] == pytest.approx(200.0)
    assert b["latency_p95_ms"] == pytest.approx(290.0)
    a = summary.loc["a"]
    assert (a["video_path"], a["frames"], a["ok_rows"], a["error_rows"]) == (
        "/videos/a.mp4",
        0,
        0,
        1,
    )
    assert math.isnan(a["latency_mean_ms"])


def test_video_summary_of_no_rows_has_the_columns(tmp_path: Path) -> None:
    summary = video_summary(load_results(run_without_results(tmp_path)))

    assert summary.empty
    assert "latency_p95_ms" in summary.columns


def test_search_answers_ignores_case_and_takes_the_keyword_literally(two_videos: Path) -> None:
    df = load_results(two_videos)

    assert search_answers(df, "zebra")["answer"].tolist() == ["A ZEBRA.", "Zebra crossing"]
    assert search_answers(df, "(MOSTLY)")["answer"].tolist() == ["red (mostly)"]
    assert search_answers(df, "a.c").empty
    with pytest.raises(ValueError, match="keyword"):
        search_answers(df, "")


def test_slowest_lists_answers_slowest_first(two_videos: Path) -> None:
    df = load_results(two_videos)

    assert slowest(df, 2)["latency_ms"].tolist() == [300.0, 200.0]
    assert slowest(df, 10)["frame_index"].notna().all()


def test_thumbnail_image_decodes_the_row_thumbnail(two_videos: Path) -> None:
    row = load_results(two_videos).iloc[1]

    image = thumbnail_image(row)

    assert image is not None and image.shape == (144, 256, 3)
    assert image[..., 0].mean() > 150 and image[..., 2].mean() < 80  # still red: RGB, not BGR


@pytest.mark.parametrize("value", [None, float("nan"), b""])
def test_a_row_without_thumbnail_has_no_image(value: object) -> None:
    assert thumbnail_bytes({THUMBNAIL: value}) is None
    assert thumbnail_image({THUMBNAIL: value}) is None
    assert thumbnail_image(pd.Series({"answer": "x"})) is None


def test_counts_count_a_frame_per_video_and_index(tmp_path: Path) -> None:
    # Frame 0 and 25 of two videos, two prompts each, one answer cut, one failed; a broken video.
    rows = [
        result_row(v, f, prompt_id=p, **extra)
        for v in ("x", "y")
        for f in (0, 25)
        for p, extra in (("p1", {}), ("p2", {"prompt": "Colour?"}))
    ]
    rows[1]["finish_reason"] = "length"
    rows[2].update(status="error", answer=None, error="decode failed", finish_reason=None)
    rows.append(result_row("z", None))
    write_results(tmp_path, rows)

    found = counts(load_results(tmp_path))

    assert found == {
        "rows": 9, "videos": 3, "frames": 4, "prompts": 2, "answers": 7, "cut_answers": 1,
        "failed_answers": 1, "failed_videos": 1,
    }
    assert video_summary(load_results(tmp_path)).loc["x", "cut_answers"] == 1


def test_slowest_frames_time_a_frame_by_its_last_answer(two_videos: Path, thumbnail: bytes) -> None:
    frames = slowest_frames(load_results(two_videos), 10)

    # Frame 50: answers of 300 ms and a failed one; frame 0: 100 and 200 ms (asked together).
    assert frames["frame_index"].tolist() == [50, 0]
    assert frames["latency_ms"].tolist() == [300.0, 200.0]
    assert frames["answers"].tolist() == [1, 2]
    assert frames["completion_tokens"].tolist() == [10, 20]
    assert frames["ms_per_token"].tolist() == [30.0, 20.0]
    assert frames[THUMBNAIL].tolist() == [thumbnail, thumbnail]
    assert slowest_frames(load_results(two_videos), 1)["frame_index"].tolist() == [50]


def test_coverage_from_rows_and_video_facts(two_videos: Path) -> None:
    videos = pd.DataFrame(
        [
            {"video_id": "b", "video_path": "/videos/b.mp4", "duration_s": 10.0, "frames_decoded": 250},
            {"video_id": "a", "video_path": "/videos/a.mp4", "duration_s": 5.0, "frames_decoded": None},
        ]
    )

    table = coverage(load_results(two_videos), videos)

    assert list(table.columns) == COVERAGE_COLUMNS
    b = table.loc["b"]
    # b: frames at 0 s and 2 s of 10 s.
    assert (b["frames_sampled"], b["sampled_share"], b["mean_gap_s"], b["max_gap_s"]) == (2, 2 / 250, 5.0, 8.0)
    a = table.loc["a"]  # a video that failed: nothing sampled, its whole length uncovered
    assert a["frames_sampled"] == 0 and a["max_gap_s"] == 5.0 and pd.isna(a["sampled_share"])


def test_a_number_beyond_its_column_is_null_there_with_one_warning_per_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    entry = {"text": "How big?", "schema": {"type": "object", "properties": {"x": {"type": "number"},
                                                                             "n": {"type": "integer"}}}}
    values = [(10**400, 2**64), (-(10**400), -(2**70)), (1.5, 7)]
    rows = [schema_row("a", f, entry, {"x": x, "n": n}) for f, (x, n) in enumerate(values)]
    rows.append(schema_row("a", 3, entry, {"x": 0, "n": 1}, answer_json='{"x":628E6126,"n":1}'))
    write_run(out, "a", rows, [entry])

    with caplog.at_level(logging.WARNING, logger="pipeline.results"):
        df = load_results(out)

    assert df.x.tolist() == [pd.NA, pd.NA, 1.5, pd.NA] and df.n.tolist() == [pd.NA, pd.NA, 7, 1]
    assert str(df.x.dtype) == "Float64" and df.answer_json[0] == f'{{"x":{10**400},"n":{2**64}}}'
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and "'x'" in warned[0] + warned[1] and "'n'" in warned[0] + warned[1], warned
    ranges = schema_summary(df, load_schemas(out)).ranges.set_index("property")
    assert ranges.loc["x", ["values", "min", "max"]].tolist() == [1, 1.5, 1.5]


def test_schema_summary_counts_every_allowed_value_null_included(tmp_path: Path) -> None:
    out = tmp_path / "out"
    properties = {"w": {"enum": ["sun", "rain", None]}, "b": {"type": ["boolean", "null"]},
                  "i": {"enum": [1, 2, None]}, "o": {"type": "boolean"}}
    entry = {"text": "Nullable?", "schema": {"type": "object", "properties": properties}}
    values: list[Any] = [{"w": None, "b": None, "i": None, "o": True}, {"w": "sun", "b": True, "i": 1},
                         {"w": None, "b": False, "i": None}, None]
    write_run(out, "a", [schema_row("a", f, entry, v) for f, v in enumerate(values)], [entry])

    counted = schema_summary(load_results(out), load_schemas(out)).counts

    assert list(zip(counted.property, counted.value, counted["count"])) == [
        ("w", "sun", 1), ("w", "rain", 0), ("w", None, 2),
        ("b", True, 1), ("b", False, 1), ("b", None, 1),
        ("i", 1, 1), ("i", 2, 0), ("i", None, 2),
        ("o", True, 1), ("o", False, 0),
    ]


PYDANTIC = {  # what Pydantic's model_json_schema() gives for a model with an enum and Optional fields
    "$defs": {"Weather": {"enum": ["sun", "rain"], "title": "Weather", "type": "string"}},
    "properties": {
        "people": {"title": "People", "type": "integer"},
        "weather": {"$ref": "#/$defs/Weather"},
        "note": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}], "default": None},
        "score": {"anyOf": [{"type": "number", "maximum": 1}, {"type": "null"}]},
        "any": {"title": "Any"},
    },
    "title": "Frame",
    "type": "object",
}


def test_pydantic_optional_fields_and_refs_load_as_typed_columns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    entry = {"text": "Pydantic?", "schema": PYDANTIC}
    values = [{"people": 2, "weather": "sun", "note": None, "score": 0.5, "any": [1]},
              {"people": 3, "weather": "rain", "note": "hi", "score": None, "any": "x"}]
    write_run(out, "a", [schema_row("a", f, entry, v) for f, v in enumerate(values)], [entry])

    df = load_results(out)

    assert {c: str(df[c].dtype) for c in ("people", "weather", "note", "score")} == {
        "people": "Int64", "weather": "string", "note": "string", "score": "Float64"}
    assert "any" not in df.columns and df.note.tolist() == [pd.NA, "hi"] and df.score.tolist() == [0.5, pd.NA]
    counted = schema_summary(df, load_schemas(out)).counts
    assert list(zip(counted.property, counted.value, counted["count"])) == [
        ("weather", "sun", 1), ("weather", "rain", 1)]
    plain = {"type": "object", "properties": {"weather": {"enum": ["sun"]}, "note": {"type": ["string", "null"]}}}
    check_schemas([("Pydantic?", PYDANTIC), ("Plain?", plain)], reserved=())  # typed alike: accepted
    typed = {"type": "object", "properties": {"any": {"type": "string"}}}
    with pytest.raises(ConfigError, match="property 'any' is untyped in the schema of prompt 'Pydantic"):
        check_schemas([("Pydantic?", PYDANTIC), ("Plain?", typed)], reserved=())


def test_a_property_named_like_a_pandas_parameter_is_a_typed_column(tmp_path: Path) -> None:
    """``self`` is DataFrame.assign's own first parameter; ``other`` and ``axis`` are others'."""
    out = tmp_path / "out"
    properties = {"self": {"type": "boolean"}, "other": {"type": "integer"}, "axis": {"type": "string"}}
    entry = {"text": "Filming themselves?", "schema": {"type": "object", "properties": properties}}
    values = [{"self": True, "other": 2, "axis": "x"}, {"self": False, "other": 3, "axis": "y"}]
    write_run(out, "a", [schema_row("a", f, entry, v) for f, v in enumerate(values)], [entry])

    df = load_results(out)

    assert df["self"].tolist() == [True, False] and str(df["self"].dtype) == "boolean"
    assert df["other"].tolist() == [2, 3] and df["axis"].tolist() == ["x", "y"]
    counted = schema_summary(df, load_schemas(out)).counts
    assert list(zip(counted.property, counted.value, counted["count"])) == [("self", True, 1), ("self", False, 1)]


@pytest.mark.parametrize("other", [
    {"type": "array", "items": {"type": "integer"}}, {"type": ["integer", "string"]}, {}, {"type": "object"}])
def test_a_property_one_night_types_and_another_leaves_in_answer_json_gets_no_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, other: dict[str, Any]
) -> None:
    out = tmp_path / "out"
    typed = {"text": "How many?", "schema": {"type": "object", "properties": {"people": {"type": "integer"}}}}
    loose = {"text": "How many?", "schema": {"type": "object", "properties": {"people": other}}}
    write_run(out, "a", [schema_row("a", 0, typed, {"people": 3})], [typed])
    write_run(out, "b", [schema_row("b", 0, loose, {"people": [7, 8]})], [loose])

    with caplog.at_level(logging.WARNING, logger="pipeline.results"):
        df = load_results(out)

    assert "people" not in df.columns
    assert sorted(df.answer_json) == ['{"people":3}', '{"people":[7,8]}']
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "'people'" in warned[0], warned


def test_a_property_no_night_gives_a_column_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    listed = {"text": "Which?", "schema": {"type": "object", "properties": {"seen": {"type": "array"}}}}
    nested = {"text": "Which?", "schema": {"type": "object", "properties": {"seen": {"type": "object"}}}}
    write_run(out, "a", [schema_row("a", 0, listed, {"seen": ["car"]})], [listed])
    write_run(out, "b", [schema_row("b", 0, nested, {"seen": {"car": 1}})], [nested])

    with caplog.at_level(logging.WARNING, logger="pipeline.results"):
        df = load_results(out)

    assert "seen" not in df.columns and not [r for r in caplog.records if r.levelno >= logging.WARNING]


COUNT = {"text": "How many people?", "schema": {"type": "object", "properties": {
    "people": {"type": "integer"}, "outdoor": {"type": "boolean"}}}}
SHOWN = {"text": "Anything shown?", "schema": {"type": "object", "properties": {"shown": {"type": "boolean"}}}}


def write_settings(out: Path, config_id: str, rows: list[ResultRow], entries: list[dict[str, Any]]) -> None:
    """Commit ``rows`` of video ``a`` as a run with settings ``config_id`` asking ``entries`` does."""
    prompts = [{"prompt_id": q.prompt_id, "text": q.text, "schema": json.loads(q.schema_json or "null")}
               for q in make_questions(entries)]
    write_chunk(out, "a", "part", config_id, rows, {"prompts": prompts})


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    """One frame answered by model ``A`` (settings ``cfg1``: 1 person, outdoors) and by model
    ``B`` (``cfg2``: 9 people, indoors); ``SHOWN`` asked under ``cfg1`` only."""
    out = tmp_path / "out"
    one = [schema_row("a", 0, COUNT, {"people": 1, "outdoor": True}, model="A"),
           schema_row("a", 0, SHOWN, {"shown": True}, model="A")]
    write_settings(out, "cfg1", one, [COUNT, SHOWN])
    nine = schema_row("a", 0, COUNT, {"people": 9, "outdoor": False}, model="B", config_id="cfg2")
    write_settings(out, "cfg2", [nine], [COUNT])
    return out


def test_schema_summary_keeps_the_answers_of_each_settings_apart(two_models: Path) -> None:
    summary = schema_summary(load_results(two_models), load_schemas(two_models))

    count, shown = make_questions([COUNT, SHOWN])
    pairs = [(count.prompt_id, "cfg1"), (count.prompt_id, "cfg2"), (shown.prompt_id, "cfg1")]
    assert summary.outcomes.index.names == ["prompt_id", "config_id"]
    assert sorted(summary.outcomes.index) == sorted(pairs)
    assert summary.outcomes.loc[pairs, ["model", "answers", "stop"]].values.tolist() == [
        ["A", 1, 1.0], ["B", 1, 1.0], ["A", 1, 1.0]]
    assert list(summary.ranges.columns[:2]) == list(summary.counts.columns[:2]) == ["prompt_id", "config_id"]
    ranges = summary.ranges.set_index(["config_id", "property"])[["values", "min", "median", "max"]]
    assert ranges.loc[("cfg1", "people")].tolist() == [1, 1.0, 1.0, 1.0]  # not min 1, median 5, max 9
    assert ranges.loc[("cfg2", "people")].tolist() == [1, 9.0, 9.0, 9.0]
    counted = summary.counts[summary.counts.prompt_id == count.prompt_id]
    assert list(zip(counted.config_id, counted.value, counted["count"])) == [
        ("cfg1", True, 1), ("cfg1", False, 0), ("cfg2", True, 0), ("cfg2", False, 1)]


def test_the_report_shows_a_section_per_settings_of_a_prompt(two_models: Path) -> None:
    page = write_report(two_models).read_text(encoding="utf-8")

    section = page[page.index("<h2>Structured answers</h2>") :]
    titles = [re.sub(r"<[^>]+>", "", title) for title in re.findall(r"<h3>(.*?)</h3>", section)]
    assert titles == ["1. How many people? A config cfg1", "1. How many people? B config cfg2", "2. Anything shown?"]
    first, second = section.split("<h3>")[1:3]
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", part) for part in (first, second)]
    assert cells[0] == ["outdoor", "True", "1", "", "False", "0", "people", "1", "1", "1", "1"]
    assert cells[1] == ["outdoor", "True", "0", "", "False", "1", "people", "1", "9", "9", "9"]


def test_the_notebook_keeps_the_answers_of_each_settings_apart(
    two_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = "print('PROBE', structured.ranges[['config_id', 'property', 'min', 'max']].values.tolist())"

    cells, printed = run_notebook(two_models, probe, tmp_path, monkeypatch)

    assert "PROBE [['cfg1', 'people', 1.0, 1.0], ['cfg2', 'people', 9.0, 9.0]]" in printed
    (figures,) = [c for c in cells if "structured.outcomes.iterrows" in c.source]
    assert sum("image/png" in o.get("data", {}) for o in figures.outputs) == 3  # a figure per prompt and settings


def test_an_enum_of_mixed_types_counts_each_value_as_json_holds_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    properties = {"speaking": {"enum": [True, False, "unsure"]}, "level": {"enum": [1, 2, "high"]},
                  "odd": {"enum": [True, 1, "1", None]}, "on": {"type": "boolean"}}
    entry = {"text": "Is anyone speaking?", "schema": {"type": "object", "properties": properties}}
    values: list[Any] = [{"speaking": True, "level": 1, "odd": True, "on": True},
                         {"speaking": "unsure", "level": "high", "odd": 1},
                         {"speaking": False, "level": 1, "odd": "1"}, {"speaking": True, "odd": None}]
    write_run(out, "a", [schema_row("a", f, entry, v) for f, v in enumerate(values)], [entry])

    df = load_results(out)
    counted = schema_summary(df, load_schemas(out)).counts

    assert not {"speaking", "level", "odd"} & set(df.columns)  # no typed column: counted from answer_json
    assert [(p, v, type(v), n) for p, v, n in zip(counted.property, counted.value, counted["count"])] == [
        ("speaking", True, bool, 2), ("speaking", False, bool, 1), ("speaking", "unsure", str, 1),
        ("level", 1, int, 2), ("level", 2, int, 0), ("level", "high", str, 1),
        ("odd", True, bool, 1), ("odd", 1, int, 1), ("odd", "1", str, 1), ("odd", None, type(None), 1),
        ("on", True, bool, 1), ("on", False, bool, 0),
    ]
