"""Structured answers: a question's JSON Schema made into a grammar that decoding follows, token
masks for many sequences at once, and the check of every finished answer against the schema.

The grammar comes from llguidance (the library llama.cpp upstream and vLLM use): it enforces
what the schema says, ``minimum``/``maximum`` and ``maxLength`` included, and lets no raw control
character into a string, where llama-cpp-python's own GBNF converter ignores bounds. Its matcher
follows each constrained sequence token by token and fills a bitmask of the tokens that may come
next; the engine keeps the others from being picked. The JSON it admits is compact, ``", "``
and ``": "`` its only spaces, so that a model cannot spend its tokens on whitespace. Whatever
the grammar admits, a finished answer counts as valid only once ``jsonschema`` says so, its
numeric keywords (``multipleOf``, the bounds) computed on the decimals as written, as the
grammar does: in floats, 0.6 is no multiple of 0.1.
"""

from __future__ import annotations

import json
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

import jsonschema
import llguidance
import llguidance.llamacpp
import llguidance.numpy
import numpy as np

from pipeline.caption.engine.native import TextModel
from pipeline.caption.engine.records import Question
from pipeline.errors import ConfigError

# How the grammar writes JSON (llguidance's JsonCompileOptions).
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True, eq=False)
class AnswerSchema:
    """A question's schema, compiled: its grammar and its validator."""

    grammar: str
    validator: Any  # a jsonschema validator

    def value_json(self, text: str) -> str | None:
        """``text`` as compact JSON when it parses and validates, else ``None``; each number as
        written (``1e400`` stays ``1e400``, where a float would make it infinite)."""
        try:
            value = json.loads(text, parse_float=_Written)
        except ValueError:
            return None
        if not self.validator.is_valid(value):
            return None
        return _compact(value)


def answer_schema(question: Question) -> AnswerSchema:
    """The compiled schema of a question that has one.

    Raises:
        ConfigError: The schema is not a JSON object, not a valid JSON Schema, or a grammar
            llguidance refuses (one line naming the prompt).
    """
    assert question.schema_json is not None
    try:
        return _compile(question.schema_json)
    except ValueError as error:
        reason = " ".join(str(error).split())
        fix = next((fix for needle, fix in _FIXES if needle in reason), "")
        if len(reason) > 200:
            reason = reason[:197] + "..."
        raise ConfigError(f"the schema of prompt {question.text!r} cannot constrain an answer: {reason}{fix}") from None


# What to do about llguidance's refusals that name no fix, or one of its own options, by a text in them.
_FIXES = (
    ("coerce_one_of", "; the pipeline has no such option: write anyOf, which the grammar enforces"),
    ("Unimplemented keys", "; leave these keywords out, the grammar cannot enforce them"),
    ("not JSON serializable", "; give integers (bounds, enum and const values) from -2**63 to 2**64-1, or leave the "
                              "bound out"),
)


@lru_cache(maxsize=64)
def _compile(schema_json: str) -> AnswerSchema:
    """Compile a schema once per process (a run asks for its questions' schemas per call)."""
    schema = json.loads(schema_json)
    if not isinstance(schema, dict):
        raise ValueError("it is not a JSON object")
    draft = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_type = _exact_numbers(draft)
    try:
        validator_type.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ValueError(f"not a valid JSON Schema: {error.message}") from None
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_LAYOUT)  # type: ignore[arg-type]
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise ValueError(messages[0])
    return AnswerSchema(grammar, validator_type(schema))


