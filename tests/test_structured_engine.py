"""Structured answers in the engine (issue 26), on the tiny model: a question with a JSON Schema
decodes under that schema's grammar, so that every answer that says ``stop`` is valid JSON of the
schema and its value comes beside the text; the free-text answers next to it do not change by a
single token.

The tiny model's weights are random: left to itself it writes no JSON at all, so every bound
below holds only because the grammar enforces it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import numpy as np
import pytest

from pipeline.caption import make_questions
from pipeline.caption.engine import Answer, Engine, EngineSettings, FinishReason
from pipeline.caption.engine.grammar import answer_schema
from pipeline.errors import ConfigError
from pipeline.presets import captioner_from_preset
from tests.conftest import frames, tiny_engine_settings

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "people": {"type": "integer", "minimum": 2, "maximum": 4},
        "mood": {"enum": ["calm", "busy"]},
        "note": {"type": "string", "maxLength": 5},
        "outdoor": {"type": "boolean"},
        "light": {"type": "number", "minimum": -1, "maximum": 1, "multipleOf": 0.25},
    },
    "required": ["people", "mood", "note", "outdoor", "light"],
    "additionalProperties": False,
}
PLAIN = ["What is shown?", "Which colours?"]
ASKED: list[str | dict[str, Any]] = [PLAIN[0], {"text": "Describe the frame as JSON.", "schema": SCHEMA}, PLAIN[1]]


def settings(model_dir: Path, **overrides: Any) -> EngineSettings:
    base: dict[str, Any] = dict(parallel=3, max_questions=3, max_tokens=80)
    return tiny_engine_settings(model_dir, **{**base, **overrides})


def run(engine_settings: EngineSettings, prompts: list[Any], n_frames: int = 6) -> dict[int, list[Answer]]:
    with Engine(engine_settings) as engine:
        return dict(engine.run(enumerate(frames(n_frames, seed=11)), make_questions(prompts)))


def schema_answers(results: dict[int, list[Answer]]) -> list[Answer]:
    return [a for answers in results.values() for a in answers if a.question.schema_json is not None]


@pytest.mark.parametrize(
    "variant",
    [
        dict(),
        dict(kv_unified=True, max_decode_seqs=2),
        dict(temperature=1.0, seed=5),
        dict(temperature=1.5, top_k=1000, top_p=1.0, seed=9),
    ],
)
def test_every_stop_answer_is_json_of_the_schema(tiny_model_dir: Path, variant: dict[str, Any]) -> None:
    answers = schema_answers(run(settings(tiny_model_dir, **variant), ASKED))
    assert len(answers) == 6
    complete = [a for a in answers if a.finish_reason is FinishReason.STOP]
    assert len(complete) >= 4, [(a.finish_reason, a.text) for a in answers]
    for answer in answers:
        assert answer.finish_reason in (FinishReason.STOP, FinishReason.LENGTH), answer
        assert not any(ord(c) < 0x20 for c in answer.text), answer.text  # no raw control character
    for answer in complete:
        value = json.loads(answer.text)
        jsonschema.validate(value, SCHEMA)
        assert answer.value == value
        assert json.loads(answer.value_json or "null", parse_constant=refuse_constant) == value
        assert 2 <= value["people"] <= 4 and -1 <= value["light"] <= 1
        assert value["mood"] in ("calm", "busy") and len(value["note"]) <= 5
        assert set(value) == set(SCHEMA["properties"])


def test_plain_answers_beside_a_schema_prompt_equal_a_plain_only_run(tiny_model_dir: Path) -> None:
    for variant in (dict(), dict(kv_unified=True), dict(temperature=0.8, seed=3), dict(ignore_eos=True, stop=())):
        plain_only = run(settings(tiny_model_dir, max_questions=2, **variant), PLAIN)
        beside = run(settings(tiny_model_dir, **variant), ASKED)
        for tag, answers in plain_only.items():
            with_schema = [a for a in beside[tag] if a.question.schema_json is None]
            assert [(a.text, a.finish_reason, a.completion_tokens) for a in answers] == [
                (a.text, a.finish_reason, a.completion_tokens) for a in with_schema
            ], variant
            assert all(a.value_json is None for a in with_schema)


def test_an_answer_cut_by_max_tokens_says_length_and_has_no_value(tiny_model_dir: Path) -> None:
    answers = schema_answers(run(settings(tiny_model_dir, max_tokens=12), ASKED))
    assert [(a.finish_reason, a.value_json, a.value, a.completion_tokens) for a in answers] == [
        (FinishReason.LENGTH, None, None, 12)
    ] * 6
    for answer in answers:  # the partial text is kept
        assert answer.text.startswith('{"')
        with pytest.raises(ValueError):
            json.loads(answer.text)


def test_stop_strings_never_cut_a_json_answer(tiny_model_dir: Path) -> None:
    """Stop strings that every JSON answer contains cut the free-text answers only; with
    ``ignore_eos`` too, the JSON answers still end where their JSON does."""
    free = run(settings(tiny_model_dir, stop=()), PLAIN + [ASKED[1]])
    results = run(settings(tiny_model_dir, stop=('"', ":", "e"), ignore_eos=True), PLAIN + [ASKED[1]])
    for tag, answers in results.items():
        plain, structured = answers[:2], answers[2]
        assert structured.finish_reason is FinishReason.STOP
        assert (structured.text, structured.value_json) == (free[tag][2].text, free[tag][2].value_json)
        jsonschema.validate(structured.value, SCHEMA)
        assert all(a.finish_reason in (FinishReason.STOP_STRING, FinishReason.LENGTH) for a in plain)
    assert any(a.finish_reason is FinishReason.STOP_STRING for answers in results.values() for a in answers[:2])


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}, "look-around"),
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 2}}, "required": ["n"]},
         "unsatisfiable"),
        ({"type": "object", "properties": {"n": {"type": "wholenumber"}}}, "not a valid JSON Schema"),
        # The grammar's Rust regex and the answer check's Python re read these apart: never a valid answer.
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^[[:alpha:]]+$"}}},
         "at properties/a/pattern, '^[[:alpha:]]+$', that the grammar (Rust regex) and the answer check"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string", "pattern": "^[a-z&&[^x]]$"}]}}},
         "at properties/a/anyOf/0/pattern"),
        ({"type": "object", "patternProperties": {"^[a--b]$": {"type": "integer"}}},
         "at patternProperties, '^[a--b]$'"),
        # Required all the way down: no finite answer.
        ({"type": "object", "properties": {"child": {"$ref": "#"}}, "required": ["child"]},
         "requires child to hold an object that requires it again"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "required": ["a"],
          "$defs": {"A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}, "required": ["b"]},
                    "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "required": ["a"]}}},
         "requires a/b/a to hold"),
        # llguidance's own words, and the pipeline's fix.
        ({"type": "object", "properties": {"n": {"oneOf": [{"type": "integer"}, {"type": "number"}]}}},
         "the pipeline has no such option: write anyOf"),
        ({"type": "object", "properties": {"n": {"type": "integer", "not": {"const": 3}}}},
         'Unimplemented keys: ["not"]; leave these keywords out'),
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": -1e30}}},
         "-1000000000000000019884624838656; give integers (bounds, enum and const values) from -2**63 to 2**64-1"),
        ({"type": "object", "properties": {"x": {"type": "number", "minimum": -1e300}}}, "...; give integers"),
    ],
)
def test_a_schema_that_cannot_constrain_an_answer_is_refused_before_any_frame(
    tiny_model_dir: Path, schema: dict[str, Any], reason: str
) -> None:
    # An invalid schema is refused as the questions are made, the others when the engine takes them.
    with Engine(settings(tiny_model_dir, max_questions=2)) as engine:
        with pytest.raises(ConfigError) as refused:
            engine.check_fits(make_questions([PLAIN[0], {"text": "Count them.", "schema": schema}]))
    message = str(refused.value)
    assert "\n" not in message and "'Count them.'" in message and reason in message, message


def test_the_library_gives_the_value_beside_the_text(tiny_model_dir: Path) -> None:
    image = frames(1, seed=11)[0]
    overrides = f"model.dir={tiny_model_dir}", "engine.parallel=1", "generation.max_tokens=80"
    with captioner_from_preset("tiny", *overrides, max_questions=3) as captioner:
        text = captioner.answer(image, PLAIN[0])
        structured = captioner.answer(image, ASKED[1])
        asked = captioner.ask(image, ASKED)
    assert isinstance(text, str) and text == asked[0].text
    assert isinstance(structured, Answer) and structured.finish_reason is FinishReason.STOP
    assert structured.value == json.loads(structured.text) == asked[1].value
    jsonschema.validate(structured.value, SCHEMA)
    assert asked[0].value is None and asked[2].value is None


def test_the_grammar_masks_do_not_depend_on_batching(tiny_model_dir: Path) -> None:
    """Greedy JSON answers come out the same one frame at a time as many frames in flight."""
    one = run(settings(tiny_model_dir, parallel=1, lanes=1), ASKED, n_frames=4)
    many = run(settings(tiny_model_dir, parallel=4, n_threads=1, lanes=2), ASKED, n_frames=4)
    assert {t: [a.text for a in answers] for t, answers in one.items()} == {
        t: [a.text for a in answers] for t, answers in many.items()
    }
    assert len({a.text for a in schema_answers(one)}) > 1
    assert np.all([a.finish_reason is FinishReason.STOP for a in schema_answers(one)])


def test_only_json_that_validates_gets_a_value() -> None:
    """The check every finished schema answer goes through, whatever the grammar let out."""
    (question,) = make_questions([ASKED[1]])
    schema = answer_schema(question)
    valid = {"people": 3, "mood": "calm", "note": "ok", "outdoor": False, "light": 0.5}
    assert schema.value_json(json.dumps(valid, indent=2)) == json.dumps(valid, separators=(",", ":"))
    for wrong in ({**valid, "people": 5}, {**valid, "mood": "sad"}, {**valid, "note": "too long"}, {"people": 3}):
        assert schema.value_json(json.dumps(wrong)) is None, wrong
    assert schema.value_json('{"people": 3, "mood": "calm"') is None


class ByteTokens:
    """A vocabulary of the 256 bytes and an end token: a matcher over it admits exactly the texts
    its grammar does, a character at a time."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([b]) for b in range(256)] + [b""]
    special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        """``text`` as tokens: a byte each."""
        return list(text)


