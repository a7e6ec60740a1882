"""Rows as flat files: JSON Lines with the exact text, CSV safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

# A spreadsheet reads a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def jsonl(flat: pd.DataFrame) -> bytes:
    """Each row as one JSON object per line, every text exactly as stored; ``answer_json`` as
    the JSON value itself, not a string of it, each number as the model wrote it (a float would
    turn ``628E6126`` into ``Infinity``, which is no JSON)."""
    lines = (
        "{" + ", ".join(
            f"{json.dumps(str(k), ensure_ascii=False)}: "
            + (_strict_json(v) if k == "answer_json" else json.dumps(plain(v), ensure_ascii=False))
            for k, v in record.items()
        ) + "}"
        for record in flat.to_dict("records")
    )
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def _strict_json(text: Any) -> str:
    """An ``answer_json`` cell as JSON text on one line: as stored where that is strict JSON
    (a raw line break can only be space between tokens there), else ``null`` (no answer, or a
    value an older version stored as ``Infinity``)."""
    try:
        json.loads(text, parse_constant=_refuse)
    except (TypeError, ValueError):
        return "null"
    return str(text).replace("\r", " ").replace("\n", " ")


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is no JSON")


def csv_bytes(records: Iterable[Mapping[Any, Any]], columns: list[str]) -> bytes:
    """The records as CSV with a header, text that a spreadsheet would run as a formula made
    inert (:func:`inert`) in the header too: a column can be named by an answer schema's
    property."""
    out = io.StringIO()
    # RFC 4180's CRLF: the writer quotes a field holding a character of the line terminator, so
    # with "\n" alone an answer's bare CR went out unquoted and split the row for readers.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([inert(column) for column in columns])
    for record in records:
        writer.writerow([inert(plain(record.get(k))) for k in columns])
    return out.getvalue().encode("utf-8")


def inert(value: Any) -> Any:
    """``value``, with a single quote put before a text that starts as a formula does
    (:data:`FORMULA_STARTS`), as OWASP advises: a spreadsheet then shows it as text instead of
    running it. A text that starts with quotes and then a formula start gets one more quote, so
    that :func:`uninert` gives every text back as it was. Numbers and other values are left as
    they are."""
    if isinstance(value, str) and value.lstrip("'").startswith(FORMULA_STARTS):
        return "'" + value
    return value


def uninert(value: str) -> str:
    """The text that :func:`inert` made ``value`` from: a cell read back from a CSV this module
    wrote (``'-dash.vtt`` is ``-dash.vtt``; ``''-x`` is ``'-x``; ``'tis`` stays ``'tis``)."""
    if value.startswith("'") and value[1:].lstrip("'").startswith(FORMULA_STARTS):
        return value[1:]
    return value


def plain(value: Any) -> Any:
    """A JSON/CSV value: nulls (None, NaN, NA) become None, numpy scalars Python ones."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
