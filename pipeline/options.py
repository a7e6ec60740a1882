"""The one ``key=value`` parser of the sub-commands (``python -m pipeline.export``, ``.report``,
``.status``): their arguments are few and flat, so they do without Hydra and start quickly. Every
sub-command, ``.download`` too, takes ``-h``/``--help`` through :func:`asks_help`."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from pipeline.errors import UserError


def asks_help(args: Sequence[str], text: str) -> bool:
    """Whether ``args`` ask for help (``-h`` or ``--help`` anywhere); if so, ``text`` is printed."""
    if any(arg in ("-h", "--help") for arg in args):
        print(text)
        return True
    return False


class OptionError(UserError):
    """A sub-command's argument is not ``key=value`` with a known key, or a value is wrong; the
    message is one line."""


def parse_options(args: Sequence[str], keys: Sequence[str], required: Sequence[str] = ()) -> dict[str, str]:
    """``key=value`` command-line arguments as a dict; every key one of ``keys`` (a near miss, or
    one with a Hydra prefix such as ``+``, gets the closest named), every value non-empty, the
    ``required`` ones given.

    Raises:
        OptionError: An argument is not of that form, or a required one is missing.
    """
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys or not value:
            expected = ", ".join(f"{k}=..." for k in keys)
            closest = difflib.get_close_matches(key.lstrip("+~"), keys, n=1, cutoff=0.6)
            hint = f"did you mean {closest[0]}=...? " if closest and sep else ""
            raise OptionError(f"bad argument {arg!r}; {hint}expected one of {expected}")
        options[key] = value
    for key in required:
        if key not in options:
            raise OptionError(f"{key}=... is required")
    return options


def flag(options: dict[str, str], key: str, default: bool) -> bool:
    """A ``true``/``false`` option (also ``1``/``0``, ``yes``/``no``).

    Raises:
        OptionError: Another value.
    """
    value = options.get(key)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise OptionError(f"{key} must be true or false, got {value!r}")


def number(options: dict[str, str], key: str, default: int, minimum: int) -> int:
    """An integer option of at least ``minimum``.

    Raises:
        OptionError: Not an integer, or below ``minimum``.
    """
    value = options.get(key)
    if value is None:
        return default
    try:
        result = int(value)
    except ValueError:
        raise OptionError(f"{key} must be a whole number, got {value!r}") from None
    if result < minimum:
        raise OptionError(f"{key} must be >= {minimum}, got {result}")
    return result