def numbers_admitted(grammar: str, longest: int) -> list[str]:
    """Every number of at most ``longest`` characters that ``grammar`` (of ``{"x": ...}``)
    lets the model write for ``x``."""
    tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(ByteTokens()), slices=[])
    matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    prefix = list(b'{"x": ')
    found = []

    def walk(tokens: list[int]) -> None:
        if matcher.validate_tokens([*tokens, ord("}")]) == len(tokens) + 1:
            found.append(bytes(tokens[len(prefix) :]).decode())
        for char in b"0123456789.-+eE" if len(tokens) < len(prefix) + longest else b"":
            if matcher.validate_tokens([*tokens, char]) == len(tokens) + 1:
                walk([*tokens, char])

    walk(prefix)
    return found


def number_schema(number: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": number}, "required": ["x"], "additionalProperties": False}


@pytest.mark.parametrize(
    "number",
    [
        {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.1},
        {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.01},
        {"type": "number", "minimum": -1, "maximum": 3, "multipleOf": 0.3},
        {"type": "number", "exclusiveMinimum": -0.5, "exclusiveMaximum": 0.5, "multipleOf": 0.1},
        {"type": ["number", "null"], "minimum": 0, "maximum": 1, "multipleOf": 0.05},
        {"type": "number", "multipleOf": 0.1},  # unbounded: every such number up to 4 characters
    ],
)
def test_every_number_the_grammar_admits_for_a_decimal_multiple_of_is_valid(number: dict[str, Any]) -> None:
    (question,) = make_questions([{"text": "How much?", "schema": number_schema(number)}])
    schema = answer_schema(question)

    admitted = numbers_admitted(schema.grammar, longest=4 if "maximum" not in number else 6)

    assert len(admitted) >= 10, admitted
    assert [n for n in admitted if schema.value_json(f'{{"x": {n}}}') is None] == []


def test_decimal_multiples_and_bounds_are_checked_on_the_number_as_written() -> None:
    def valid(number: dict[str, Any], text: str) -> bool:
        (question,) = make_questions([{"text": "How much?", "schema": number_schema(number)}])
        return answer_schema(question).value_json(f'{{"x": {text}}}') is not None

    tenths = {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.1}
    assert all(valid(tenths, n) for n in ("0", "0.0", "0.1", "0.3", "0.6", "0.7", "0.9", "1", "1.0"))
    assert not any(valid(tenths, n) for n in ("0.35", "1.1", "-0.1", "0.30000000000000004"))
    hundredths = {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.01}
    assert [i for i in range(101) if not valid(hundredths, str(Decimal(i) / 100))] == []
    assert valid({"type": "number", "multipleOf": 0.1}, "-0.3")
    assert valid({"type": "number", "multipleOf": 0.3}, "123456789012345678.9")  # float division says no
    assert not valid({"type": "number", "multipleOf": 0.3}, "123456789012345679.0")
    assert not valid({"type": "number", "multipleOf": 0.3}, "1e999999999")  # no float holds it: not counted valid
    assert valid({"type": "number", "exclusiveMinimum": 0.1}, "0.10000000000000000001")  # as a float: 0.1
    assert not valid({"type": "number", "exclusiveMinimum": 0.1}, "0.1")
    assert valid({"type": "number", "exclusiveMaximum": 0.3}, "0.29999999999999999999")
    assert valid({"type": "integer", "minimum": 0, "maximum": 20, "multipleOf": 0.5}, "7")


def refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_a_value_is_strict_json_with_each_number_as_written() -> None:
    (question,) = make_questions([{"text": "How much?", "schema": number_schema({"type": "number"})}])
    schema = answer_schema(question)
    for written in ("628E6126", "-1e400", "815e-06681", "0.50", "1.0", "-7", "123456789012345678901234567890.5"):
        value_json = schema.value_json(f'{{"x": {written}}}')
        assert value_json == f'{{"x":{written}}}'
        json.loads(value_json, parse_constant=refuse_constant)


REASONED = {"text": "Think step by step, then decide whether it is outdoors.", "schema": {
    "type": "object",
    "properties": {"reasoning": {"type": "string", "maxLength": 30}, "decision": {"type": "boolean"}},
    "required": ["reasoning", "decision"],
    "additionalProperties": False,
}}


def test_properties_are_generated_in_the_order_the_schema_gives_them(tiny_model_dir: Path) -> None:
    answers = schema_answers(run(settings(tiny_model_dir, max_questions=1), [REASONED], n_frames=2))
    assert len(answers) == 2
    assert all(a.text.startswith('{"reasoning": ') for a in answers), [a.text for a in answers]
    assert all(list(a.value) == ["reasoning", "decision"] for a in answers if a.value is not None)
