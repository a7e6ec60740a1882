"""Counts and durations in the words every message uses: ``1 video``, ``2 videos``, ``12 min 5 s``."""

from __future__ import annotations


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
