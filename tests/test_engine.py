"""The batched engine's own knobs on the tiny model (CPU): KV layouts, decode chunking, the
background tokenizer, lanes, forced answer length, interrupted runs, and the real-shape
generator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gguf
import llama_cpp
import numpy as np
import pytest

from benchmarks.random_llava import write_random_llava
from pipeline.caption import make_questions
from pipeline.caption.engine import Engine, EngineError, EngineSettings
from pipeline.caption.engine.lanes import clip_thread_count, decode_group, lane_count
from pipeline.caption.engine.native import (
    TextModel,
    flash_attn_type,
    held_errors,
    route_native_logs,
    said_by_llama_cpp,
    usable_cores,
)
from pipeline.caption.engine.records import EngineStats
from pipeline.caption.engine.source import END, FrameSource
from pipeline.caption.engine.vision import Vision
from pipeline.caption.tiny import TINY_TEXT_FILE, TINY_TEXT_Q8_FILE, TextShape, VisionShape
from tests.conftest import frames, tiny_engine_settings

PROMPTS = ["What is shown?", "What colors dominate?", "Is there text?"]


def settings(model_dir: Path, **overrides: Any) -> EngineSettings:
    base: dict[str, Any] = dict(parallel=3, max_questions=3, max_tokens=10)
    return tiny_engine_settings(model_dir, **{**base, **overrides})


def answer_texts(engine_settings: EngineSettings, images: list[np.ndarray]) -> dict[int, list[str]]:
    with Engine(engine_settings) as engine:
        results = dict(engine.run(enumerate(images), make_questions(PROMPTS)))
    return {tag: [a.text for a in answers] for tag, answers in results.items()}


def test_kv_layouts_chunking_background_tokenizer_and_lanes_give_the_same_answers(tiny_model_dir: Path) -> None:
    images = frames(5, seed=3)
    reference = answer_texts(settings(tiny_model_dir, kv_unified=True, prepare_ahead=0), images)
    variants: list[dict[str, Any]] = [
        dict(kv_unified=False),
        dict(kv_unified=False, max_decode_seqs=2),
        dict(kv_unified=True, max_decode_seqs=1, n_batch=512, n_ubatch=256),
        dict(kv_unified=False, n_threads=1, prepare_ahead=3),  # a free core: background thread
        dict(kv_unified=False, n_threads=1, lanes=2),  # two contexts, each on its own thread
        dict(kv_unified=True, n_threads=1, lanes=3, prepare_ahead=1),
    ]
    for variant in variants:
        assert answer_texts(settings(tiny_model_dir, **variant), images) == reference, variant
    assert len({t for texts in reference.values() for t in texts}) > 3


def prepares_on_a_thread(engine_settings: EngineSettings) -> bool:
    """Whether the engine prepared frames on its background thread (``engine-prep``), which
    stays up, idle, until the engine closes."""
    with Engine(engine_settings) as engine:
        list(engine.run(enumerate(frames(2, seed=3)), make_questions(PROMPTS[:1])))
        return any(thread.name.startswith("engine-prep") for thread in threading.enumerate())


def test_background_thread_is_used_only_with_a_free_core(tiny_model_dir: Path) -> None:
    every_core = usable_cores()
    assert not prepares_on_a_thread(settings(tiny_model_dir, n_threads=every_core))  # llama.cpp's take every core
    # The default leaves one core to the pipeline.
    assert prepares_on_a_thread(settings(tiny_model_dir)) == (every_core > 1)


def test_ignore_eos_makes_every_answer_max_tokens_long(tiny_model_dir: Path) -> None:
    with Engine(settings(tiny_model_dir, stop=(), max_tokens=40, ignore_eos=True)) as engine:
        results = list(engine.run(enumerate(frames(4, seed=3)), make_questions(PROMPTS)))
    counts = {a.completion_tokens for _, answers in results for a in answers}
    assert counts == {40}


@pytest.mark.parametrize("lanes", [1, 2])
def test_an_interrupted_run_frees_its_slots_and_cells(tiny_model_dir: Path, lanes: int) -> None:
    questions = make_questions(PROMPTS)
    engine_settings = settings(tiny_model_dir, kv_unified=True, lanes=lanes, n_threads=1)
    with Engine(engine_settings) as engine:
        assert len(engine._lanes) == lanes
        free = [sorted(lane.free_seq_ids) for lane in engine._lanes]
        run = engine.run(enumerate(frames(6, seed=3)), questions)
        assert isinstance(run, Generator)
        next(run)  # frames are in flight now
        run.close()
        assert [sorted(lane.free_seq_ids) for lane in engine._lanes] == free
        assert all(lane.kv_reserved == 0 for lane in engine._lanes)
        again = dict(engine.run(enumerate(frames(4, seed=9)), questions))
    assert sorted(again) == [0, 1, 2, 3]
    assert all(a.error is None and a.text for answers in again.values() for a in answers)


def test_a_failing_lane_raises_on_the_callers_thread(tiny_model_dir: Path) -> None:
    def jobs() -> Iterator[tuple[int, np.ndarray]]:
        yield 0, frames(1, seed=3)[0]
        raise OSError("disk gone")

    with Engine(settings(tiny_model_dir, lanes=2, n_threads=1)) as engine:
        with pytest.raises(OSError, match="disk gone"):
            list(engine.run(jobs(), make_questions(PROMPTS)))
        again = dict(engine.run(enumerate(frames(2, seed=3)), make_questions(PROMPTS)))
    assert sorted(again) == [0, 1]


@pytest.fixture(scope="module")
def mini_q5_k_m(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small random LLaVA 1.6 pair written by the real-shape generator, text in Q5_K_M."""
    return write_random_llava(
        tmp_path_factory.mktemp("mini"), TextShape(256, 2, 4, 2, 512, 4096, 1e6, 2000), VisionShape(64, 128, 2, 4),
        text_type="Q5_K_M", vision_type="F16", name="mini",
    )


