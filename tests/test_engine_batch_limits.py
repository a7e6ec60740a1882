"""The engine within llama.cpp's limits, whatever a user types for ``engine.n_batch``,
``engine.n_ubatch``, ``engine.parallel``, the prompts and ``model.n_ctx``: a batch down to the
sequences a lane decodes at once gives the answers of a large batch (greedy decoding on the
CPU); what no lane can take (fewer batch tokens than sequences, more than its KV cells, more
sequences or cells than llama.cpp counts) is refused in one line before anything is written;
nothing ends the process in a native abort (``GGML_ASSERT``, exit 134)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.caption.engine import Engine, EngineError
from tests.conftest import assert_one_line_error, last_run, run_cli, tiny_engine_settings, write_video

THREE_PROMPTS = "prompts=[What is shown?,Which colours?,Is there text?]"


def run_args(video: Path, out: Path, tiny_model_dir: Path, tmp_path: Path, *settings: str) -> list[str]:
    """A run of every frame of ``video`` into ``out`` with ``settings``."""
    return [
        f"video={video}", "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={out}", "sampler=all",
        "generation.max_tokens=6", "engine.n_threads=1", "report=false", "min_age_s=0",
        f"hydra.run.dir={tmp_path / 'hydra'}", *settings,
    ]


def answers_of(video: Path, tiny_model_dir: Path, tmp_path: Path, name: str, *settings: str) -> pd.DataFrame:
    """The rows of a run with ``settings`` into ``tmp_path/name``, which must finish (exit 0,
    its record finished), in key order."""
    out = tmp_path / name
    result = run_cli(*run_args(video, out, tiny_model_dir, tmp_path, *settings))
    assert result.returncode == 0, (settings, result.returncode, result.stderr[-2000:])
    assert (last_run(out)["state"], last_run(out)["exit_code"]) == ("finished", 0)
    rows = pd.read_parquet(out, dtype_backend="numpy_nullable")
    columns = ["frame_index", "prompt_id", "status", "error", "answer", "finish_reason", "prompt_tokens",
               "completion_tokens"]
    return rows.sort_values(["frame_index", "prompt_id"])[columns].reset_index(drop=True)


FOUR_IN_FLIGHT = ["engine.parallel=4", THREE_PROMPTS]


@pytest.fixture(scope="module")
def clip_and_answers(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A 5-frame clip and its answers with the default batch (2048 tokens), 4 frames in flight
    and 3 prompts."""
    tmp_path = tmp_path_factory.mktemp("batch-reference")
    video = write_video(tmp_path / "clip.mp4", n_frames=5)
    reference = answers_of(video, tiny_model_dir, tmp_path, "reference", *FOUR_IN_FLIGHT)
    assert len(reference) == 15 and set(reference.status) == {"ok"}
    return video, reference


@pytest.mark.parametrize(
    "settings",
    [
        ["engine.n_batch=12"],  # 12 sequences (4 frames x 3 prompts): one token of each a call
        ["engine.n_batch=12", "engine.n_ubatch=64"],  # n_ubatch above n_batch
        ["engine.n_batch=12", "engine.n_ubatch=1"],
    ],
    ids=["n_batch=sequences", "n_ubatch>n_batch", "n_ubatch=1"],
)
def test_a_batch_down_to_the_sequences_gives_the_answers_of_a_large_batch(
    clip_and_answers: tuple[Path, pd.DataFrame], tiny_model_dir: Path, tmp_path: Path, settings: list[str]
) -> None:
    """As few tokens per ``llama_decode`` as sequences in flight: every frame is answered, each
    answer the one the default batch gives."""
    video, reference = clip_and_answers
    assert answers_of(video, tiny_model_dir, tmp_path, "out", *FOUR_IN_FLIGHT, *settings).equals(reference)


