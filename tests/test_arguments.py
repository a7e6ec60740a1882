"""The command line people type (issue 16, points 2 and 7): ``--help`` and ``--version``,
prompts and file names that Hydra's grammar would eat, ``prompts_file``."""

from __future__ import annotations

import re
import shlex
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.arguments import KEYS
from tests.conftest import ROOT, SAMPLE_VIDEO, assert_one_line_error, run_cli


def composed(*args: str) -> Any:
    """The job config ``python -m pipeline --cfg job ARGS`` prints."""
    result = run_cli("--cfg", "job", *args)
    assert result.returncode == 0, result.stderr
    return OmegaConf.to_container(OmegaConf.create(result.stdout))


def suggested_argument(stderr: str) -> str:
    """The override an error line proposes ("write it as <shell word>"), as the shell passes it."""
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    proposal = line.split("write it as ", 1)[1].split(", or ", 1)[0]
    (argument,) = shlex.split(proposal)
    return argument


def test_help_is_a_real_usage_text() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("usage: python -m pipeline video=PATH [key=value ...]")
    for key, form, _ in KEYS:
        assert f"{key}={form}" in text
    assert "output_dir=DIR" in text and "[data/output]" in text  # defaults come from conf/
    assert "model=" in text and "llava16_34b, llava16_mistral_7b, llava16_vicuna_7b, tiny [llava16_34b]" in text
    assert "all, interval, scene [interval]" in text and "local, ray [local]" in text
    assert "_schema" not in text and "Hydra" in text and "Examples:" in text
    assert "prompts_file=questions.txt" in text and "Exit codes:" in text
    assert run_cli("-h").stdout == text


def test_version_is_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"video-caption-pipeline {metadata.version('video-caption-pipeline')}"


@pytest.mark.parametrize(
    ("argument", "key", "value"),
    [
        ("prompt=What's shown?", "prompt", "What's shown?"),
        ("prompt=Describe the scene (one sentence).", "prompt", "Describe the scene (one sentence)."),
        ("video=clip (1).mp4", "video", "clip (1).mp4"),
        ("video=a,b.mp4", "video", "a,b.mp4"),
        ("video=[2024] talk.mp4", "video", "[2024] talk.mp4"),
        ("video=café.mp4", "video", "café.mp4"),
        ("prompt=It's $5 (or \"five\")?", "prompt", "It's $5 (or \"five\")?"),
    ],
)
def test_an_unreadable_override_is_one_line_whose_fix_works(argument: str, key: str, value: str) -> None:
    result = run_cli("video=x.mp4", argument, "model=tiny")
    assert_one_line_error(result, 1, "write it as")
    assert "LexerNoViableAlt" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    fixed = suggested_argument(result.stderr)
    assert composed("video=x.mp4", "model=tiny", fixed)[key] == value


def test_a_comma_inside_a_prompt_is_an_error_showing_both_readings() -> None:
    result = run_cli("video=x.mp4", "model=tiny", "prompts=[What is shown?,Any text, e.g. signs?]")
    assert_one_line_error(result, 1, "ambiguous", "prompts_file=FILE")
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    three, two = (shlex.split(word)[0] for word in re.findall(r" write ('[^']*')", line))
    assert composed("video=x.mp4", three)["prompts"] == ["What is shown?", "Any text", "e.g. signs?"]
    assert composed("video=x.mp4", two)["prompts"] == ["What is shown?", "Any text, e.g. signs?"]
    # Quoted prompts, with or without spaces after the separating commas, are not ambiguous.
    quoted = '["What is shown?", "Any text, e.g. signs?"]'
    assert composed("video=x.mp4", f"prompts={quoted}")["prompts"] == ["What is shown?", "Any text, e.g. signs?"]


def test_unquoted_words_are_one_line_with_the_value_joined() -> None:
    result = run_cli("video=x.mp4", "prompt=What", "is", "shown?")
    assert_one_line_error(result, 1, "'is' is not key=value", "'prompt=What is shown?'")


PROMPTS_FILE = """\
# questions for the night (this line is a comment)
What is shown?

Any text, e.g. signs?
Describe the scene (one sentence).
What's written on the "EXIT" sign?
Qué se ve? Что изображено? 何が見えますか?
   Spaces around a prompt are dropped.\t
"""


def test_prompts_file_carries_prompts_unchanged_into_the_parquet(cli_base: list[str], tmp_path: Path) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_text(PROMPTS_FILE, encoding="utf-8")
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"prompts_file={questions}", "max_frames=1")
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert list(df.sort_values("prompt_id").drop_duplicates("prompt").prompt.sort_values()) == sorted([
        "What is shown?", "Any text, e.g. signs?", "Describe the scene (one sentence).",
        'What\'s written on the "EXIT" sign?', "Qué se ve? Что изображено? 何が見えますか?",
        "Spaces around a prompt are dropped.",
    ])
    assert (df.status == "ok").all() and len(df) == 6


@pytest.mark.parametrize(
    ("content", "extra", "needle"),
    [
        ("# only a comment\n\n", [], "holds no prompt"),
        ("What?\n", ["prompt=Why?"], "prompt and prompts_file are both set"),
        (None, [], "cannot be read"),
    ],
)
def test_bad_prompts_file_is_one_line(
    cli_base: list[str], tmp_path: Path, content: str | None, extra: list[str], needle: str
) -> None:
    questions = tmp_path / "questions.txt"
    if content is not None:
        questions.write_text(content)
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"prompts_file={questions}", *extra)
    assert_one_line_error(result, 1, needle)


@pytest.mark.parametrize("name", ["clip (1).mp4", "a,b.mp4", "[2024] talk.mp4", "café.mp4"])
def test_odd_file_names_run_as_the_readme_quotes_them(cli_base: list[str], tmp_path: Path, name: str) -> None:
    clip = tmp_path / name
    shutil.copy(SAMPLE_VIDEO, clip)
    result = run_cli(f"video='{clip}'", *cli_base, "max_frames=1")
    assert result.returncode == 0, result.stderr
    assert list(pd.read_parquet(tmp_path / "out").video_path) == [str(clip)]


def test_the_documented_quoting_table_means_what_it_says() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page.split("## Quoting", 1)[1].split("| you mean | write |", 1)[1].split("\n\n", 1)[0]
    rows = [row for row in table.splitlines() if row.startswith("| ") and not row.startswith("|---")]
    assert len(rows) == 8
    for row in rows:
        meaning, written = row.strip("|").split(" | ")
        expected = re.findall(r"`([^`]+)`", meaning)
        (argument,) = shlex.split(written.strip().strip("`"))
        key = argument.split("=", 1)[0]
        value = composed("video=x.mp4", argument)[key]
        assert value == (expected[0] if len(expected) == 1 else expected), row
