"""A prompt with any mix of backslashes, quotes and ``${`` is the prompt typed, whether it is
typed bare (``prompt=a \\${x} b``: read as it stands, or refused in one line whose fix is read as
it stands) or in Hydra's quotes; and the one way the pipeline quotes a value for Hydra's
grammar reads back as that value. Each case is built here from pieces, many at once."""

from __future__ import annotations

import random
import re
import shlex
from typing import Any

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from omegaconf import OmegaConf

from pipeline.config import compose_config
from pipeline.errors import ConfigError
from pipeline.override_words import hydra_value
from pipeline.overrides import checked_overrides

# Pieces a text typed bare is made of: a backslash stands before ${ (text, as typed, like the
# ${...}), a letter or the end, where Hydra reads none as an escape; quotes, a comma, brackets
# and an unclosed ${ make Hydra refuse the bare text, and then the error's fix must carry it.
BARE = ["a", "b c", "?", "$", "${x}", "${oc.env:HOME}", "\\${x}", "\\\\${x}", "\\\\\\${x}", "\\\\\\\\${y}",
        "\\a", "'", '"', "It's", "}", "${", "x, y", "(1)", "é"]
# Pieces of a text typed in quotes: a backslash anywhere, also before a quote or at the end.
QUOTED = ["a", " ", "'", '"', "\\", "\\\\", "${x}", "\\${x}", "}", "$", ",", "${"]


def texts(pieces: list[str], count: int, seed: int, end: str = "") -> list[str]:
    """``count`` texts of one to four ``pieces``, each followed by ``end`` in every third text."""
    pick = random.Random(seed)
    made = ["".join(pick.choices(pieces, k=pick.randint(1, 4))) + (end if i % 3 == 2 else "") for i in range(count)]
    return list(dict.fromkeys(made))


BARE_TEXTS = ["a \\\\${x} b", *texts(BARE, 80, seed=1, end="\\")]
BARE_TEXTS = [text for text in BARE_TEXTS if not re.fullmatch(r"""(['"]).*\1""", text)]  # not 'quoted'
QUOTED_TEXTS = texts(QUOTED, 60, seed=2)


def prompt_read(argument: str) -> Any:
    """The prompt a run reads from ``argument`` (checked as the command line checks it)."""
    return OmegaConf.select(compose_config(checked_overrides(["video=x.mp4", argument])), "prompt")


def fix_of(error: ConfigError) -> str:
    """The argument an error line proposes ("write it as <shell word>"), as the shell passes it."""
    (argument,) = shlex.split(str(error).split("write it as ", 1)[1].split(", or put ", 1)[0])
    return argument


@pytest.mark.parametrize("text", BARE_TEXTS)
def test_a_bare_prompt_is_read_as_typed_or_refused_with_a_fix_that_is(text: str) -> None:
    try:
        read = prompt_read(f"prompt={text}")
    except ConfigError as error:
        read = prompt_read(fix_of(error))
    assert read == text


@pytest.mark.parametrize("text", QUOTED_TEXTS)
def test_a_prompt_in_hydras_quotes_is_read_as_typed(text: str) -> None:
    typed = QuotedString(text=text, quote=Quote.single).with_quotes()  # Hydra's own quoting
    assert prompt_read(f"prompt={typed}") == text


def test_bare_list_items_and_sweep_choices_keep_the_backslashes_before_each_interpolation() -> None:
    cfg = compose_config(checked_overrides(["video=x.mp4", "prompts=[a \\\\${x},\\${y} \\\\\\${z}]"]))
    assert OmegaConf.to_container(cfg.prompts, resolve=True) == ["a \\\\${x}", "\\${y} \\\\\\${z}"]
    (written,) = checked_overrides(["prompt=\\\\${x},b \\${y}"], multirun=True)
    choices = OverridesParser.create().parse_overrides([written])[0].sweep_string_iterator()
    assert [compose_config([f"prompt={choice}"]).prompt for choice in choices] == ["\\\\${x}", "b \\${y}"]


@pytest.mark.parametrize("quote", ["'", '"'])
@pytest.mark.parametrize("value", [*texts(QUOTED, 300, seed=3, end="\\"), ["a", "b'\\"], {"k": "\\${x}'"}, 1.5, None])
def test_the_one_quoting_reads_back_as_the_value(value: Any, quote: str) -> None:
    (override,) = OverridesParser.create().parse_overrides([f"prompt={hydra_value(value, quote)}"])
    assert override.value() == value