@pytest.mark.parametrize(
    ("settings", "needles"),
    [
        (["engine.parallel=86"],
         ["engine.parallel x prompts = 86 x 3 = 258 sequences per lane", "llama.cpp's 256",
          "lower engine.parallel to at most 85"]),
        (["engine.parallel=null", "engine.parallel_cpu=86"],
         ["engine.parallel_cpu x prompts = 86 x 3 = 258 sequences", "lower engine.parallel_cpu to at most 85"]),
        (["engine.parallel=1", "prompts_file={many}"],  # one frame's prompts alone are too many
         ["engine.parallel x prompts = 1 x 257 = 257 sequences per lane", "ask at most 256 prompts a run"]),
        (["engine.parallel=4", "model.n_ctx=5000000000"],
         ["model.n_ctx=5000000000 x 12 sequences per lane = 60000000000 KV cells", "lower model.n_ctx"]),
        (["engine.parallel=4", "engine.kv_unified=true", "model.n_ctx=1073741825"],
         ["model.n_ctx=1073741825 x 4 frames per lane", "KV cells", "lower model.n_ctx"]),
        (["engine.parallel=4", "engine.kv_unified=true", "model.n_ctx=1073741825", "dry_run=true"],
         ["model.n_ctx=1073741825 x 4 frames per lane"]),
        (["engine.parallel=4", "engine.n_batch=11"],
         ["engine.n_batch=11 is less than the 12 sequences a lane decodes at once",
          "raise engine.n_batch to at least 12"]),
        (["engine.parallel=4", "engine.n_batch=1", "engine.n_ubatch=1"], ["engine.n_batch=1 is less than the 12"]),
        (["engine.parallel=4", "engine.n_batch=2", "engine.kv_unified=true"], ["engine.n_batch=2 is less than the 12"]),
        (["engine.parallel=4", "engine.n_batch=4294967296"],
         ["engine.n_batch=4294967296 is more than a lane's KV cells", "lower engine.n_batch to at most 49152"]),
        (["engine.parallel=1", "prompt=What is shown?", "model.n_ctx=1030"],
         ["engine.n_batch=2048 is more than a lane's KV cells, model.n_ctx=1030 x 1 sequences per lane = 1030",
          "lower engine.n_batch to at most 1030, or raise model.n_ctx"]),
        (["engine.n_batch=0"], ["engine.n_batch=0 is out of range: engine.n_batch must be >= 1"]),
        (["engine.n_batch=-1"], ["engine.n_batch=-1 is out of range: engine.n_batch must be >= 1"]),
        (["engine.n_ubatch=0"], ["engine.n_ubatch=0 is out of range: engine.n_ubatch must be >= 1 and <= 4294967295"]),
        (["engine.parallel=0"], ["engine.parallel=0 is out of range: engine.parallel must be >= 1, or null"]),
    ],
    ids=["sequences", "sequences-null-parallel", "prompts", "cells", "cells-unified", "cells-dry-run",
         "n_batch<sequences",
         "n_batch=1", "n_batch<sequences-unified", "n_batch=2^32", "n_batch>cells", "n_batch=0",
         "n_batch<0", "n_ubatch=0", "parallel=0"],
)
def test_a_value_no_engine_can_take_is_one_line_before_anything_is_written(
    tiny_model_dir: Path, tmp_path: Path, settings: list[str], needles: list[str]
) -> None:
    """More sequences or KV cells in a lane than llama.cpp holds (with a null
    ``engine.parallel``: the device's default, as set), a batch below the sequences or above the
    cells of a lane, a batch or frames in flight below 1:
    one line naming the setting and the fix, exit 1, and no ``output_dir`` (no lock, no run
    record), in a dry run too."""
    out = tmp_path / "out"
    many = tmp_path / "many.txt"
    many.write_text("".join(f"Question {n}?\n" for n in range(257)))
    settings = [setting.format(many=many) for setting in settings]
    result = run_cli(*run_args(tmp_path / "clip.mp4", out, tiny_model_dir, tmp_path, THREE_PROMPTS, *settings))
    assert_one_line_error(result, 1, *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        (dict(parallel=86, max_questions=3), "engine.parallel x prompts = 86 x 3 = 258 sequences per lane"),
        # 4 streams of 2^30 + 256 cells: 2^32 + 1024, which a 32-bit count takes for 1024
        (dict(parallel=4, max_questions=1, n_ctx=2**30 + 256), "KV cells, more than llama.cpp's 4294967295"),
        # 4 streams of 2^30 - 1 cells: 2^32 - 4, but 2^32 once llama.cpp rounds each up to 256
        (dict(parallel=4, max_questions=1, n_ctx=2**30 - 1), "= 4294967296 KV cells, more than"),
    ],
    ids=["sequences", "cells", "cells-rounded"],
)
def test_an_engine_built_by_hand_refuses_a_lane_llama_cpp_cannot_hold(
    tiny_model_dir: Path, fields: dict[str, Any], said: str
) -> None:
    """The engine's own settings (not made from a checked config) meet the same rule where the
    model loads: an error, not a native abort nor a context of a truncated size."""
    with pytest.raises(EngineError, match=said):
        Engine(tiny_engine_settings(tiny_model_dir, n_threads=1, **fields)).setup()
