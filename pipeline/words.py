"""The words every message uses: counts and durations (``1 video``, ``2 videos``, ``12 min 5 s``),
and text made safe to print (:func:`visible`)."""

from __future__ import annotations

# Control characters and the characters that end a line (Unicode categories Cc, Zl, Zp): C0 and
# DEL as their Control Pictures (U+2400..., "␊", "␛", "␡"); C1 (NEL, and CSI, which steers a
# terminal as ESC [ does), LINE SEPARATOR and PARAGRAPH SEPARATOR, which have none, as \uXXXX.
_VISIBLE: dict[int, str] = {
    **{c: chr(0x2400 + c) for c in range(0x20)},
    0x7F: "\u2421",
    **{c: f"\\u{c:04x}" for c in (*range(0x80, 0xA0), 0x2028, 0x2029)},
}
_VISIBLE_KEEPING_LINES = {c: shown for c, shown in _VISIBLE.items() if c not in (0x09, 0x0A)}


def visible(text: str, keep_lines: bool = False) -> str:
    """``text`` with its control characters and line separators made visible, so that no text
    (a file name holding a newline or an escape sequence, a model's answer) can break a line,
    forge one, or steer the terminal: ``"a\\nb"`` becomes ``"a␊b"``, ESC ``␛``, U+2028 ``\\u2028``.

    Args:
        text: Any text.
        keep_lines: Keep tabs and line feeds (an answer's own lines, as the report and the
            subtitle tracks show them); the rest is made visible all the same.
    """
    return text.translate(_VISIBLE_KEEPING_LINES if keep_lines else _VISIBLE)


def plural(count: int, noun: str) -> str:
    """``1 frame``, ``0 frames``, ``3 videos`` (regular English plurals only)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def duration(seconds: float) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 20 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