def test_real_shape_generator_writes_q5_k_m_layout_that_runs(
    tiny_model_dir: Path, mini_q5_k_m: tuple[Path, Path]
) -> None:
    text, mmproj = mini_q5_k_m
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(text).tensors}
    assert types["output.weight"] == "Q6_K"
    assert types["blk.1.attn_v.weight"] == "Q6_K"  # a "more bits" layer (last eighth)
    assert types["blk.0.attn_v.weight"] == "Q5_K"
    assert types["blk.0.attn_q.weight"] == "Q5_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert len(gguf.GGUFReader(text).fields["tokenizer.ggml.tokens"].data) == 2000
    engine_settings = settings(
        tiny_model_dir, text_model=str(text), mmproj=str(mmproj), parallel=1, max_questions=1, max_tokens=4, stop=(),
        ignore_eos=True,
    )
    with Engine(engine_settings) as engine:
        ((_, (answer,)),) = list(engine.run([(0, frames(1, seed=3)[0])], make_questions(PROMPTS[:1])))
    assert answer.error is None and answer.completion_tokens == 4


def test_decode_grouping_rule() -> None:
    # (engine.max_decode_seqs, grouped auto, active sequences) -> most sequences per decode
    assert [decode_group(0, True, n) for n in (1, 16, 48)] == [1, 16, 48]  # all at once
    assert [decode_group(8, False, n) for n in (1, 16, 48)] == [8, 8, 8]  # set explicitly
    assert [decode_group(None, True, n) for n in (8, 16, 17, 48)] == [8, 8, 17, 48]  # FORCE_CUBLAS: 8s up to 16
    assert [decode_group(None, False, n) for n in (8, 16, 48)] == [8, 16, 48]  # other builds: all at once


def test_lane_rule() -> None:
    # (setting, lanes_gpu, on_gpu, max_questions, parallel) -> lanes
    assert lane_count(None, 2, True, 1, 16) == 2  # GPU, one question: lanes_gpu
    assert lane_count(None, 2, False, 1, 16) == 1  # CPU: one
    assert lane_count(2, 3, True, 1, 16) == 2  # GPU, one question: as set
    assert lane_count(3, 2, False, 3, 16) == 3  # CPU: as set, several questions too
    assert lane_count(4, 2, True, 1, 2) == 2  # never more lanes than frames in flight
    assert lane_count(None, 2, True, 3, 16) == 1  # GPU, several questions: one by default
    assert lane_count(1, 2, True, 3, 16) == 1
    assert lane_count(2, 2, True, 3, 16) == 2  # ... and as many as set


def test_clip_thread_rule() -> None:
    # (engine.clip_threads, on_gpu, lanes) -> frames CLIP-encoded at once
    assert clip_thread_count(None, True, 2) == 2  # GPU: one per lane
    assert clip_thread_count(None, True, 1) == 1
    assert clip_thread_count(3, True, 1) == 3  # GPU: as set
    assert clip_thread_count(None, False, 2) == 1  # CPU: one, whatever is set
    assert clip_thread_count(4, False, 1) == 1


def encoded(vision: Vision, rgb: np.ndarray, n_embd: int) -> np.ndarray:
    image = vision.tokenize(rgb, EngineStats())
    out = np.empty((image.n_tokens, n_embd), np.float32)
    return vision.encode(image, out, EngineStats()).copy()


