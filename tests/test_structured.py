"""Structured answers, the data side: prompt entries with a JSON Schema (in ``prompts`` and in
YAML/JSON prompts files), the schemas refused before any frame, the ``answer_json`` column and
the typed columns of ``load_results`` over output folders that mix runs with and without
schemas. The engine's constrained decoding is not needed here: chunks with known values are
written through the store's own writer."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from pipeline.caption import make_questions
from pipeline.errors import ConfigError
from pipeline.export import export
from pipeline.listfile import read_structured_list
from pipeline.report import write_report
from pipeline.results import load_results, load_schemas, schema_summary
from pipeline.store import SCHEMA, ResultRow, write_chunk
from pipeline.structured import column_dtypes
from tests.conftest import ROOT, RUN_TIMEOUT_S, SAMPLE_VIDEO, assert_one_line_error, cli_env, last_run, run_cli
from tests.test_notebook import run_notebook

PEOPLE = {
    "type": "object",
    "properties": {
        "people": {"type": "integer", "minimum": 0},
        "outdoor": {"type": "boolean"},
        "weather": {"enum": ["sun", "rain", "snow"]},
        "light": {"type": ["number", "null"]},
        "objects": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["people", "outdoor"],
}
CROWD = {"type": "object", "properties": {"people": {"type": "integer"}, "mood": {"type": "string"}}}


def question_id(entry: str | dict[str, Any]) -> str:
    (question,) = make_questions([entry])
    return question.prompt_id


def schema_row(video_id: str, frame_index: int, entry: str | dict[str, Any], value: Any, **fields: Any) -> ResultRow:
    """An ok answer as a run writes it; ``value`` (None: no value) becomes ``answer_json``."""
    text = entry if isinstance(entry, str) else entry["text"]
    values = {
        "video_path": f"/videos/{video_id}.mp4", "video_id": video_id, "frame_index": frame_index,
        "timestamp_s": frame_index / 25, "prompt_id": question_id(entry), "prompt": text,
        "answer": json.dumps(value) if value is not None else "free text", "model": "tiny", "status": "ok",
        "config_id": "cfg1", "finish_reason": "stop" if value is not None else "invalid",
        "answer_json": None if value is None else json.dumps(value, separators=(",", ":")),
        **fields,
    }
    return ResultRow(**values)


def write_run(output_dir: Path, video_id: str, rows: list[ResultRow], entries: list[str | dict[str, Any]]) -> None:
    """Commit ``rows`` as a run asking ``entries`` does: with the prompts it asked recorded."""
    prompts = [
        {"prompt_id": q.prompt_id, "text": q.text, "schema": q.schema_json and json.loads(q.schema_json)}
        for q in make_questions(entries)
    ]
    write_chunk(output_dir, video_id, "part", "cfg1", rows, {"prompts": prompts})


def write_old_chunk(output_dir: Path, video_id: str) -> None:
    """A chunk as runs before ``answer_json`` wrote it: the old schema, no prompts recorded."""
    old = pa.schema([f for f in SCHEMA if f.name != "answer_json"])
    row = asdict(schema_row(video_id, 0, "What is shown?", None))
    row.update(answer="A street.", finish_reason="stop")
    del row["answer_json"]
    (output_dir / video_id).mkdir(parents=True)
    chunk = output_dir / video_id / "part-cfg1-1-old.parquet"  # named for its rows' config_id, as a run names it
    pq.write_table(pa.Table.from_pylist([row], schema=old), chunk)


PEOPLE_ENTRY = {"text": "How many people, outdoors?", "schema": PEOPLE}
CROWD_ENTRY = {"text": "Describe the crowd.", "schema": CROWD}


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """An old plain run on video ``a``; a run with two schema prompts and a plain one on ``b``."""
    out = tmp_path / "out"
    write_old_chunk(out, "a")
    rows = [
        schema_row("b", 0, PEOPLE_ENTRY, {"people": 3, "outdoor": True, "weather": "sun", "light": 0.5,
                                          "objects": ["car"]}),
        schema_row("b", 25, PEOPLE_ENTRY, {"people": 1, "outdoor": True, "weather": "rain", "light": None}),
        schema_row("b", 50, PEOPLE_ENTRY, {"people": 5, "outdoor": False}),
        schema_row("b", 75, PEOPLE_ENTRY, None),  # ended without a valid answer
        schema_row("b", 0, CROWD_ENTRY, {"people": 40, "mood": "calm"}),
        schema_row("b", 0, "What is shown?", None, finish_reason="stop", answer="A square."),
    ]
    write_run(out, "b", rows, [PEOPLE_ENTRY, CROWD_ENTRY, "What is shown?"])
    return out


def test_load_results_types_each_property_over_runs_with_and_without_schemas(mixed: Path) -> None:
    df = load_results(mixed)

    assert {c: str(df[c].dtype) for c in ("people", "outdoor", "weather", "light", "mood")} == {
        "people": "Int64", "outdoor": "boolean", "weather": "string", "light": "Float64", "mood": "string",
    }
    assert "objects" not in df.columns  # nested: only in answer_json
    crowd = df[(df.people > 2) & df.outdoor]
    assert crowd[["video_id", "frame_index"]].values.tolist() == [["b", 0]]
    by_key = df.set_index(["video_id", "frame_index", "prompt"])
    assert by_key.loc[("b", 0, "Describe the crowd."), "people"] == 40  # one column for both prompts
    assert pd.isna(by_key.loc[("b", 0, "Describe the crowd."), "outdoor"])
    assert by_key.loc[("b", 75, "How many people, outdoors?")][["people", "outdoor", "answer_json"]].isna().all()
    for plain in (("a", 0, "What is shown?"), ("b", 0, "What is shown?")):
        assert by_key.loc[plain][["people", "weather", "mood", "answer_json"]].isna().all()
    assert json.loads(by_key.loc[("b", 0, "How many people, outdoors?"), "answer_json"])["objects"] == ["car"]
    assert df.weather.value_counts().to_dict() == {"sun": 1, "rain": 1}


@pytest.mark.parametrize("old_video", ["a", "c"])  # the old chunk read first, or last
def test_plain_pandas_reads_an_output_dir_that_mixes_old_and_new_chunks(tmp_path: Path, old_video: str) -> None:
    out = tmp_path / "out"
    write_old_chunk(out, old_video)
    write_run(out, "b", [schema_row("b", 0, PEOPLE_ENTRY, {"people": 2, "outdoor": False})], [PEOPLE_ENTRY])

    plain = pd.read_parquet(out)
    whole = pd.read_parquet(out, schema=SCHEMA)
    loaded = load_results(out)

    assert sorted(plain.video_id) == sorted(whole.video_id) == sorted(loaded.video_id) == sorted([old_video, "b"])
    assert whole.set_index("video_id").answer_json.isna().to_dict() == {old_video: True, "b": False}
    assert loaded.set_index("video_id").people.isna().to_dict() == {old_video: True, "b": False}


def typed_apart(out: Path, *names: str) -> Path:
    """An output folder of two nights whose schemas type each of ``names`` apart (an integer,
    then a string), three answered frames each; a ``vehicles`` integer both nights agree on."""
    for video_id, kind, value in (("a", "integer", 2), ("b", "string", "Ann")):
        properties = {name: {"type": kind} for name in names} | {"vehicles": {"type": "integer"}}
        entry = {"text": f"Who is there ({kind})?", "schema": {"type": "object", "properties": properties}}
        rows = [schema_row(video_id, f, entry, {**dict.fromkeys(names, value), "vehicles": f}) for f in range(3)]
        write_run(out, video_id, rows, [entry])
    return out


# The one line a property with no column gets, for each command that reads the answers.
NO_COLUMN = (
    "no column for property 'people' of the answers' schemas (typed apart by different prompts, or named like a "
    "result column): the values stay in answer_json"
)


def test_properties_that_nights_type_apart_stay_in_answer_json(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = typed_apart(tmp_path / "out", "people", "mood")

    with caplog.at_level(logging.WARNING):
        df = load_results(out)

    # One WARNING record for the call, naming both, not one per property or per row.
    assert [(r.name, r.levelno) for r in caplog.records] == [("pipeline.results", logging.WARNING)]
    assert caplog.records[0].getMessage() == NO_COLUMN.replace("property 'people'", "properties 'mood', 'people'")
    assert "people" not in df.columns and "mood" not in df.columns
    assert json.loads(df.answer_json.iloc[0])["people"] == 2 and json.loads(df.answer_json.iloc[-1])["people"] == "Ann"
    assert df.vehicles.tolist() == [0, 1, 2, 0, 1, 2]


def test_a_property_with_no_column_is_one_warning_line_in_each_command(tmp_path: Path) -> None:
    out = typed_apart(tmp_path / "out", "people")
    stamped = re.compile(rf"\[\d\d:\d\d:\d\d WARNING\] {re.escape(NO_COLUMN)}")
    for module, args in (("pipeline.export", ["format=jsonl,csv"]), ("pipeline.report", [])):
        result = subprocess.run(
            [sys.executable, "-m", module, f"output_dir={out}", *args], cwd=ROOT, env=cli_env(),
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )
        assert result.returncode == 0, result.stderr
        assert [bool(stamped.fullmatch(line)) for line in result.stderr.splitlines()] == [True], result.stderr
    # A notebook sets no logging up: Python's last resort shows the line as it is, once.
    code = f"from pipeline.results import load_results\nload_results({str(out)!r})\nload_results({str(out)!r})"
    notebook = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert notebook.returncode == 0 and notebook.stderr == f"{NO_COLUMN}\n{NO_COLUMN}\n", notebook.stderr


def test_a_run_puts_the_property_with_no_column_in_its_log_file(cli_base: list[str], tmp_path: Path) -> None:
    out = typed_apart(tmp_path / "out", "people")
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=1", "export=jsonl", "report=true")
    assert result.returncode == 0, result.stderr
    # The export and the report each read the answers once: a line each, on the console and in the log.
    assert [line.split("] ", 1)[1] for line in result.stderr.splitlines() if "WARNING" in line] == [NO_COLUMN] * 2
    assert "Warning:" not in result.stderr
    (log_file,) = (out / "_logs").glob("*.log")
    assert log_file.read_text().count(f"[pipeline.results][WARNING] {NO_COLUMN}\n") == 2


def test_a_plain_prompt_keeps_the_id_older_runs_wrote() -> None:
    # Archives stay valid: a prompt without a schema is the same question as before schemas.
    assert question_id("What is shown?") == "0e9ca266c638"
    assert question_id({"text": "What is shown?"}) == "0e9ca266c638"
    assert question_id({"text": "What is shown?", "schema": CROWD}) != "0e9ca266c638"
    reordered = {"properties": CROWD["properties"], "type": "object"}
    assert question_id({"text": "What is shown?", "schema": reordered}) == question_id(
        {"text": "What is shown?", "schema": CROWD}
    )


BAD_SCHEMAS = [
    ("prompts=[{text: Count?, schema: {type: array}}]", "does not describe an object"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {people: {type: integr}}}}]",
     "not a valid JSON Schema at properties/people/type"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {people: {type: integer, minimum: few}}}}]",
     "not a valid JSON Schema at properties/people/minimum"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {answer_json: {type: string}}}}]",
     "property 'answer_json', the name of a result column"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {timestamp_s: {type: number}}}}]",
     "property 'timestamp_s', the name of a result column"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {end_s: {type: number}}}}]",  # the exports' column
     "property 'end_s', the name of a result column"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {people: {type: integer}}}},"
     "{text: Who?, schema: {type: object, properties: {people: {type: string}}}}]",
     "property 'people' is integer in the schema of prompt 'Count?' but string in that of 'Who?'"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {people: {type: number, maximum: inf}}}}]",
     "at properties/people/maximum"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {tags: {type: array, uniqueItems: true}}}}]",
     "cannot constrain an answer"),
    ("prompts=[{text: Count?, schema: {type: object, properties: {n: {type: integer, minimum: 5, maximum: 2}},"
     " required: [n]}}]", "cannot constrain an answer: Unsatisfiable schema"),
    ("prompts=[{text: Count?, scheme: {type: object}}]", "unknown keys: scheme"),
    ("prompts=[{schema: {type: object}}]", "its text is missing"),
]


@pytest.mark.parametrize(("override", "needle"), BAD_SCHEMAS)
def test_a_schema_that_cannot_work_is_refused_before_any_frame(
    cli_base: list[str], tmp_path: Path, override: str, needle: str
) -> None:
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, override)

    assert_one_line_error(result, 1, needle)
    assert not (tmp_path / "out").exists()
    if "cannot constrain" in needle:  # the grammar's verdict, which a dry run gives too
        assert_one_line_error(run_cli(f"video={SAMPLE_VIDEO}", *cli_base, override, "dry_run=true"), 1, needle)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("q.yaml", "text: How many?\nschema: {type: object}\n", "holds a dict, not a list"),
        ("q.json", '["What?", {"text": "How many?",', "cannot be read"),
        ("q.yml", "- What?\n- [nested, list]\n", "is neither text nor"),
        ("q.json", "[]", "holds no prompt"),
        ("q.yaml", "- text: Since when?\n  schema: {type: object, properties: {d: {default: 2024-01-01}}}\n",
         "holds a value that is not JSON"),
        # YAML 1.1 alone reads these as numbers (90, 8): quoted, they are text.
        ("q.yaml", "- What?\n- 1:30\n", "line 2: 1:30 is a number in YAML 1.1's spelling, not JSON's"),
        ("q.yml", "- text: How far?\n  schema: {type: object, properties: {d: {type: integer, maximum: 010}}}\n",
         "line 2: 010 is a number in YAML 1.1's spelling, not JSON's"),
    ],
)
def test_a_prompts_file_that_is_not_a_list_of_entries_is_one_line(
    cli_base: list[str], tmp_path: Path, name: str, content: str, needle: str
) -> None:
    (tmp_path / name).write_text(content)

    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"prompts_file={tmp_path / name}")

    assert_one_line_error(result, 1, needle)


def test_adding_or_changing_a_schema_asks_only_that_prompt(cli_base: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", "report=false"]
    assert run_cli(*args, "prompts=[What is shown?]").returncode == 0
    before = {p.name for p in out.glob("*/part-*.parquet")}

    # The plain prompt, now in a YAML file, beside a new schema prompt.
    yaml_file = tmp_path / "questions.yaml"
    yaml_file.write_text(
        "- What is shown?\n"
        "- text: How many people are there?\n"
        "  schema: {type: object, properties: {people: {type: integer, minimum: 0}}, required: [people]}\n"
    )
    first = run_cli(*args, f"prompts_file={yaml_file}")
    assert first.returncode == 0, first.stderr
    assert last_run(out)["rows"] == 2  # 2 frames x the new prompt only

    # The same text with another schema, from a JSON file: a new question again.
    changed = {"type": "object", "properties": {"people": {"type": "integer", "maximum": 99}}}
    json_file = tmp_path / "questions.json"
    json_file.write_text(json.dumps(["What is shown?", {"text": "How many people are there?", "schema": changed}]))
    second = run_cli(*args, f"prompts_file={json_file}")
    assert second.returncode == 0, second.stderr
    assert last_run(out)["rows"] == 2
    assert run_cli(*args, f"prompts_file={json_file}").returncode == 0
    assert last_run(out)["rows"] == 0  # nothing left to ask

    df = load_results(out)
    assert before <= {p.name for p in out.glob("*/part-*.parquet")}  # the first run's chunks untouched
    assert df.groupby("prompt").prompt_id.nunique().to_dict() == {"How many people are there?": 2, "What is shown?": 1}
    assert len(df) == 2 * 3 and df.people.dtype == "Int64"


def test_csv_and_jsonl_exports_carry_the_parsed_values(mixed: Path) -> None:
    done = export(mixed, ["jsonl", "csv"])

    records = [json.loads(line) for line in (done.folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    table = list(csv.DictReader(io.StringIO((done.folder / "captions.csv").read_text(encoding="utf-8"))))
    first = next(r for r in records if r["prompt"] == "How many people, outdoors?" and r["frame_index"] == 0)
    assert first["answer_json"]["objects"] == ["car"]  # the value itself, not its text
    assert (first["people"], first["outdoor"], first["weather"], first["light"]) == (3, True, "sun", 0.5)
    row = next(r for r in table if r["prompt"] == "How many people, outdoors?" and r["frame_index"] == "0")
    assert (row["people"], row["outdoor"], row["weather"]) == ("3", "True", "sun")
    assert json.loads(row["answer_json"])["people"] == 3
    plain = next(r for r in records if r["video_id"] == "a")
    assert plain["answer_json"] is None and plain["people"] is None


def test_a_property_that_two_prompts_type_alike_is_accepted(cli_base: list[str]) -> None:
    entries = (
        "prompts=[{text: Count?, schema: {type: object, properties: {n: {type: integer}}}},"
        "{text: Count again?, schema: {type: object, properties: {n: {type: [integer, 'null'], maximum: 9}}}}]"
    )
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", "dry_run=true", entries)

    assert result.returncode == 0, result.stderr
    assert "2 frames, 2 prompts each" in result.stdout


def test_entries_repeated_in_any_form_are_asked_once(cli_base: list[str]) -> None:
    entries = (
        "prompts=[What is shown?,{text: What is shown?},"
        "{text: Count?, schema: {type: object, properties: {n: {type: integer}}}},"
        "{text: Count?, schema: {properties: {n: {type: integer}}, type: object}},"
        "{text: Count?, schema: {type: object, properties: {n: {type: integer, minimum: 0}}}}]"
    )
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2", "dry_run=true", entries)

    assert result.returncode == 0, result.stderr
    assert "2 frames, 3 prompts each" in result.stdout


def test_schema_summary_counts_booleans_and_enums_and_ranges_numbers(mixed: Path) -> None:
    summary = schema_summary(load_results(mixed), load_schemas(mixed))

    people = question_id(PEOPLE_ENTRY)
    outcomes = summary.outcomes.loc[(people, "cfg1")]  # one row per prompt and settings
    assert (outcomes["answers"], outcomes["stop"], outcomes["length"], outcomes["invalid"]) == (4, 0.75, 0.0, 0.25)
    assert set(summary.outcomes.index) == {(people, "cfg1"), (question_id(CROWD_ENTRY), "cfg1")}  # no plain prompt
    counted = summary.counts[summary.counts.prompt_id == people]
    assert counted.set_index(["property", "value"])["count"].to_dict() == {
        ("outdoor", True): 2, ("outdoor", False): 1, ("weather", "sun"): 1, ("weather", "rain"): 1,
        ("weather", "snow"): 0,
    }
    ranges = summary.ranges.set_index(["prompt_id", "property"])
    assert ranges.loc[(people, "people"), ["values", "min", "median", "max"]].tolist() == [3, 1.0, 3.0, 5.0]
    assert ranges.loc[(people, "light"), ["values", "min", "max"]].tolist() == [1, 0.5, 0.5]
    assert ranges.loc[(question_id(CROWD_ENTRY), "people"), "median"] == 40.0


def test_the_notebook_shows_each_schema_prompt(mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = (
        "import json\n"
        "print('PROBE ' + json.dumps({'outcomes': json.loads(structured.outcomes.droplevel(1).to_json()), "
        "'counts': json.loads(structured.counts.to_json(orient='records'))}))"
    )

    cells, printed = run_notebook(mixed, probe, tmp_path, monkeypatch)

    shown = json.loads(printed.split("PROBE ", 1)[1].splitlines()[0])
    assert shown["outcomes"]["answers"] == {question_id(PEOPLE_ENTRY): 4, question_id(CROWD_ENTRY): 1}
    assert {"property": "outdoor", "value": True, "count": 2} in [
        {k: r[k] for k in ("property", "value", "count")} for r in shown["counts"]
    ]
    (figures,) = [c for c in cells if "structured.outcomes.iterrows" in c.source]
    assert sum("image/png" in o.get("data", {}) for o in figures.outputs) == 2  # a figure per prompt


def test_the_report_shows_each_schema_prompt(mixed: Path, tmp_path: Path) -> None:
    page = write_report(mixed).read_text(encoding="utf-8")
    plain = tmp_path / "plain"
    write_old_chunk(plain, "a")

    section = page[page.index("<h2>Structured answers</h2>") :]
    people = section[section.index("How many people, outdoors?") : section.index("Describe the crowd.")]
    assert "4 answers: 75% stop" in people and "0% length" in people and "25% invalid" in people
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", people)
    assert cells[: 3 * 5] == [
        "outdoor", "True", "2", "", "False", "1",
        "weather", "sun", "1", "", "rain", "1", "", "snow", "0",
    ]
    # Answers with a value, min, median, max (properties in the order the schema gives them).
    assert cells[15:25] == ["people", "3", "1", "3", "5", "light", "1", "0.5", "0.5", "0.5"]
    assert "Structured answers" not in write_report(plain).read_text(encoding="utf-8")


def test_a_yaml_prompts_file_means_what_the_command_line_means(tmp_path: Path) -> None:
    speaking = (
        "{text: Is anyone speaking, schema: {type: object, properties: {speaking: {enum: [yes, no, unsure]}, "
        "on: {type: boolean}, loud: {const: true}, level: {type: number, maximum: 1e3}}}}"
    )
    (tmp_path / "q.yaml").write_text(f"- no\n- {speaking}\n- Off\n")

    from_file = read_structured_list(tmp_path / "q.yaml", "prompts_file", "prompt")

    assert from_file == OverridesParser.create().parse_override(f"prompts=[no,{speaking},Off]").value()
    plain, structured, off = make_questions(from_file)
    assert (plain.text, plain.schema_json, off.text) == ("no", None, "Off")
    schema = json.loads(structured.schema_json or "null")
    assert schema["properties"]["speaking"]["enum"] == ["yes", "no", "unsure"]
    assert schema["properties"]["level"]["maximum"] == 1000
    assert column_dtypes(schema) == {"speaking": "string", "on": "boolean", "loud": "boolean", "level": "Float64"}


def test_an_enum_of_numbers_loads_as_numbers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    properties = {"zoom": {"enum": [0.5, 1, 2]}, "stars": {"enum": [1, 2, 3]}, "ratio": {"type": ["integer", "number"]}}
    entry = {"text": "How zoomed?", "schema": {"type": "object", "properties": properties}}
    values = [(0.5, 1, 2), (2, 3, 0.5), (1, 3, 1)]
    rows = [schema_row("a", f, entry, {"zoom": z, "stars": s, "ratio": r}) for f, (z, s, r) in enumerate(values)]
    write_run(out, "a", rows, [entry])

    df = load_results(out)

    assert {c: str(df[c].dtype) for c in properties} == {"zoom": "Float64", "stars": "Int64", "ratio": "Float64"}
    assert (df.zoom.tolist(), df.ratio.tolist()) == ([0.5, 2.0, 1.0], [2.0, 0.5, 1.0])
    counts = schema_summary(df, load_schemas(out)).counts.set_index(["property", "value"])["count"].to_dict()
    assert counts == {
        ("zoom", 0.5): 1, ("zoom", 1): 1, ("zoom", 2): 1, ("stars", 1): 1, ("stars", 2): 0, ("stars", 3): 2,
    }


def test_a_schema_has_one_prompt_id_however_its_numbers_are_written(tmp_path: Path) -> None:
    def light(low: float, high: float, step: float) -> dict[str, Any]:
        number = {"type": "number", "minimum": low, "maximum": high, "multipleOf": step}
        return {"text": "How bright?", "schema": {"type": "object", "properties": {"light": number}}}

    (tmp_path / "q.yaml").write_text(
        "- text: How bright?\n  schema: {type: object, properties: {light: {type: number, minimum: 0.0, maximum: 1e2, "
        "multipleOf: 0.50}}}\n"
    )
    written = [light(0, 100, 0.5), light(0.0, 100.0, 0.5), light(-0.0, 1e2, 5e-1),
               *read_structured_list(tmp_path / "q.yaml", "prompts_file", "prompt")]

    questions = make_questions(written)

    assert len({(q.prompt_id, q.schema_json) for q in questions}) == 1  # one question, asked once
    assert json.loads(questions[0].schema_json or "null")["properties"]["light"]["maximum"] == 100
    # A schema with no number written so keeps the id older runs wrote.
    quarters = {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.25}
    assert question_id({"text": "Light?", "schema": {"type": "object", "properties": {"light": quarters}}}) == (
        "6f21a53416d3"
    )


def test_a_schema_keeps_its_prompt_id_unless_its_properties_change_order() -> None:
    properties = {"decision": {"type": "boolean"}, "reason": {"type": "string"}}
    alphabetical: dict[str, Any] = {"type": "object", "properties": properties, "required": ["decision", "reason"]}
    entry = {"text": "Think, then decide.", "schema": alphabetical}
    assert question_id(entry) == "e31ebbb01307"  # the id older runs wrote
    other_keys_moved = {key: alphabetical[key] for key in ("required", "properties", "type")}
    assert question_id({**entry, "schema": other_keys_moved}) == "e31ebbb01307"
    reason_first = {**alphabetical, "properties": dict(reversed(properties.items()))}
    (question,) = make_questions([{**entry, "schema": reason_first}])
    assert question.prompt_id != "e31ebbb01307"  # the answers come in another order
    assert list(json.loads(question.schema_json or "null")["properties"]) == ["reason", "decision"]


@pytest.mark.parametrize("bound", [".inf", "-.inf", ".nan"])
def test_a_bound_that_is_no_finite_number_is_refused_naming_it(tmp_path: Path, bound: str) -> None:
    schema = f"{{type: object, properties: {{x: {{maximum: {bound}}}}}}}"
    (tmp_path / "q.yaml").write_text(f"- {{text: A, schema: {schema}}}\n")
    with pytest.raises(ConfigError, match="^the schema of prompt 'A' has .* at properties/x/maximum[^\n]*$"):
        make_questions(read_structured_list(tmp_path / "q.yaml", "prompts_file", "prompt"))


def test_a_schema_nested_past_what_the_checks_take_is_refused_and_one_within_runs(
    cli_base: list[str], tmp_path: Path
) -> None:
    def nested(levels: int) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": 4}
        for _ in range(levels):
            schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        return schema

    for levels, code in ((31, 0), (32, 1), (200, 1)):  # 200 levels ended in a RecursionError
        prompts = tmp_path / f"deep{levels}.json"
        prompts.write_text(json.dumps([{"text": "Deep?", "schema": nested(levels)}]))
        run = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"prompts_file={prompts}", "max_frames=1",
                      "generation.max_tokens=200", "report=false")
        if code:
            assert_one_line_error(run, code, "the schema of prompt 'Deep?' nests objects and lists deeper than 64")
        else:
            assert run.returncode == 0, run.stderr
