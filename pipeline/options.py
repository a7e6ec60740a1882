"""The one ``key=value`` parser of the sub-commands (``python -m pipeline.export``, ``.report``,
``.status``): their arguments are few and flat, so they do without Hydra and start quickly. Every
sub-command, ``.download`` too, takes ``-h``/``--help`` through :func:`asks_help`. An argument
starting with ``-`` that is no option of a command is refused in one line by every command
(:func:`unknown_option`); ``python -m pipeline`` reads Hydra's options with :func:`hydra_options`."""

from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pipeline.errors import UserError
from pipeline.ranges import Range


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
        OptionError: An argument is not of that form or repeats a key, or a required one is
            missing.
    """
    options: dict[str, str] = {}
    expected = ", ".join(f"{k}=..." for k in keys)
    for arg in args:
        key, sep, value = arg.partition("=")
        if arg.startswith("-"):
            raise OptionError(f"{unknown_option(arg, ('-h', '--help'), 'video' if 'video' in keys else None)}; "
                              f"expected one of {expected}")
        if not sep or key not in keys or not value:
            closest = difflib.get_close_matches(key.lstrip("+~"), keys, n=1, cutoff=0.6)
            hint = f"did you mean {closest[0]}=...? " if closest and sep else ""
            raise OptionError(f"bad argument {arg!r}; {hint}expected one of {expected}")
        if key in options:  # the last would win unseen: video=a video=b exports b alone
            raise OptionError(f"{key}= is given twice ({key}={options[key]}, {arg}); give it once")
        options[key] = value
    for key in required:
        if key not in options:
            raise OptionError(f"{key}=... is required")
    return options


def unknown_option(word: str, options: Sequence[str], file_key: str | None = None) -> str:
    """One line for ``word``, an argument starting with ``-`` that is none of a command's
    ``options``: a setting written with dashes gets the same without them, a file whose name
    starts with ``-`` the ``file_key=`` form that names it, a near miss the option meant."""
    bare = word.lstrip("-")
    if "=" in bare and not bare.startswith("="):
        fix = f"settings take no dashes: write {shlex.quote(bare)}"
    elif file_key and (Path(word).suffix or "/" in word or os.path.lexists(word)):
        fix = (f"a file whose name starts with '-' is given as {shlex.quote(f'{file_key}=./{word}')} "
               f"(or {shlex.quote(f'{file_key}={word}')})")
    else:
        names = {option.lstrip("-"): option for option in options}
        closest = difflib.get_close_matches(bare, list(names), n=1, cutoff=0.6)
        fix = f"did you mean {names[closest[0]]}?" if closest else "settings are key=value, without dashes"
        fix += "" if closest else " (--help lists them)"
    return f"unknown option {word}; {fix}"


def hydra_options(args: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's options (``-m``, ``--cfg job``, ...) with their values, and the ``key=value``
    overrides, of a command line that may mix them; options first is how Hydra takes them.

    Raises:
        OptionError: An argument that is no option of Hydra's, or options that do not go together
            (argparse would print its usage and exit 2, which says "some videos failed").
    """
    from hydra._internal.utils import get_args_parser  # only here: the sub-commands start without Hydra

    parser = get_args_parser()

    def refuse(message: str) -> NoReturn:
        unknown = message.partition("unrecognized arguments: ")[2]
        word = next((arg for arg in args if arg.startswith("-") and unknown.startswith(arg)), None)
        options = [option for action in parser._actions for option in action.option_strings]
        if word is not None:
            raise OptionError(unknown_option(word, options, "video"))
        raise OptionError(f"{message}; python -m pipeline --help lists the options")

    setattr(parser, "error", refuse)  # argparse calls the instance's error(), which would exit 2
    parsed = parser.parse_intermixed_args(args)
    options: list[str] = []
    for action in parser._actions:
        value = getattr(parsed, action.dest, None)
        if action.option_strings and action.dest not in ("help", "version") and value != action.default:
            options += [action.option_strings[0], *([] if action.nargs == 0 else [str(value)])]
    commands = [o for o in options if o in ("--run", "--multirun", "--cfg", "--info", "--shell-completion")]
    if len(commands) > 1:
        raise OptionError(f"{' and '.join(commands)} do not go together; give one of them")
    if "--resolve" in options and "--cfg" not in options:
        raise OptionError("--resolve goes with --cfg: python -m pipeline --cfg job --resolve video=PATH")
    if "--package" in options and "--cfg" not in options:
        raise OptionError("--package (-p) goes with --cfg: python -m pipeline --cfg job -p model video=PATH")
    if (theirs := next((option for option in options if option in _HYDRAS_ALONE), None)) is not None:
        raise OptionError(f"{theirs} is Hydra's and not this tool's: {_HYDRAS_ALONE[theirs]}")
    return options, parsed.overrides


# Hydra's options that a run of this tool does not take (Hydra would crash, print several
# lines or read another config), and what to do instead.
_SETTINGS = "the config is conf/ (python -m pipeline --cfg job shows it); choose its groups and settings as key=value"
_HYDRAS_ALONE = {
    "--config-path": _SETTINGS, "--config-name": _SETTINGS, "--config-dir": _SETTINGS,
    "--experimental-rerun": "run again with the same key=value settings (_last_run.json records each run's)",
    "--shell-completion": "python -m pipeline --help lists the options and settings",
    "--hydra-help": "python -m pipeline --help lists the options and settings",
}


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
    Range(minimum).check(key, result, OptionError)
    return result
