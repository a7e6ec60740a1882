"""List files people write by hand: a manifest of videos, a file of prompts."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import InputError


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
