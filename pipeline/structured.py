"""Structured answers: prompt entries that carry a JSON Schema, the checks that refuse a schema
that cannot work (before any frame), and the pandas type each top-level property loads as.

A prompt entry is a string, or a mapping ``{text: ..., schema: {...}}`` whose schema describes
a JSON object (``type: object``). The text is sent as written; the schema constrains the
answer. Each top-level property with a plain type becomes a typed column of
:func:`pipeline.results.load_results`:

======================================  ===========
property                                dtype
======================================  ===========
``integer``                             ``Int64``
``number``, ``[integer, number]``       ``Float64``
``boolean``                             ``boolean``
``string``, an ``enum`` of strings      ``string``
======================================  ===========

(an ``enum`` or ``const`` likewise by its values: integers ``Int64``, numbers with or without
integers among them ``Float64``, booleans ``boolean``; an ``anyOf`` by the types of its branches,
a local ``$ref`` as its target); objects, arrays and other mixed types get no column and stay
in ``answer_json``. This module knows no column names: the
result columns a property must not shadow are passed in.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

import jsonschema

from pipeline.errors import ConfigError

# A prompt as the config gives it: its text, or {text: ..., schema: {...}}.
PromptEntry = str | Mapping[str, Any]

ENTRY_KEYS = ("text", "schema")
_DTYPES = {"integer": "Int64", "number": "Float64", "boolean": "boolean", "string": "string"}
COLUMN_DTYPES = frozenset(_DTYPES.values())  # the dtypes of a property's own column


def canonical_json(value: Any) -> str:
    """``value`` as compact JSON, one text per value, so that a hash of it (the ``prompt_id`` of a
    schema prompt) does not depend on how the schema was written: keys sorted but within a
    ``properties`` object (their order is the order the answer is written in, so it is kept), a
    number that equals an integer written as that integer (``0.0`` as ``0``, ``1e2`` as ``100``).

    Raises:
        TypeError: ``value`` holds something JSON has not (a date).
        ValueError: ``value`` holds a float that is not finite.
    """
    return json.dumps(_canonical(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# Keywords that document a schema and constrain no answer (JSON Schema 2020-12, "meta-data").
_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
                          "writeOnly"})
# Where a keyword's value is a schema, a list of schemas, or a map of names to schemas.
_SUBSCHEMA = frozenset({"items", "additionalItems", "additionalProperties", "not", "if", "then", "else", "contains",
                        "propertyNames", "unevaluatedItems", "unevaluatedProperties"})
_SUBSCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def answer_shape(schema: Any) -> Any:
    """``schema`` without the keywords that only document it (``title``, ``description``,
    ``examples``, ...), at any depth: what constrains an answer, and so what a schema prompt's
    ``prompt_id`` is made from. A property or a value named like such a keyword is kept; so is
    the whole schema where a ``$ref`` points into such a keyword (``#/$defs/a/default``), which
    then constrains after all."""
    if any(set(ref.split("/")) & _ANNOTATIONS for ref in _refs(schema)):
        return schema
    return _without_annotations(schema)


def _refs(value: Any) -> Iterator[str]:
    """Every ``$ref`` text anywhere in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _without_annotations(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return [_without_annotations(item) for item in schema] if isinstance(schema, list) else schema
    shaped = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key in _SUBSCHEMA or (key in _SUBSCHEMA_LISTS and isinstance(value, list)):
            value = _without_annotations(value)
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            value = {name: _without_annotations(spec) for name, spec in value.items()}
        shaped[key] = value
    return shaped


def entry_parts(entry: Any) -> tuple[str, Any]:
    """The text and the schema (``None``: a plain prompt) of one prompt entry, its shape
    checked; whether the schema can work is :func:`check_schemas`' to say (and the engine's,
    which builds its grammar).

    Raises:
        ConfigError: The entry is neither a string nor ``{text: ..., schema: {...}}``, its text
            is empty, or its schema holds a value JSON has not (a YAML date).
    """
    if isinstance(entry, str):
        text, schema = entry, None
    elif isinstance(entry, Mapping):
        unknown = sorted(str(key) for key in entry if key not in ENTRY_KEYS)
        if unknown or not isinstance(entry.get("text"), str):
            raise ConfigError(
                f"prompt entry {_short(entry)} is not {{text: ..., schema: {{...}}}}"
                + (f" (unknown keys: {', '.join(unknown)})" if unknown else " (its text is missing)")
                + "; give a string, or a text and a JSON Schema"
            )
        text, schema = entry["text"], entry.get("schema")
    else:
        raise ConfigError(f"prompt entry {_short(entry)} is neither text nor {{text: ..., schema: {{...}}}}")
    if not text.strip():
        raise ConfigError("a prompt is empty; give every prompt some text")
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise ConfigError(
            f"the schema of prompt {text!r} nests objects and lists deeper than {MAX_SCHEMA_DEPTH}; flatten it "
            "(an answer's columns are its top-level properties)"
        )
    if (where := _not_finite(schema)) is not None:
        raise ConfigError(
            f"the schema of prompt {text!r} has a number that is not finite at {where}; give a finite number"
        )
    try:
        canonical_json(schema)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the schema of prompt {text!r} holds a value that is not JSON ({error}); quote it") from None
    return text, schema


def check_schemas(schemas: Iterable[tuple[str, Any]], reserved: Collection[str]) -> None:
    """Refuse, before any frame, the schemas of a run that cannot work: one that does not
    describe an object or is not a valid JSON Schema (``jsonschema``'s ``check_schema``, for
    the draft its ``$schema`` names, else 2020-12); a top-level property named like a result
    column (``reserved``); one property that two prompts give different types.

    Args:
        schemas: ``(prompt text, schema)`` of each schema prompt of a run.
        reserved: The result columns' names.

    Raises:
        ConfigError: The first such problem, naming the prompt.
    """
    schemas = list(schemas)
    for text, schema in schemas:
        _check_schema(text, schema)
    typed: dict[str, tuple[str, str, str]] = {}  # property → (its column, its type, the first prompt giving it)
    for text, schema in schemas:
        columns = column_kinds(schema)
        for name, words in property_types(schema).items():
            if name in reserved:
                raise ConfigError(
                    f"the schema of prompt {text!r} has a property {name!r}, the name of a result column; rename it"
                )
            column = columns[name]
            first = typed.setdefault(name, (column, words, text))
            if first[0] != column:
                raise ConfigError(
                    f"property {name!r} is {first[1]} in the schema of prompt {first[2]!r} but {words} in that "
                    f"of {text!r}; give it one type, or rename it in one of them"
                )


def property_types(schema: Mapping[str, Any]) -> dict[str, str]:
    """Each top-level property of an object schema with its type, as the words a user wrote
    (``integer``, ``string``, ...; several joined by ``|``, as an ``anyOf`` of types gives them;
    ``untyped`` when nothing says). A local ``$ref`` (``#/$defs/Name``) is read as its target."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {str(name): _type_words(spec, schema) for name, spec in properties.items()}


def column_dtypes(schema: Mapping[str, Any]) -> dict[str, str]:
    """The pandas dtype of each top-level property that loads as its own column (see the
    module's table); properties left in ``answer_json`` are not listed."""
    dtypes = {}
    for name, words in property_types(schema).items():
        kinds = {w for w in words.split("|") if w != "null"}
        if kinds == {"integer", "number"}:
            kinds = {"number"}  # every integer is a number: [0.5, 1, 2] is a Float64 column
        if len(kinds) == 1 and (kind := kinds.pop()) in _DTYPES:
            dtypes[name] = _DTYPES[kind]
    return dtypes


def column_kinds(schema: Mapping[str, Any]) -> dict[str, str]:
    """What each top-level property loads as: its pandas dtype where it has a column
    (:func:`column_dtypes`), else the words of its type. Two schemas can share a property's
    column only where these agree: ``[integer, "null"]`` and ``integer`` do; an untyped
    property stays in ``answer_json`` as an object does, so those two agree as well."""
    dtypes = column_dtypes(schema)
    return {
        name: dtypes.get(name, "object" if words == "untyped" else words)
        for name, words in property_types(schema).items()
    }


def property_choices(schema: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The values each top-level property that has a closed set of them may take, in the order
    the schema gives them: an ``enum``'s, a ``const``, ``True`` and ``False`` for a boolean, and
    ``None`` where null is allowed (``type: [boolean, "null"]``, an ``anyOf`` with ``type: null``)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    choices = {}
    for name, spec in properties.items():
        branches = _branches(spec, schema)
        values = None if branches is None else [_values(branch) for branch in branches]
        if values and all(v is not None for v in values):
            choices[str(name)] = _distinct(v for vs in values if vs is not None for v in vs)
    return choices


def json_value(text: Any) -> Any:
    """The value of an ``answer_json`` cell; ``None`` for a null, or for text that is not JSON."""
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def typed_value(value: Any, dtype: str) -> Any:
    """A JSON value as the column of ``dtype`` holds it, or ``None`` where it does not fit (a
    value the schema would refuse, an integer beyond 64 bits, a number beyond a float's range)."""
    if dtype == "Float64" and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    fits = {
        "Int64": isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63,
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
    }
    return value if fits.get(dtype, False) else None


def _type_words(spec: Any, root: Mapping[str, Any]) -> str:
    """A property's JSON type in words: from ``type``, else from the values of ``enum`` or
    ``const``, of it or of each branch of its ``anyOf``/``oneOf``; else ``untyped`` (anything:
    kept in ``answer_json``)."""
    branches = _branches(spec, root)
    words = None if branches is None else [_branch_words(branch) for branch in branches]
    if not words or None in words:
        return "untyped"
    return "|".join(sorted({w for branch in words if branch for w in branch.split("|")}))


def _branch_words(spec: Mapping[str, Any]) -> str | None:
    declared = spec.get("type")
    if isinstance(declared, str):
        return declared
    if isinstance(declared, list) and all(isinstance(t, str) for t in declared):
        return "|".join(sorted(declared))
    values = spec["enum"] if isinstance(spec.get("enum"), list) else [spec["const"]] if "const" in spec else None
    return "|".join(sorted({_json_type(v) for v in values})) if values else None


def _branches(spec: Any, root: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> list[Mapping[str, Any]] | None:
    """The schemas a property's schema stands for: itself, the target of its local ``$ref``, or
    each branch of its ``anyOf``/``oneOf`` (so read); ``None`` where one is not a mapping or a
    ``$ref`` leads nowhere (or round in a circle)."""
    if not isinstance(spec, Mapping):
        return None
    if "type" not in spec and isinstance(ref := spec.get("$ref"), str):
        target = _local_target(ref, root)
        return None if ref in seen or target is None else _branches(target, root, seen | {ref})
    alternatives = spec.get("anyOf", spec.get("oneOf"))
    if "type" not in spec and isinstance(alternatives, list) and alternatives:
        found = [_branches(branch, root, seen) for branch in alternatives]
        return None if None in found else [b for branches in found if branches for b in branches]
    return [spec]


def _local_target(ref: str, root: Mapping[str, Any]) -> Any:
    """What a ``$ref`` such as ``#/$defs/Name`` points to in ``root``; ``None`` for another kind of reference."""
    if not ref.startswith("#/"):
        return None
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part) if isinstance(target, Mapping) else None
    return target


def _values(spec: Mapping[str, Any]) -> list[Any] | None:
    """The values one schema allows where they are a closed set (see :func:`property_choices`)."""
    if isinstance(spec.get("enum"), list):
        return list(spec["enum"])
    if "const" in spec:
        return [spec["const"]]
    declared = spec.get("type")
    types = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
    if not types or not set(types) <= {"boolean", "null"}:
        return None
    return ([True, False] if "boolean" in types else []) + ([None] if "null" in types else [])


def _distinct(values: Iterable[Any]) -> list[Any]:
    """``values`` without repeats, in order (``1`` and ``True`` apart, as JSON holds them)."""
    kept: list[Any] = []
    for value in values:
        if not any(type(value) is type(k) and value == k for k in kept):
            kept.append(value)
    return kept


def _canonical(value: Any, in_order: bool = False) -> Any:
    """``value`` with each float that equals an integer made that integer (JSON Schema holds
    ``0.0`` and ``0`` equal, and JSON writes them apart) and the keys of its dicts sorted, but
    for a ``properties`` object's (``in_order``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        keys = list(value) if in_order else sorted(value)
        return {key: _canonical(value[key], in_order=not in_order and key == "properties") for key in keys}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    return value


# Objects and lists within one another in a schema: deeper, the checks (recursive, as
# jsonschema's are) would end in a RecursionError.
MAX_SCHEMA_DEPTH = 64


def _depth(value: Any) -> int:
    """How deep objects and lists nest in ``value`` (a scalar: 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, Mapping) else item if isinstance(item, list | tuple) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _not_finite(value: Any, where: str = "") -> str | None:
    """Where in ``value`` a float is infinite or NaN (``properties/x/maximum``); ``None`` if nowhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "its top level"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        if (found := _not_finite(item, f"{where}/{key}" if where else str(key))) is not None:
            return found
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null" if value is None else "object"


def _check_schema(text: str, schema: Any) -> None:
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise ConfigError(
            f"the schema of prompt {text!r} does not describe an object (type: object at its top level); "
            "give {type: object, properties: {...}}"
        )
    if (chain := _required_cycle(schema)) is not None:
        raise ConfigError(
            f"the schema of prompt {text!r} requires {chain} to hold an object that requires it again, for ever "
            "(a $ref back to where it started): no finite answer has it; make a property on the way optional"
        )
    for where, pattern in _patterns(schema):
        if _reads_apart(pattern):
            raise ConfigError(
                f"the schema of prompt {text!r} has a pattern at {where}, {pattern!r}, that the grammar (Rust "
                "regex) and the answer check (Python re) read apart: a POSIX class or a set operation in brackets "
                "([[:alpha:]], &&, --, ~~); write the set out ([A-Za-z] for [[:alpha:]])"
            )
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "its top level"
        raise ConfigError(
            f"the schema of prompt {text!r} is not a valid JSON Schema at {where}: {' '.join(error.message.split())}"
        ) from None


def _patterns(schema: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Each regular expression of ``schema`` (a ``pattern``, a name of ``patternProperties``),
    with where it is (``properties/code/pattern``)."""
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from _patterns(item, f"{where}/{i}")
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        at = f"{where}/{key}".lstrip("/")
        if key == "pattern" and isinstance(value, str):
            yield at, value
        elif key in _SUBSCHEMA or (key in _SUBSCHEMA_LISTS and isinstance(value, list)):
            yield from _patterns(value, at)
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            for name, spec in value.items():
                if key == "patternProperties":
                    yield at, name
                yield from _patterns(spec, f"{at}/{name}")


def _required_cycle(schema: Mapping[str, Any]) -> str | None:
    """A chain of required properties, each a local ``$ref`` to an object schema, that comes back
    to an object on the chain (``{required: [child], properties: {child: {$ref: "#"}}}``), as
    ``child/child``; ``None`` where there is none."""
    acyclic: set[int] = set()

    def visit(node: Any, names: tuple[str, ...], chain: frozenset[int]) -> str | None:
        if id(node) in chain:
            return "/".join(names)
        if id(node) in acyclic or not isinstance(node, Mapping) or node.get("type") != "object":
            return None
        properties, required = node.get("properties"), node.get("required")
        if not isinstance(properties, Mapping) or not isinstance(required, list):
            return None
        for name in required:
            spec = properties.get(name)
            if isinstance(spec, Mapping) and set(spec) - _ANNOTATIONS == {"$ref"} and isinstance(spec["$ref"], str):
                target = schema if spec["$ref"] == "#" else _local_target(spec["$ref"], schema)
                if (found := visit(target, (*names, str(name)), chain | {id(node)})) is not None:
                    return found
        acyclic.add(id(node))
        return None

    return visit(schema, (), frozenset())


def _reads_apart(pattern: str) -> bool:
    """Whether Python's ``re`` takes ``pattern`` literally where Rust's regex reads a POSIX class
    or a set operation: ``re`` warns of exactly these (FutureWarning: a possible nested set,
    set difference...). A pattern ``re`` cannot read at all is ``check_schema``'s to refuse."""
    re.purge()  # a pattern compiled before is taken from re's cache without its warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        try:
            re.compile(pattern)
        except FutureWarning:
            return True
        except re.error:
            return False
    return False


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
