"""List files people write by hand: a manifest of videos, a file of prompts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import InputError
from pipeline.files import read_text

# A list file with one of these endings is a YAML or JSON list (its entries may be mappings).
STRUCTURED_SUFFIXES = (".yaml", ".yml", ".json")

_TAG = "tag:yaml.org,2002:"
_YAML11_NUMBER = "tag:video-caption-pipeline,2025:yaml-1.1-number"


class _Yaml11Number(yaml.YAMLError):
    """A plain scalar that YAML 1.1 reads as a number but JSON would not write so (``010``,
    ``0x1F``, ``1_000``, ``1:30``): YAML 1.2 and the command line read it otherwise."""

    def __init__(self, text: str, line: int) -> None:
        super().__init__(text, line)
        self.text, self.line = text, line


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the booleans and numbers of YAML 1.2's core schema, as JSON
    and the Hydra command line read them: ``yes``/``no``/``on``/``off`` are text, ``1e3`` is a
    number, what only YAML 1.1 spells as a number is refused (:class:`_Yaml11Number`). Dates
    stay dates, for the schema check to refuse."""


def _refuse_yaml11_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    raise _Yaml11Number(str(node.value), node.start_mark.line + 1)


def _set_up_yaml12_loader() -> None:
    yaml11 = yaml.SafeLoader.yaml_implicit_resolvers
    replaced = {_TAG + name for name in ("bool", "int", "float", "value")}
    _Yaml12Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in replaced] for first, resolvers in yaml11.items()
    }
    core = [
        ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
        ("int", r"[-+]?(?:0|[1-9][0-9]*)", "-+0123456789"),
        ("float", r"[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+|\.(?:inf|Inf|INF))"
                  r"|\.(?:nan|NaN|NAN)", "-+0123456789."),
    ]
    for name, pattern, first in core:
        _Yaml12Loader.add_implicit_resolver(_TAG + name, re.compile(f"^(?:{pattern})$"), list(first))
    # Tried after those: what YAML 1.1 reads as a number and they do not.
    for first, resolvers in yaml11.items():
        for tag, rx in resolvers:
            if tag in (_TAG + "int", _TAG + "float"):
                _Yaml12Loader.add_implicit_resolver(_YAML11_NUMBER, rx, [first])
    _Yaml12Loader.add_constructor(_YAML11_NUMBER, _refuse_yaml11_number)


_set_up_yaml12_loader()


def read_list_file(path: Path, setting: str, entry: str, verbatim: bool = False) -> list[str]:
    """The entries of a list file (a manifest, a prompts file): its UTF-8 lines (a byte-order
    mark allowed; a line ends at LF, CR LF or CR, nothing else), without blank lines and lines
    whose first character that is not blank is ``#``.

    Args:
        path: The file.
        setting: The setting that named it, for the error (``video``, ``prompts_file``).
        entry: What one line is, for the error (``path``, ``prompt``).
        verbatim: Keep each line exactly as written (a path: a file name may begin or end with
            spaces); otherwise it is stripped of blanks at both ends (a prompt).

    Raises:
        InputError: The file cannot be read or is not UTF-8 (one line naming ``setting=path``).
    """
    try:
        # Universal newlines: LF, CR LF and CR end a line; str.splitlines would also end one at
        # characters a file name may hold (U+0085, U+2028, form feed...).
        lines = read_text(path).split("\n")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InputError(
            f"{setting}={path} cannot be read ({reason}); give a UTF-8 text file, one {entry} per line"
        ) from error
    kept = [line for line in lines if line.strip() and not line.strip().startswith("#")]
    return kept if verbatim else [line.strip() for line in kept]


def read_structured_list(path: Path, setting: str, entry: str) -> list[Any]:
    """The entries of a YAML (``.yaml``, ``.yml``) or JSON (``.json``) list file, as plain values.

    YAML's plain scalars mean what they mean in JSON and on the Hydra command line (YAML 1.2's
    core schema), not what YAML 1.1 made of them: only ``true`` and ``false`` are booleans
    (``yes``, ``no``, ``on``, ``off`` are text), a number is written as JSON writes it (``1e3``
    too), and what only YAML 1.1 reads as a number (``010``, ``0x1F``, ``1_000``, ``1:30``) is
    refused. Dates stay dates (not JSON: refused where the entry is checked).

    Raises:
        InputError: The file cannot be read or parsed, holds a number only YAML 1.1 reads, or
            holds something other than a list (one line naming ``setting=path``).
    """
    try:
        text = read_text(path)
        value = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_Yaml12Loader)
    except _Yaml11Number as error:
        raise InputError(
            f"{setting}={path} line {error.line}: {error.text} is a number in YAML 1.1's spelling, not JSON's, which "
            f"other readers take otherwise; quote it ('{error.text}') for text, or write the number as JSON does"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else " ".join(str(error).split())
        raise InputError(
            f"{setting}={path} cannot be read ({reason}); give a UTF-8 {path.suffix[1:].upper()} list, "
            f"one {entry} per item"
        ) from error
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{setting}={path} holds a {type(value).__name__}, not a list; give one {entry} per item")
    return value
