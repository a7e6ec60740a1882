"""List files people write by hand: a manifest of videos, a file of prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import InputError

# A list file with one of these endings is a YAML or JSON list (its entries may be mappings).
STRUCTURED_SUFFIXES = (".yaml", ".yml", ".json")


def read_list_file(path: Path, setting: str, entry: str) -> list[str]:
    """The entries of a list file (a manifest, a prompts file): its UTF-8 lines (a byte-order
    mark allowed), stripped, without blank lines and lines that start with ``#``.

    Raises:
        InputError: The file cannot be read or is not UTF-8 (one line naming ``setting=path``).
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InputError(
            f"{setting}={path} cannot be read ({reason}); give a UTF-8 text file, one {entry} per line"
        ) from error
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def read_structured_list(path: Path, setting: str, entry: str) -> list[Any]:
    """The entries of a YAML (``.yaml``, ``.yml``) or JSON (``.json``) list file, as plain values.

    Raises:
        InputError: The file cannot be read or parsed, or holds something other than a list
            (one line naming ``setting=path``).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
        value = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
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
