"""Strict parsers of WebVTT and SubRip for the tests, written to the formats' rules (W3C WebVTT:
file header, blocks separated by blank lines, NOTE blocks, cue identifier / timing line /
payload), so a file that a lenient reader would still accept fails here."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_VTT_TIMING = re.compile(rf"^{_VTT_TIME}[ \t]+-->[ \t]+{_VTT_TIME}(?:[ \t]+\S.*)?$")
_SRT_TIMING = re.compile(r"^(\d{2}):([0-5]\d):([0-5]\d),(\d{3}) --> (\d{2}):([0-5]\d):([0-5]\d),(\d{3})$")
_VTT_ESCAPES = re.compile(r"&(amp|lt|gt|lrm|rlm|nbsp);")


@dataclass(frozen=True)
class ParsedCue:
    """A cue as read back: times in milliseconds and the text a player shows."""

    identifier: str
    start_ms: int
    end_ms: int
    text: str


def _ms(hours: str | None, minutes: str, seconds: str, millis: str) -> int:
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def parse_vtt(text: str) -> tuple[list[str], list[ParsedCue]]:
    """NOTE texts and cues of a WebVTT file; raises AssertionError on anything off-spec.

    Checks: the ``WEBVTT`` header line; LF line ends; blocks split by blank lines; NOTE blocks
    without ``-->``; each cue an optional identifier without ``-->``, a timing line, and at
    least one payload line without ``-->`` or a raw ``<`` (no markup is expected) and with
    only known character references; end after start; start times never going back.
    """
    assert "\r" not in text, "CR in a WebVTT file"
    text = text.removeprefix("\ufeff")
    assert re.match(r"^WEBVTT(?:[ \t][^\n]*)?\n", text), f"bad header: {text[:40]!r}"
    assert "-->" not in text.split("\n", 1)[0]
    blocks = [b for b in re.split(r"\n{2,}", text.split("\n", 1)[1]) if b.strip("\n")]
    notes: list[str] = []
    cues: list[ParsedCue] = []
    for block in blocks:
        block = block.strip("\n")
        lines = block.split("\n")
        assert all(line.strip() for line in lines), f"blank line inside a block: {block!r}"
        if re.match(r"^NOTE(?:[ \t]|$)", lines[0]):
            assert "-->" not in block, f"--> in a NOTE: {block!r}"
            notes.append(block[4:].strip())
            continue
        identifier = ""
        if "-->" not in lines[0]:
            identifier, lines = lines[0], lines[1:]
        assert lines, f"a block with no timing line: {block!r}"
        timing = _VTT_TIMING.match(lines[0])
        assert timing, f"bad timing line: {lines[0]!r}"
        start, end = _ms(*timing.groups()[:4]), _ms(*timing.groups()[4:8])
        payload = lines[1:]
        assert payload, f"a cue without text: {block!r}"
        for line in payload:
            assert "-->" not in line and "<" not in line, f"bad cue text: {line!r}"
            assert not re.search(r"&(?!(amp|lt|gt|lrm|rlm|nbsp);)", line), f"bad reference: {line!r}"
        assert end > start, f"cue ends before it starts: {lines[0]!r}"
        assert not cues or start >= cues[-1].start_ms, f"cue starts go back: {lines[0]!r}"
        cues.append(ParsedCue(identifier, start, end, html.unescape("\n".join(payload))))
    return notes, cues


def parse_srt(text: str) -> list[ParsedCue]:
    """Cues of a SubRip file; raises AssertionError on anything off-format: numbered from 1
    without gaps, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, at least one non-blank text line, end after
    start, blocks split by one blank line."""
    assert "\r" not in text
    assert text.endswith("\n\n") or not text
    cues: list[ParsedCue] = []
    for number, block in enumerate(text.rstrip("\n").split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number), f"cue number {lines[0]!r}, expected {number}"
        timing = _SRT_TIMING.match(lines[1])
        assert timing, f"bad timing line: {lines[1]!r}"
        groups = timing.groups()
        start, end = _ms(*groups[:4]), _ms(*groups[4:])
        assert end > start
        assert len(lines) > 2 and all(line.strip() for line in lines[2:]), f"bad text: {block!r}"
        assert not any("-->" in line for line in lines[2:])
        cues.append(ParsedCue(lines[0], start, end, "\n".join(lines[2:])))
    return cues
