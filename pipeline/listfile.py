"""List files people write by hand: a manifest of videos, a file of prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import InputError

# A list file with one of these endings is a YAML or JSON list (its entries may be mappings).
STRUCTURED_SUFFIXES = (".yaml", ".yml", ".json")


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
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InputError(
            f"{setting}={path} cannot be read ({reason}); give a UTF-8 text file, one {entry} per line"
        ) from error
    kept = [line for line in lines if line.strip() and not line.strip().startswith("#")]
    return kept if verbatim else [line.strip() for line in kept]


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
