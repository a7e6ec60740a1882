"""One way to refuse a number (:mod:`pipeline.ranges`): the range in words, the house rule that
no other module spells its own range sentence, and the same sentence for a setting of each
owner (the run, the captioner, a sampler, the thumbnails, the executor's queue, Ray's) at the
command line."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, UserError
from pipeline.ranges import Range, check_ranges, number
from tests.conftest import ROOT, SAMPLE_VIDEO, assert_one_line_error, run_cli


@pytest.mark.parametrize(
    ("allowed", "inside", "outside"),
    [
        (Range(1), [1, 2, 10**12], [0, 0.999, -1, math.inf, math.nan]),
        (Range(0, strict=True, high=1), [1e-9, 0.5, 1], [0, -0.0, 1.0000001, math.nan]),
        (Range(-1, high=2**31 - 1), [-1, 0, 2**31 - 1], [-2, 2**31]),
        (Range(1e-3), [1e-3, 3600.0], [1e-300, 0, math.inf, -math.inf]),
    ],
)
def test_a_range_takes_its_numbers_and_never_a_nan_or_an_infinity(
    allowed: Range, inside: list[float], outside: list[float]
) -> None:
    assert [allowed.holds(v) for v in inside] == [True] * len(inside)
    assert [allowed.holds(v) for v in outside] == [False] * len(outside)


def test_the_refusal_names_the_setting_its_value_the_range_null_and_the_fix() -> None:
    assert Range(1, high=512, null="for one per core").refusal("engine.n_threads", 0) == (
        "engine.n_threads=0 is out of range: engine.n_threads must be >= 1 and <= 512, or null for one per core"
    )
    assert Range(1e-3, hint="for every frame: sampler=all").refusal("sampler.interval_s", -1.0) == (
        "sampler.interval_s=-1 is out of range: sampler.interval_s must be >= 0.001 (for every frame: sampler=all)"
    )
    assert Range(0, strict=True).refusal("end_s", math.inf) == "end_s=inf is out of range: end_s must be > 0"
    written = [number(v) for v in (4294967294, 2.0**32, 0.25, -0.0, math.nan)]
    assert written == ["4294967294", "4294967296", "0.25", "0", "nan"]


def test_check_ranges_refuses_the_first_out_of_range_with_the_owners_error_and_takes_null() -> None:
    ranges = {"a": Range(1), "b": Range(0, high=3), "c": Range(5)}
    values = {"a": None, "b": 4, "c": 0}
    with pytest.raises(ConfigError, match=r"^b=4 is out of range: b must be >= 0 and <= 3$"):
        check_ranges(ranges, values.__getitem__)

    class MyError(UserError):
        pass

    with pytest.raises(MyError, match="^c=0 is out of range"):
        check_ranges({"c": Range(5)}, values.__getitem__, MyError)
    check_ranges({"a": Range(1)}, values.__getitem__)  # null is taken


# A range said by hand: ">= 1, got", "in 0..64", "1-100", "1 to 512", "at least 0.001 s".
HAND_SAID = re.compile(r"must be (>|<|in [(\[]?-?[\d{]|-?[\d{]+ ?(-|to) ?-?[\d{]|at least -?[\d{])")


def _strings(source: str) -> list[tuple[int, str]]:
    """The string constants of a module's source (f-strings' literal parts joined), with their lines."""
    found: list[tuple[int, str]] = []
    parts: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            parts.update(id(v) for v in node.values)
            text = "".join(str(v.value) if isinstance(v, ast.Constant) else "{}" for v in node.values)
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            found.append((node.lineno, node.value))
    return found


def test_no_module_but_ranges_says_a_range_in_its_own_words() -> None:
    said = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:80]}"
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        if path.name != "ranges.py"
        for line, text in _strings(path.read_text())
        if HAND_SAID.search(text) and not text.lstrip().startswith(("Args", "Raises"))
    ]
    assert said == [], "refuse a number with pipeline.ranges.Range:\n" + "\n".join(said)


def test_the_house_rule_sees_a_range_said_by_hand() -> None:
    planted = 'raise ValueError(f"quality must be 1-100, got {q}")\nx = "n must be >= 1"\ny = "t must be in 0..64"\n'
    texts = [text for _, text in _strings(planted)]
    assert [bool(HAND_SAID.search(t)) for t in texts] == [True, True, True]


@pytest.mark.parametrize(
    ("settings", "refused", "words"),
    [
        (["engine.n_threads=0"], "engine.n_threads=0", ">= 1 and <= 512, or null for the physical cores less one"),
        (["generation.temperature=-0.5"], "generation.temperature=-0.5", ">= 0"),
        (["generation.top_k=2147483648"], "generation.top_k=2147483648", ">= 0 and <= 2147483647"),
        (["engine.prefetch_frames=257"], "engine.prefetch_frames=257", ">= 1 and <= 256"),
        (["sampler=scene", "sampler.threshold=0"], "sampler.threshold=0", "> 0 and <= 255"),
        (["sampler.interval_s=inf"], "sampler.interval_s=inf", ">= 0.001 (for every frame: sampler=all)"),
        (["sampler.dedup.threshold=65"], "sampler.dedup.threshold=65", ">= 0 and <= 64"),
        (["thumbnails.quality=101"], "thumbnails.quality=101", ">= 1 and <= 100"),
        (["shard=2", "num_shards=2"], "shard=2", ">= 0 and <= 1 (the shards of num_shards=2 are 0 to 1)"),
        (["progress_interval_s=1e10"], "progress_interval_s=10000000000", ">= 1 and <= 86400, or null for no"),
        (["stall_timeout_s=1e10"], "stall_timeout_s=10000000000", "> 0 and <= 604800, or null to wait for ever"),
        (["executor=ray", "executor.retries=-1"], "executor.retries=-1", ">= 0"),
        (["executor=ray", "executor.num_actors=0"], "executor.num_actors=0", ">= 1, or null for one per GPU"),
    ],
)
def test_a_setting_of_each_owner_is_refused_in_the_one_sentence(
    cli_base: list[str], tmp_path: Path, settings: list[str], refused: str, words: str
) -> None:
    key = refused.split("=")[0]
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, *settings)
    assert_one_line_error(result, 1, f"{refused} is out of range: {key} must be {words}")
    assert not (tmp_path / "out").exists()