def test_clip_encoders_on_several_threads_give_each_frame_its_own_features(tiny_model_dir: Path) -> None:
    # engine.clip_threads=2 (on a GPU): two sets of CLIP contexts encode frames at once, from
    # two threads; every frame's features are those one set gives it alone.
    s = settings(tiny_model_dir)
    images = frames(6, seed=5)
    model = TextModel(s.text_model, 0)
    flash_attn = flash_attn_type(s.flash_attn, False)
    try:
        alone = Vision(s.mmproj, s.image_layout, model, 1, flash_attn)
        try:
            expected = [encoded(alone, rgb, model.n_embd) for rgb in images]
        finally:
            alone.close()
        two = Vision(s.mmproj, s.image_layout, model, 1, flash_attn, encoders=2)
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                for _ in range(3):
                    got = list(pool.map(lambda rgb: encoded(two, rgb, model.n_embd), images))
                    assert [a.shape for a in got] == [e.shape for e in expected]
                    assert all(np.array_equal(a, e) for a, e in zip(got, expected))
        finally:
            two.close()
    finally:
        model.close()
    assert len({e.shape for e in expected}) > 1  # frames of different sizes


def test_a_lane_waits_for_the_frame_being_prepared() -> None:
    # A lane with a free slot takes the next frame even while it is still being prepared, so
    # its steps batch the same sequences whatever the timing (on a GPU: the same answers).
    preparing: list[tuple[Future[int], int]] = []

    def finish(*which: int) -> None:
        for future, job in [preparing[i] for i in which]:
            future.set_result(10 * job)

    def prepare(job: int) -> Future[int]:
        future: Future[int] = Future()
        preparing.append((future, job))
        if job == 2:  # both first frames are being prepared: they are done a moment later
            threading.Timer(0.2, finish, args=(0, 1)).start()
        return future

    source = FrameSource(iter([1, 2, 3]), prepare, release=lambda _: None, stats=EngineStats(), ahead=2)
    assert source.take(0, lambda _: True) == 10
    assert [job for _, job in preparing] == [1, 2, 3]  # the next ones are prepared meanwhile
    threading.Timer(0.2, finish, args=(2,)).start()
    assert source.take(0, lambda _: True) == 20
    assert source.take(0, lambda prepared: prepared != 30) is None  # the next does not fit
    assert source.take(0, lambda _: True) == 30
    assert source.take(0, lambda _: True) is END


def test_frames_are_dealt_to_the_lanes_in_turn() -> None:
    # Frame k goes to lane k % 2 whichever lane asks first, so each lane batches the same
    # frames in every run; a lane that runs ahead waits once the frames held reach
    # ahead + lanes - 1, until the other lane takes one (or the source stops).
    pulled: list[int] = []

    def prepare(job: int) -> Future[int]:
        pulled.append(job)
        future: Future[int] = Future()
        future.set_result(10 * job)
        return future

    source = FrameSource(iter(range(9)), prepare, release=lambda _: None, stats=EngineStats(), ahead=2, lanes=2)

    def take(lane: int) -> object:
        return source.take(lane, lambda _: True)

    assert [take(0), take(0), take(0)] == [0, 20, 40]
    assert pulled == [0, 1, 2, 3, 4, 5]  # frames 1, 3 and 5 wait for lane 1
    got: list[object] = []
    ahead = threading.Thread(target=lambda: got.append(take(0)))
    ahead.start()
    ahead.join(0.3)
    assert ahead.is_alive() and pulled == [0, 1, 2, 3, 4, 5]  # three held: lane 0 waits
    assert take(1) == 10
    ahead.join(10)
    assert got == [60] and pulled == [0, 1, 2, 3, 4, 5, 6, 7]
    assert [take(1), take(1), take(1), take(0), take(0), take(1)] == [30, 50, 70, 80, END, END]
    blocked = FrameSource(iter(range(9)), prepare, release=lambda _: None, stats=EngineStats(), ahead=1, lanes=2)
    assert blocked.take(1, lambda _: True) == 10
    waiting = threading.Thread(target=lambda: got.append(blocked.take(1, lambda _: True)))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive()
    blocked.stop()
    waiting.join(10)
    assert got[-1] is END


def test_two_lanes_answer_the_same_frames_every_run(tiny_model_dir: Path) -> None:
    images = frames(5, seed=4)
    with Engine(settings(tiny_model_dir, lanes=2, parallel=2, n_threads=1)) as engine:
        for _ in range(2):
            engine.stats = EngineStats()
            assert sorted(dict(engine.run(enumerate(images), make_questions(PROMPTS[:1])))) == [0, 1, 2, 3, 4]
            assert [lane.stats.frames for lane in engine._lanes] == [3, 2]


