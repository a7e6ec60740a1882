"""Our engine against transformers' LlavaNext on identical weights, without torch: the
committed fixture holds transformers' answers (``benchmarks/reference_parity.py`` made it),
and the tiny model is the same weights in GGUF form."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.caption import make_questions
from pipeline.caption.engine import Answer, Engine
from pipeline.caption.tiny import ensure_tiny_model, pattern_frame
from tests.conftest import ROOT, tiny_engine_settings

FIXTURE = ROOT / "tests" / "data" / "reference_parity.json"


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def engine_answers(model_dir: Path, fixture: dict[str, Any], layout: str) -> dict[tuple[int, int, str], Answer]:
    prompts = list(dict.fromkeys(case["prompt"] for case in fixture["cases"]))
    sizes = list(dict.fromkeys((case["height"], case["width"], case["seed"]) for case in fixture["cases"]))
    settings = replace(
        tiny_engine_settings(model_dir, "engine.parallel=1", max_questions=len(prompts)),
        image_layout=layout, trace=True, ignore_eos=True, stop=(), max_tokens=fixture["max_tokens"],
    )
    with Engine(settings) as engine:
        jobs = [((h, w), pattern_frame(h, w, seed=seed)) for h, w, seed in sizes]
        return {(*size, a.question.text): a for size, found in engine.run(jobs, make_questions(prompts)) for a in found}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_fixture_was_made_from_these_weights(tiny_model_dir: Path, fixture: dict[str, Any]) -> None:
    files = ensure_tiny_model(tiny_model_dir)
    found = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert found == fixture["model_sha256"], f"regenerate the fixture: {fixture['command']}"
    assert fixture["versions"]["transformers"] != "not installed"
    assert {c["image_tokens"] for c in fixture["cases"] if (c["width"], c["height"]) == (640, 360)} == {1948}


def test_reference_layout_equals_transformers(tiny_model_dir: Path, fixture: dict[str, Any]) -> None:
    answers = engine_answers(tiny_model_dir, fixture, "reference")
    assert len(fixture["cases"]) == 12 and fixture["max_tokens"] >= 16
    for case in fixture["cases"]:
        answer = answers[(case["height"], case["width"], case["prompt"])]
        where = f"{case['width']}x{case['height']} {case['prompt']!r}"
        assert answer.trace is not None
        assert answer.prompt_tokens == case["prompt_tokens"], where
        assert answer.prompt_tokens - len(case["prefix_ids"]) - len(case["suffix_ids"]) == case["image_tokens"], where
        assert list(answer.trace.token_ids) == case["answer_ids"], where
        reference = np.array(case["first_logits"], np.float32)
        assert cosine(answer.trace.first_logits, reference) >= 0.999, where
        assert list(np.argsort(-answer.trace.first_logits)[:5]) == list(np.argsort(-reference)[:5]), where
        assert np.abs(answer.trace.first_logits - reference).max() < 0.05, where


def test_llamacpp_layout_diverges_from_transformers(tiny_model_dir: Path, fixture: dict[str, Any]) -> None:
    """Why ``reference`` is the default: llama.cpp's own layout has other token counts (2,880
    for 640x360) and, on the same weights, other logits and answers."""
    answers = engine_answers(tiny_model_dir, fixture, "llamacpp")
    differ = 0
    for case in fixture["cases"]:
        answer = answers[(case["height"], case["width"], case["prompt"])]
        assert answer.trace is not None
        n_image = answer.prompt_tokens - len(case["prefix_ids"]) - len(case["suffix_ids"])
        assert n_image != case["image_tokens"]
        assert cosine(answer.trace.first_logits, np.array(case["first_logits"], np.float32)) < 0.9
        differ += list(answer.trace.token_ids) != case["answer_ids"]
        if (case["width"], case["height"]) == (640, 360):
            assert n_image == 2880
    assert differ == len(fixture["cases"])
