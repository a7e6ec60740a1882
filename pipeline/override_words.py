"""A value written as an override that Hydra reads back as meant, and an override as one
word for a POSIX shell: the quoting that :mod:`pipeline.overrides` words its fixes in."""

from __future__ import annotations

import re
import shlex
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hydra.errors import OverrideParseException


def hydra_value(value: Any, quote: str = "'") -> str:
    """``value`` (a text, number, boolean or null, or a list or mapping of them) as Hydra reads it back,
    the one way to quote: a text in ``quote`` (the other where it holds only that), escaped by Hydra."""
    if isinstance(value, str):
        chosen = quote if quote not in value or {"'", '"'} <= set(value) else "'\"".replace(quote, "")
        return QuotedString(text=value, quote=Quote.single if chosen == "'" else Quote.double).with_quotes()
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(item, quote) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item, quote)}" for key, item in value.items()) + "}"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)  # a number, as Hydra writes it (1.5, 1e-05, inf)


def shell_word(arg: str) -> str:
    """``arg`` as one word for a POSIX shell, quoted the way people write it; one holding a byte
    that is not UTF-8 (a name's, kept by Python as a surrogate) or a control character as bash's
    ``$'...'``, each such byte ``\\xNN``, so that the fix can be typed as shown."""
    if re.fullmatch(r"[\w@%+=:,./~-]+", arg, re.ASCII):
        return arg
    if any(not char.isprintable() for char in arg):  # a surrogate is not printable either
        return "$'" + "".join(_ansi_c(char) for char in arg) + "'"
    if "'" not in arg:
        return f"'{arg}'"
    if not any(c in arg for c in "$`\\!"):
        return '"' + arg.replace('"', '\\"') + '"'
    return shlex.quote(arg)


def _ansi_c(char: str) -> str:
    """One character inside bash's ``$'...'``: a byte kept as a surrogate, or a control
    character, as ``\\xNN``; a quote or backslash escaped; any other as it is."""
    if "\udc80" <= char <= "\udcff":
        return f"\\x{ord(char) - 0xDC00:02x}"
    if not char.isprintable():
        return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogateescape"))
    return "\\" + char if char in "\\'" else char


def reads_as(arg: str, value: Any) -> bool:
    """Whether Hydra reads the override ``arg`` as ``value``."""
    try:
        (override,) = OverridesParser.create().parse_overrides([arg])
    except OverrideParseException:
        return False
    return bool(override.value() == value)


def top_level_commas(value: str) -> list[int]:
    """Positions of the commas of a ``[...]`` list value that are outside quotes and outside
    the ``{...}`` or ``[...]`` of an item (a prompt with a schema: ``{text: ..., schema: {...}}``)."""
    positions, quote, depth = [], "", 0
    for position, char in enumerate(value):
        if quote:
            quote = "" if char == quote and value[position - 1] != "\\" else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth <= 1:
            positions.append(position)
    return positions


def ambiguous_comma(value: str) -> bool:
    """Whether an unquoted comma followed by a space sits between two unquoted words of a list (``[What is
    shown?,Any text, e.g. signs?]``): a separator to Hydra, maybe part of a prompt to the person who wrote it."""
    if not (value.startswith("[") and value.endswith("]")):
        return False
    for position in top_level_commas(value):
        before, after = value[:position].rstrip(), value[position + 1 :]
        if after[:1].isspace() and before[-1:] not in "[\"'" and after.lstrip()[:1] not in "]\"'":
            return True
    return False