class _Written(float):
    """A JSON number with a fraction or an exponent: its float, and the text it was written as."""

    text: str

    def __new__(cls, text: str) -> _Written:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _compact(value: Any) -> str:
    """A value of ``json.loads(..., parse_float=_Written)`` as compact JSON, each number with a
    fraction or an exponent as it was written."""
    if isinstance(value, _Written):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{_compact(key)}:{_compact(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)  # a string, an integer, true, false or null


def _decimal(number: Any) -> Decimal:
    """A JSON number as the exact decimal it was written as (a schema's float: as JSON writes it)."""
    if isinstance(number, _Written):
        return Decimal(number.text)
    return Decimal(repr(number) if isinstance(number, float) else number)


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    """Whether ``value`` is an integer times ``step`` (> 0), exactly, however many digits or
    however large an exponent either is written with."""
    if not (value.is_finite() and step.is_finite()):
        return False
    (_, a_digits, a_exp), (_, b_digits, b_exp) = value.as_tuple(), step.as_tuple()
    a, b = int(Decimal((0, a_digits, 0))), int(Decimal((0, b_digits, 0)))
    shift = int(a_exp) - int(b_exp)  # value / step = ±a / b * 10**shift
    if a == 0:
        return True
    if shift >= 0:
        return a * pow(10, shift, b) % b == 0
    return -shift <= len(a_digits) and a % (b * 10**-shift) == 0  # else b * 10**-shift > a


def _multiple_of(validator: Any, step: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "number") and not _is_multiple(_decimal(instance), _decimal(step)):
        yield jsonschema.ValidationError(f"{instance!r} is not a multiple of {step!r}")


def _bound(holds: Callable[[Decimal, Decimal], bool], says: str) -> Callable[..., Iterator[jsonschema.ValidationError]]:
    def check(validator: Any, bound: Any, instance: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
        if validator.is_type(instance, "number"):
            value, limit = _decimal(instance), _decimal(bound)
            if value.is_nan() or limit.is_nan() or not holds(value, limit):
                yield jsonschema.ValidationError(f"{instance!r} is {says} {bound!r}")

    return check


@lru_cache(maxsize=None)
def _exact_numbers(validator_type: Any) -> Any:
    """``validator_type`` with ``multipleOf`` and (from draft 6, where they are numbers) the
    bounds computed on the numbers as written (:class:`_Written`), as the grammar computes them."""
    keywords: dict[str, Callable[..., Iterator[jsonschema.ValidationError]]] = {"multipleOf": _multiple_of}
    if "exclusiveMinimum" in validator_type.VALIDATORS:
        keywords.update(
            minimum=_bound(operator.ge, "less than the minimum of"),
            maximum=_bound(operator.le, "more than the maximum of"),
            exclusiveMinimum=_bound(operator.gt, "not more than the exclusive minimum of"),
            exclusiveMaximum=_bound(operator.lt, "not less than the exclusive maximum of"),
        )
    mine = {keyword: check for keyword, check in keywords.items() if keyword in validator_type.VALIDATORS}
    return jsonschema.validators.extend(validator_type, mine)


class Grammars:
    """Matchers over one text model's vocabulary, and their token masks.

    Args:
        model: The loaded text model; its end-of-generation tokens end a matcher's answer.
    """

    def __init__(self, model: TextModel) -> None:
        eog = [int(t) for t in model.end_of_generation_ids()]
        self.n_vocab = int(model.n_vocab)
        # 0.2-0.3 s for a 32k vocabulary: built once per engine, when the first schema comes. (It
        # calls llama_token_get_attr, which llama-cpp-python warns about once per token.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self._tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(
                model.vocab, n_vocab=self.n_vocab, eos_token=eog
            )
        self._fresh: dict[str, llguidance.LLMatcher] = {}  # a matcher per grammar, at its start

    def prepare(self, schemas: Sequence[AnswerSchema]) -> None:
        """Make the matchers of these schemas' grammars (before :meth:`matcher` is asked for
        them, perhaps on several threads)."""
        for schema in schemas:
            if schema.grammar not in self._fresh:
                self._fresh[schema.grammar] = llguidance.LLMatcher(self._tokenizer, schema.grammar, log_level=0)

    def matcher(self, schema: AnswerSchema) -> llguidance.LLMatcher:
        """A matcher at the start of ``schema``'s grammar (:meth:`prepare` made it)."""
        return self._fresh[schema.grammar].deep_copy()

    def allowed(self, matchers: Sequence[llguidance.LLMatcher]) -> np.ndarray:
        """Which tokens may come next, a row of ``n_vocab`` booleans per matcher. (One matcher
        after the other: llguidance's thread pool, ``fill_next_token_bitmask_par``, took 1-4 ms
        a step for 4-16 matchers on a 2-core machine where this takes 0.05-0.3 ms; BENCHMARKS.md,
        "Structured answers".) A matcher in an error state allows only end of generation."""
        bitmask = llguidance.numpy.allocate_token_bitmask(len(matchers), self.n_vocab)
        for row, matcher in enumerate(matchers):
            llguidance.numpy.fill_next_token_bitmask(matcher, bitmask, row)
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, : self.n_vocab]
        return bits.astype(bool)
