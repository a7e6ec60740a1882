"""Rows as flat files: JSON Lines and CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from pipeline.structured import json_value


def jsonl(flat: pd.DataFrame) -> bytes:
    """Each row as one JSON object per line, every text exactly as stored; ``answer_json`` as
    the parsed value itself, not its text."""
    lines = (
        json.dumps(
            {k: json_value(v) if k == "answer_json" else plain(v) for k, v in record.items()},
            ensure_ascii=False,
        )
        for record in flat.to_dict("records")
    )
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def csv_bytes(records: Iterable[Mapping[Any, Any]], columns: list[str]) -> bytes:
    """The records as CSV with a header."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: plain(record.get(k)) for k in columns})
    return out.getvalue().encode("utf-8")


def plain(value: Any) -> Any:
    """A JSON/CSV value: nulls (None, NaN, NA) become None, numpy scalars Python ones."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
