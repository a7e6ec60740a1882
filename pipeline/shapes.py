"""The shape of what the pipeline reads back from its own files in ``output_dir``.

A record the pipeline wrote is JSON that a person, another version, another host or a damaged
disk may have changed: valid JSON whose values are of another type, or absurd (``"frames":
"abc"``, ``1e400``, a bare ``NaN``, a pid of 0), must not crash a night or a sub-command. Each
file kind declares its fields once, beside the code that writes it, as a mapping of name to
check (:data:`Fields`), and its one reader asks :func:`misfit` before it uses a record; one
that does not fit is treated as one that does not read (skipped, or the kind's documented
fallback).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

Check = Callable[[Any], bool]
Fields = Mapping[str, Check]

LARGEST = 2**53  # no count or time the pipeline keeps comes near it; JSON readers lose digits above
LAST_EPOCH_S = 253402214400  # 9999-12-31 UTC: datetime goes no further


def count(value: Any) -> bool:
    """A whole number >= 0 (not a boolean, not ``3.0``)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= LARGEST


def number(value: Any) -> bool:
    """A finite number >= 0 (seconds, a rate): ``NaN`` and infinity fail the comparison, and
    an integer too large for a float is never turned into one."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= LARGEST


def text(value: Any) -> bool:
    """A string."""
    return isinstance(value, str)


def flag(value: Any) -> bool:
    """``true`` or ``false``."""
    return isinstance(value, bool)


def identifier(value: Any) -> bool:
    """An id the pipeline made (``config_id``, ``work_id``): letters, digits, ``-`` and ``_``
    only, for it names files (no ``/``, no glob's ``*``)."""
    return isinstance(value, str) and re.fullmatch(r"[0-9A-Za-z_-]+", value) is not None


def moment(value: Any) -> bool:
    """An ISO 8601 time with its UTC offset (as :meth:`datetime.isoformat` writes an aware one)."""
    if not isinstance(value, str):
        return False
    try:
        when = datetime.fromisoformat(value)
        when.astimezone(timezone.utc)  # a year 1 or 9999 that UTC moves out of range
    except (ValueError, OverflowError):
        return False
    return when.tzinfo is not None


def epoch_s(value: Any) -> bool:
    """A time as seconds since the epoch (``time.time()``), before the year 9999."""
    return number(value) and value < LAST_EPOCH_S


def one_of(*choices: str) -> Check:
    """One of the strings ``choices``."""
    return lambda value: isinstance(value, str) and value in choices


def between(low: int, high: int) -> Check:
    """A whole number from ``low`` to ``high`` (not a boolean)."""
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class optional:
    """``check``, or ``null`` (or the field left out: :func:`misfit` reads it as ``null``)."""

    check: Check

    def __call__(self, value: Any) -> bool:
        """Whether ``value`` passes."""
        return value is None or self.check(value)


@dataclass(frozen=True)
class list_of:
    """A list whose every item passes ``check``."""

    check: Check

    def __call__(self, value: Any) -> bool:
        """Whether ``value`` passes."""
        return isinstance(value, list) and all(self.check(item) for item in value)


@dataclass(frozen=True)
class record_of:
    """A JSON object whose fields fit ``fields`` (:func:`misfit`)."""

    fields: Fields

    def __call__(self, value: Any) -> bool:
        """Whether ``value`` passes."""
        return isinstance(value, dict) and misfit(value, self.fields) is None


def misfit(record: Mapping[str, Any], fields: Fields) -> str | None:
    """Words for the first field of ``record`` that does not fit ``fields``, where inside it
    (``frames is 'abc'``, ``videos[0].note is {'a': 1}``), ``None`` where every one does. A field
    left out is read as ``null``; fields not named in ``fields`` are not looked at (no reader
    uses them)."""
    for name, check in fields.items():
        found = _where(record.get(name), check)
        if found is not None:
            inside, value = found
            shown = repr(value)
            return f"{name}{inside} is {shown if len(shown) <= 40 else shown[:37] + '...'}"
    return None


def _where(value: Any, check: Check) -> tuple[str, Any] | None:
    """Where in ``value`` it does not pass ``check`` (``[0].note``; "" for the value itself) and
    what stands there; ``None`` where it passes."""
    if isinstance(check, optional):
        return None if value is None else _where(value, check.check)
    if isinstance(check, list_of) and isinstance(value, list):
        for at, item in enumerate(value):
            if (found := _where(item, check.check)) is not None:
                return f"[{at}]{found[0]}", found[1]
        return None
    if isinstance(check, record_of) and isinstance(value, dict):
        for name, inner in check.fields.items():
            if (found := _where(value.get(name), inner)) is not None:
                return f".{name}{found[0]}", found[1]
        return None
    return None if check(value) else ("", value)