def test_asked_subsets_get_the_same_answers_as_asking_everything(tiny_model_dir: Path) -> None:
    images = frames(4, seed=3)
    questions = make_questions(PROMPTS)
    subsets = [(2,), (0, 2), None, (1,)]
    with Engine(settings(tiny_model_dir, lanes=2, n_threads=1)) as engine:
        full = dict(engine.run(enumerate(images), questions))
        jobs = [
            (i, image) if asked is None else (i, image, asked)
            for i, (image, asked) in enumerate(zip(images, subsets))
        ]
        some = dict(engine.run(jobs, questions))
        with pytest.raises(ValueError, match="do not name the questions"):
            list(engine.run([(0, images[0], (5,))], questions))
    for i, asked in enumerate(subsets):
        expected = full[i] if asked is None else [full[i][k] for k in asked]
        assert [a.question for a in some[i]] == [a.question for a in expected]
        assert [a.text for a in some[i]] == [a.text for a in expected]


def logits_of(model: TextModel, tokens: list[int], rows: np.ndarray | None) -> np.ndarray:
    """Every position's logits of ``tokens`` evaluated as tokens, or as ``rows`` of embeddings."""
    lane = model.new_lane(1, 64, True, 64, 64, 1, flash_attn_type("off", on_gpu=False))
    try:
        n = len(tokens)
        lane.batch.pos[:n] = np.arange(n, dtype=np.int32)
        lane.batch.seq[:n] = 0
        lane.batch.logits[:n] = 1
        if rows is None:
            lane.batch.token[:n] = tokens
            lane.decode(n, "tokens")
        else:
            assert llama_cpp.llama_decode(lane.ctx, lane.batch.as_embeddings(rows, n)) == 0
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(lane.ctx), shape=(n, model.n_vocab)).copy()
    finally:
        llama_cpp.llama_free(lane.ctx)


@pytest.mark.parametrize("weights", ["F32", "Q8_0", "Q5_K_M"])
def test_token_rows_are_llama_cpps_own_input_embeddings(
    tiny_model_dir: Path, mini_q5_k_m: tuple[Path, Path], weights: str
) -> None:
    """The prefill feeds the prompt's text as embedding rows read from the GGUF: on the CPU
    they give the very logits llama.cpp gives for the tokens, for float and quantized tables."""
    if weights == "F32":
        path = tiny_model_dir / TINY_TEXT_FILE
    elif weights == "Q8_0":
        path = tiny_model_dir / TINY_TEXT_Q8_FILE
    else:
        path, _ = mini_q5_k_m
    table = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    assert table.tensor_type.name == {"F32": "F32", "Q8_0": "Q8_0", "Q5_K_M": "Q5_K"}[weights]
    model = TextModel(str(path), 0)
    try:
        tokens = model.tokenize("USER: What is shown here? ASSISTANT:", add_special=True)
        rows = model.token_rows(tokens)
        assert rows.shape == (len(tokens), model.n_embd) and rows.dtype == np.float32
        assert np.array_equal(logits_of(model, tokens, rows), logits_of(model, tokens, None))
    finally:
        model.close()


def test_one_prefill_pass_per_frame(tiny_model_dir: Path) -> None:
    """Text before the image, image and question go into one embedding pass (one call while
    they fit in n_batch), and the answer's first token comes from it: no decode call for the
    question's text."""
    max_tokens = 5
    engine_settings = settings(
        tiny_model_dir, parallel=1, max_questions=1, max_tokens=max_tokens, ignore_eos=True, stop=(), n_batch=4096
    )
    with Engine(engine_settings) as engine:
        results = list(engine.run(enumerate(frames(3, seed=4)), make_questions(PROMPTS[:1])))
        stats = engine.stats
    assert [len(answers) for _, answers in results] == [1, 1, 1]
    assert all(a.completion_tokens == max_tokens for _, answers in results for a in answers)
    assert stats.frames == 3
    assert stats.prefill_calls == 3
    assert stats.decode_calls == 3 * (max_tokens - 1)


def test_a_native_failure_is_one_error_that_says_what_llama_cpp_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_model = tmp_path / "notes.gguf"
    not_a_model.write_text("shopping list: milk\n")
    route_native_logs()
    with caplog.at_level(logging.DEBUG, "pipeline.llama_cpp"), pytest.raises(EngineError) as failed:
        TextModel(str(not_a_model), 0)
    said = str(failed.value)
    assert said.startswith(f"text model failed to load: {not_a_model}; llama.cpp said: ")
    assert "invalid magic characters: 'shop', expected 'GGUF'" in said and "\n" not in said
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # not a second error


@pytest.mark.allow_error_logs
def test_error_lines_held_for_a_block_that_ends_well_are_logged_as_they_came(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, "pipeline.llama_cpp"):
        with held_errors() as said:
            said.append("ggml_cuda_init: failed")
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.ERROR, "ggml_cuda_init: failed")]
        assert said_by_llama_cpp([]) == ""
