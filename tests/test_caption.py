"""Caption stage on the generated tiny model: the real llama-cpp-python path, no mocks."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from pipeline.caption import Captioner, WeightsError, make_questions
from pipeline.caption.tiny import ensure_tiny_model
from pipeline.caption.weights import ModelFiles, ModelSource, check_pair
from pipeline.config import compose_config
from pipeline.errors import ConfigError
from pipeline.presets import captioner_from_config
from tests.conftest import frames

PROMPTS = ["What is shown?", "What colors dominate?", "Is there text?"]


def captioner(tiny_model_dir: Path, *overrides: str, max_questions: int = 3) -> Captioner:
    cfg = compose_config(
        ["model=tiny", f"model.dir={tiny_model_dir}", "video=x", "generation.max_tokens=12", *overrides]
    )
    return captioner_from_config(cfg, max_questions=max_questions)


def test_answer_takes_a_numpy_frame_and_returns_text(tiny_model_dir: Path) -> None:
    with captioner(tiny_model_dir) as model:
        text = model.answer(frames(1, seed=0)[0], "What is shown?")
        again = model.answer(frames(1, seed=0)[0], "What is shown?")
    assert isinstance(text, str) and text
    assert text == again


def test_batched_answers_equal_sequential_answers(tiny_model_dir: Path) -> None:
    images = frames(6, seed=0)
    questions = make_questions(PROMPTS)
    with captioner(tiny_model_dir, "engine.parallel=4") as model:
        batched = dict(model.caption(enumerate(images), questions))
        stats = model.engine.stats
        assert stats.frames == 6
    with captioner(tiny_model_dir, "engine.parallel=1", max_questions=1) as model:
        for index, image in enumerate(images):
            for k, question in enumerate(questions):
                ((_, (alone,)),) = list(model.caption([(index, image)], [question]))
                assert batched[index][k].text == alone.text
                assert batched[index][k].completion_tokens == alone.completion_tokens
                assert batched[index][k].prompt_tokens == alone.prompt_tokens
    assert len({a.text for answers in batched.values() for a in answers}) > 3


def test_engine_knobs_reach_the_engine_and_parallel_defaults_to_4_on_cpu(tiny_model_dir: Path) -> None:
    default = captioner(tiny_model_dir).engine.settings
    assert (default.parallel, default.lanes, default.lanes_gpu, default.n_ubatch, default.kv_unified) == (
        4, None, 2, 1024, False,
    )
    knobs = captioner(
        tiny_model_dir, "engine.lanes=2", "engine.prepare_ahead=0", "engine.kv_unified=true",
        "engine.max_decode_seqs=0", "engine.parallel=3",
    ).engine.settings
    assert (knobs.lanes, knobs.prepare_ahead, knobs.kv_unified, knobs.max_decode_seqs, knobs.parallel) == (
        2, 0, True, 0, 3,
    )
    with pytest.raises(ConfigError, match="engine.lanes=0 is out of range: engine.lanes must be >= 1, or null"):
        captioner(tiny_model_dir, "engine.lanes=0")
    with pytest.raises(ConfigError, match="engine.lanes_gpu=0 is out of range: engine.lanes_gpu must be >= 1"):
        captioner(tiny_model_dir, "engine.lanes_gpu=0")
    with pytest.raises(ConfigError, match="engine.clip_threads=0 is out of range: .* must be >= 1, or null"):
        captioner(tiny_model_dir, "engine.clip_threads=0")


def test_bad_frames_become_error_answers(tiny_model_dir: Path) -> None:
    bad: list[Any] = [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "x"]
    with captioner(tiny_model_dir) as model:
        results = dict(model.caption(enumerate([*bad, frames(1, seed=0)[0]]), make_questions(PROMPTS)))
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            model.answer(bad[0], "?")
    for index in range(3):
        assert all(a.error and "HxWx3 uint8" in a.error for a in results[index])
    assert all(a.error is None and a.text for a in results[3])


COUNT = {"type": "object", "properties": {"cars": {"type": "integer", "minimum": 0}}, "required": ["cars"]}


def test_ask_takes_one_prompt_given_alone_as_one_prompt(tiny_model_dir: Path) -> None:
    image = frames(1, seed=4)[0]
    counted = {"text": "How many cars?", "schema": COUNT}
    with captioner(tiny_model_dir, "generation.max_tokens=24") as model:
        (alone,) = model.ask(image, "Where was this taken?")
        (listed,) = model.ask(image, ["Where was this taken?"])
        (schema_alone,) = model.ask(image, counted)
        (schema_listed,) = model.ask(image, [counted])
    assert alone.question.text == "Where was this taken?" and (alone.text, alone.error) == (listed.text, None)
    assert schema_alone.question == schema_listed.question and schema_alone.text == schema_listed.text


def test_ask_refuses_what_a_run_refuses_before_any_frame(tiny_model_dir: Path) -> None:
    image = frames(1, seed=4)[0]
    not_an_object = {"text": "How many cars?", "schema": {"type": "array", "items": {"type": "integer"}}}
    mistyped = {"text": "How many cars?", "schema": {"type": "object", "properties": {"cars": {"type": "count"}}}}
    with captioner(tiny_model_dir, max_questions=2) as model:
        with pytest.raises(ConfigError, match="^no prompt to ask; give one, or a list of them$"):
            model.ask(image, [])
        with pytest.raises(ConfigError, match="^3 prompts asked about one frame, but this captioner takes at most 2; "
                                              "make it with max_questions=3"):
            model.ask(image, ["Who?", "Where?", "When?"])
        for entry, said in ((not_an_object, "does not describe an object (type: object at its top level)"),
                            (mistyped, "is not a valid JSON Schema at properties/cars/type")):
            with pytest.raises(ConfigError, match=re.escape(f"the schema of prompt 'How many cars?' {said}")):
                model.answer(image, entry)
            with pytest.raises(ConfigError, match=re.escape(said)):
                model.ask(image, ["Who?", entry])
            with pytest.raises(ConfigError, match=re.escape(said)):
                make_questions([entry])


def test_ask_checks_that_its_prompts_fit_the_context_as_a_run_does(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = frames(1, seed=4)[0]
    long = "Name every object you can see here. " * 300
    with captioner(tiny_model_dir, "model.n_ctx=2048") as model:
        with pytest.raises(ConfigError, match="^no frame fits: .*; raise model.n_ctx, lower generation.max_tokens"):
            model.answer(image, long)
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                short, too_long = model.ask(image, ["Who?", long])
                assert short.text and short.error is None and too_long.error
    # Said once for these prompts, as a run says it once before its frames, not once per frame.
    (warned,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned.startswith("prompt 2 (") and warned.endswith("its answers are errors, the other prompts go on")


def test_quantized_tiny_model_runs(tiny_model_dir: Path) -> None:
    with captioner(tiny_model_dir, "model.quantized=true") as model:
        assert model.files.text_model.name.endswith("Q8_0.gguf")
        assert model.answer(frames(1, seed=0)[0], "What is shown?")


def write_projector(path: Path, out_dims: int) -> Path:
    """A GGUF holding only LLaVA MLP projector tensors that project to ``out_dims``."""
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_tensor("mm.0.weight", np.zeros((out_dims, 32), np.float32))
    writer.add_tensor("mm.2.weight", np.zeros((out_dims, out_dims), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_mmproj_that_does_not_fit_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    text, mmproj = ensure_tiny_model(tiny_model_dir)
    check_pair(ModelFiles(text, mmproj), "reference")
    wide = write_projector(tmp_path / "wide.gguf", out_dims=96)
    with pytest.raises(WeightsError, match="projects to 96 dims but text model .* embeds 64"):
        check_pair(ModelFiles(text, wide), "reference")
    with pytest.raises(WeightsError, match="not a readable GGUF"):
        check_pair(ModelFiles(text, tmp_path / "missing.gguf"), "reference")


def test_missing_weights_offline_names_files_and_place(tmp_path: Path) -> None:
    source = ModelSource(
        name="llava16_34b", model_dir=tmp_path, text_file="llava-v1.6-34b.Q5_K_M.gguf",
        mmproj_file="mmproj-model-f16.gguf", repo_id="cjpais/llava-v1.6-34B-gguf", download=False,
        generated=False, quantized=False,
    )
    with pytest.raises(WeightsError) as error:
        source.resolve()
    message = str(error.value)
    assert "llava-v1.6-34b.Q5_K_M.gguf" in message and "mmproj-model-f16.gguf" in message
    assert str(tmp_path) in message and "cjpais/llava-v1.6-34B-gguf" in message
    assert "\n" not in message



def test_what_only_documents_a_schema_does_not_make_a_new_question() -> None:
    """An edited title or description constrains no answer: the frames are not asked again."""
    def entry(people: dict[str, Any], **top: Any) -> dict[str, Any]:
        schema = {"type": "object", "properties": {"people": people}, "required": ["people"], **top}
        return {"text": "How many?", "schema": schema}

    bare = entry({"type": "integer", "maximum": 99})
    documented = [
        entry({"type": "integer", "maximum": 99, "description": "count every person", "examples": [3]}),
        entry({"type": "integer", "maximum": 99, "title": "People", "default": 0}, title="Frame", description="x"),
        entry({"anyOf": [{"type": "integer", "maximum": 99}]}, **{"$comment": "one branch"}),
    ]
    (bare_id, *ids) = [q.prompt_id for q in make_questions([bare, *documented])]
    assert ids[:2] == [bare_id, bare_id] and ids[2] != bare_id  # an anyOf is another shape

    # What constrains an answer still counts, however it is named.
    named_like_keywords = [
        entry({"type": "integer"}, properties={"title": {"type": "string"}}),
        entry({"type": "integer"}, properties={"title": {"type": "integer"}}),
        entry({"const": {"title": "a"}}),
        entry({"const": {"title": "b"}}),
        entry({"type": "integer", "maximum": 98}),
        # A $ref into a documenting keyword makes it constrain: kept.
        entry({"$ref": "#/$defs/h/examples/0"}, **{"$defs": {"h": {"examples": [{"type": "integer"}]}}}),
        entry({"$ref": "#/$defs/h/examples/0"}, **{"$defs": {"h": {"examples": [{"type": "string"}]}}}),
    ]
    distinct = {q.prompt_id for q in make_questions([bare, *named_like_keywords])}
    assert len(distinct) == 1 + len(named_like_keywords)
    (kept,) = make_questions([documented[1]])
    assert json.loads(kept.schema_json or "null")["title"] == "Frame"  # recorded as written
