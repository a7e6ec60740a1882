"""Tests of the generated tiny LLaVA 1.6 model pair (``pipeline.caption.tiny``).

The model runs through the real llama-cpp-python multimodal path (``mtmd``): loading both
files, anyres tiling of a video-sized frame, CLIP encoding and greedy decoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from pipeline.caption import Captioner
from pipeline.caption.tiny import (
    TINY_MMPROJ_FILE,
    TINY_TEXT_FILE,
    TINY_TEXT_Q8_FILE,
    ensure_tiny_model,
)
from pipeline.config import compose_config
from pipeline.presets import captioner_from_config

FRAME_W, FRAME_H = 640, 360
# LLaVA 1.6 anyres for 640x360: the 672x672 pinpoint wins (2x2 tiles) plus the base tile,
# 24x24 features each; the reference layout keeps the grid's 28 rows that hold the frame, each
# with a newline: 576 + 28 x 49 = 1,948, as transformers gives for the real llava-v1.6 models.
IMAGE_TOKENS_640X360 = 576 + 28 * 49
QUESTION = "What is shown in the image?"
N_GENERATED = 16


@pytest.fixture(scope="module")
def vocab(tiny_model_dir: Path) -> Iterator[llama_cpp.Llama]:
    """The tiny text model's tokenizer (vocabulary only)."""
    model_path = str(tiny_model_dir / TINY_TEXT_FILE)
    llama = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    yield llama
    llama.close()


@pytest.fixture(scope="module")
def captioner(tiny_model_dir: Path) -> Iterator[Captioner]:
    """The F32 tiny model through the product's engine, loaded once per module."""
    overrides = [f"model.dir={tiny_model_dir}", f"generation.max_tokens={N_GENERATED}"]
    cfg = compose_config(["model=tiny", "video=x", *overrides])
    with captioner_from_config(cfg) as loaded:
        yield loaded


def noise_frame(seed: int) -> np.ndarray:
    """A 640x360 RGB frame of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


def gradient_frame() -> np.ndarray:
    """A 640x360 RGB frame: red rising left to right, blue top to bottom."""
    frame = np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8)
    frame[..., 0] = np.linspace(0, 255, FRAME_W, dtype=np.uint8)[None, :]
    frame[..., 2] = np.linspace(0, 255, FRAME_H, dtype=np.uint8)[:, None]
    return frame


def test_generation_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The session's model (conftest) against one generated again here.
    again = ensure_tiny_model(tmp_path, quantized=True)
    for name in (TINY_TEXT_FILE, TINY_MMPROJ_FILE, TINY_TEXT_Q8_FILE):
        assert (tmp_path / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    assert [p.name for p in again] == [TINY_TEXT_Q8_FILE, TINY_MMPROJ_FILE]


def test_existing_files_are_reused_and_no_temp_files_left(tiny_model_dir: Path) -> None:
    text, mmproj = ensure_tiny_model(tiny_model_dir)
    before = (text.stat().st_mtime_ns, mmproj.stat().st_mtime_ns)
    text, mmproj = ensure_tiny_model(tiny_model_dir)
    assert (text.stat().st_mtime_ns, mmproj.stat().st_mtime_ns) == before
    names = {p.name for p in tiny_model_dir.iterdir()}
    made = {TINY_TEXT_FILE, TINY_MMPROJ_FILE, TINY_TEXT_Q8_FILE}
    # Runs of other tests with model.text_type=f16 leave their F16 copies (<stem>.<fingerprint>.F16.gguf) beside.
    assert made <= names and not {name for name in names - made if not name.endswith(".F16.gguf")}, names


def test_frame_gets_llava16_anyres_tokens_and_generates(captioner: Captioner) -> None:
    # How fast a frame is belongs to the benchmarks (BENCHMARKS.md), not here.
    (answer,) = captioner.ask(noise_frame(1), [QUESTION])
    assert IMAGE_TOKENS_640X360 < answer.prompt_tokens < IMAGE_TOKENS_640X360 + 40
    assert answer.finish_reason == "length" and answer.completion_tokens == N_GENERATED
    assert answer.text


def test_different_images_give_different_text(captioner: Captioner) -> None:
    assert captioner.answer(noise_frame(2), QUESTION) != captioner.answer(gradient_frame(), QUESTION)


def test_chat_control_token_is_one_token(vocab: llama_cpp.Llama) -> None:
    llama = vocab
    tokens = llama.tokenize(b"<|im_start|>user", add_bos=False, special=True)
    im_start = tokens[0]
    assert llama.detokenize([im_start], special=True) == b"<|im_start|>"
    assert len(tokens) == 2
    # Without special=True the marker is plain text.
    assert im_start not in llama.tokenize(b"<|im_start|>user", add_bos=False, special=False)


def test_im_end_is_end_of_generation(vocab: llama_cpp.Llama) -> None:
    # The GGUF sets no eot_token_id; llama.cpp recognises "<|im_end|>" by its text.
    llama = vocab
    (im_end,) = llama.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llama.model), im_end)


def test_english_tokenizes_to_words(vocab: llama_cpp.Llama) -> None:
    llama = vocab
    tokens = llama.tokenize(b"What is shown in the image?", add_bos=False)
    pieces = [llama.detokenize([t]) for t in tokens]
    assert pieces == [b" What", b" is", b" shown", b" in", b" the", b" image", b"?"]
    assert len(llama.tokenize(b"hello world", add_bos=False)) < len("hello world")


def test_bos_is_added(vocab: llama_cpp.Llama) -> None:
    assert vocab.tokenize(b"the")[0] == vocab.token_bos() == 1


def test_non_ascii_falls_back_to_bytes(vocab: llama_cpp.Llama) -> None:
    llama = vocab
    tokens = llama.tokenize("é".encode(), add_bos=False)
    assert [llama.detokenize([t]) for t in tokens][-2:] == [b"\xc3", b"\xa9"]
    assert llama.detokenize(tokens) == " é".encode()


def test_quantized_model_is_a_real_q8_0_file(tiny_model_dir: Path) -> None:
    # Loading and captioning with it: tests/test_caption.py::test_quantized_tiny_model_runs.
    text, _ = ensure_tiny_model(tiny_model_dir, quantized=True)
    assert text.name == TINY_TEXT_Q8_FILE
    assert text.stat().st_size < (tiny_model_dir / TINY_TEXT_FILE).stat().st_size / 2
