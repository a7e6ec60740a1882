"""``finish_reason``: an answer cut by ``generation.max_tokens`` says ``length``, one ended by a
stop string says ``stop_string``, one the model ended (an end-of-generation token) ``stop``, end
to end through ``python -m pipeline`` on the tiny model.

The tiny model's weights are random, so the test steers it the way a user would: it reads what
the model says with a longer budget, then passes a word of those answers as ``model.stop``, and
checks that exactly the answers containing that word were cut there and say ``stop_string``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from pipeline.store import read_results
from tests.conftest import SAMPLE_VIDEO, run_cli

KEY = ["frame_index", "prompt_id"]
PROMPTS = "prompts=[What is shown?,What colour dominates?]"


def tiny_run(cli_base: list[str], out: Path, *args: str) -> pd.DataFrame:
    """Run the tiny model on 4 frames of the sample clip into ``out``; its rows by key."""
    base = [a for a in cli_base if not a.startswith(("generation.max_tokens=", "output_dir="))]
    done = run_cli(*base, f"output_dir={out}", f"video={SAMPLE_VIDEO}", "max_frames=4", PROMPTS, *args)
    assert done.returncode == 0, done.stderr
    return read_results(out).sort_values(KEY).reset_index(drop=True)


def test_every_answer_cut_by_max_tokens_says_length(cli_base: list[str], tmp_path: Path) -> None:
    rows = tiny_run(cli_base, tmp_path / "short", "generation.max_tokens=4")

    assert len(rows) == 8 and rows["status"].eq("ok").all()
    assert rows["completion_tokens"].eq(4).all()
    assert rows["finish_reason"].eq("length").all(), rows[["answer", "finish_reason"]]


def test_an_answer_ended_by_a_stop_string_says_stop_string(cli_base: list[str], tmp_path: Path) -> None:
    free = tiny_run(cli_base, tmp_path / "free", "generation.max_tokens=16")
    # A word from the middle of the first answer (letters only, so it needs no quoting).
    words = re.findall(r"[A-Za-z]{2,}", free["answer"].iloc[0])
    assert len(words) >= 2, f"the tiny model's answer has too few words: {free['answer'].iloc[0]!r}"
    stop = next((w for w in words[1:] if w != words[0]), words[-1])

    cut = tiny_run(cli_base, tmp_path / "cut", "generation.max_tokens=16", f"model.stop=[{stop}]")

    assert cut[KEY].equals(free[KEY])
    hit = free["answer"].str.contains(stop, regex=False)
    assert hit.any()
    for (_, before), (_, after), was_hit in zip(free.iterrows(), cut.iterrows(), hit):
        if was_hit:
            # The engine decodes a cut answer dropping invalid UTF-8 bytes (errors="ignore"),
            # a whole one replacing them with U+FFFD: compare without those.
            expected = before["answer"][: before["answer"].find(stop)].replace("\ufffd", "").strip()
            assert (after["answer"], after["finish_reason"]) == (expected, "stop_string"), (stop, before["answer"])
        else:
            assert (after["answer"], after["finish_reason"]) == (before["answer"], before["finish_reason"])
    assert free["finish_reason"].isin(["stop", "length"]).all()
