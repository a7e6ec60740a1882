"""Tests of the generated tiny LLaVA 1.6 model pair (``pipeline.caption.tiny``).

The model runs through the real llama-cpp-python multimodal path (``mtmd``): loading both
files, anyres tiling of a video-sized frame, CLIP encoding and greedy decoding.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from pipeline.caption.tiny import (
    TINY_MMPROJ_FILE,
    TINY_TEXT_FILE,
    TINY_TEXT_Q8_FILE,
    ensure_tiny_model,
)

llama_cpp = pytest.importorskip("llama_cpp")
mtmd = pytest.importorskip("llama_cpp.mtmd_cpp")

FRAME_W, FRAME_H = 640, 360
# LLaVA 1.6 anyres for 640x360: the 672x672 pinpoint wins (2x2 tiles) plus the overview,
# 5 tiles of 24x24 patches each. The real llava-v1.6 models give the same 2,880.
TOKENS_PER_TILE = 576
IMAGE_TOKENS_640X360 = 5 * TOKENS_PER_TILE
PROMPT = "USER: <__media__>\nWhat is shown in the image? ASSISTANT:"
N_GENERATED = 16


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the F32 and the Q8_0 model, generated once per module."""
    path = tmp_path_factory.mktemp("tiny-model")
    ensure_tiny_model(path, quantized=True)
    return path


class Captioner:
    """The tiny model loaded with llama-cpp-python and mtmd, answering one frame at a time."""

    def __init__(self, text_path: Path, mmproj_path: Path) -> None:
        self.llama = llama_cpp.Llama(
            model_path=str(text_path), n_ctx=4096, n_batch=2048, logits_all=False, verbose=False
        )
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = self.llama.n_threads
        self.ctx = mtmd.mtmd_init_from_file(str(mmproj_path).encode(), self.llama.model, params)
        assert self.ctx, "mtmd_init_from_file failed"
        self.last_image_tokens = 0

    def close(self) -> None:
        """Free the mtmd context, then the model."""
        mtmd.mtmd_free(self.ctx)
        self.llama.close()

    def caption(self, frame: np.ndarray, prompt: str = PROMPT) -> list[int]:
        """Greedy token ids answering ``prompt`` about an RGB ``frame`` (H x W x 3 uint8)."""
        self.llama.reset()
        self.llama._ctx.kv_cache_clear()
        chunks = self._tokenize(frame, prompt)
        try:
            self.last_image_tokens = self._count_image_tokens(chunks)
            n_past = llama_cpp.llama_pos(0)
            status = mtmd.mtmd_helper_eval_chunks(
                self.ctx, self.llama._ctx.ctx, chunks, 0, 0, self.llama.n_batch, True,
                ctypes.byref(n_past),
            )
            assert status == 0, f"mtmd_helper_eval_chunks failed: {status}"
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
        self.llama.n_tokens = n_past.value
        tokens = []
        for _ in range(N_GENERATED):
            token = self.llama.sample(temp=0.0)
            tokens.append(token)
            self.llama.eval([token])
        return tokens

    def _tokenize(self, frame: np.ndarray, prompt: str) -> mtmd.mtmd_input_chunks_p:
        """Split ``prompt`` into text and image chunks, the frame at the media marker."""
        pixels = np.ascontiguousarray(frame, dtype=np.uint8)
        bitmap = mtmd.mtmd_bitmap_init(
            pixels.shape[1], pixels.shape[0], pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        )
        text = mtmd.mtmd_input_text()
        text_bytes = prompt.encode()
        text.text = text_bytes
        text.text_len = len(text_bytes)
        text.add_special = True
        text.parse_special = True
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(text), bitmaps, 1)
            assert status == 0, f"mtmd_tokenize failed: {status}"
        finally:
            mtmd.mtmd_bitmap_free(bitmap)
        return chunks

    @staticmethod
    def _count_image_tokens(chunks: mtmd.mtmd_input_chunks_p) -> int:
        """Tokens in all image chunks (mtmd makes one chunk per anyres tile)."""
        total = 0
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                total += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        return total


@pytest.fixture(scope="module")
def captioner(cache_dir: Path) -> Iterator[Captioner]:
    """The F32 tiny model, loaded once per module."""
    loaded = Captioner(*ensure_tiny_model(cache_dir))
    yield loaded
    loaded.close()


def noise_frame(seed: int) -> np.ndarray:
    """A 640x360 RGB frame of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


def gradient_frame() -> np.ndarray:
    """A 640x360 RGB frame: red rising left to right, blue top to bottom."""
    frame = np.zeros((FRAME_H, FRAME_W, 3), dtype=np.uint8)
    frame[..., 0] = np.linspace(0, 255, FRAME_W, dtype=np.uint8)[None, :]
    frame[..., 2] = np.linspace(0, 255, FRAME_H, dtype=np.uint8)[:, None]
    return frame


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = ensure_tiny_model(tmp_path / "a", quantized=True)
    second = ensure_tiny_model(tmp_path / "b", quantized=True)
    for name in (TINY_TEXT_FILE, TINY_MMPROJ_FILE, TINY_TEXT_Q8_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert [p.name for p in first] == [TINY_TEXT_Q8_FILE, TINY_MMPROJ_FILE]
    assert [p.name for p in second] == [TINY_TEXT_Q8_FILE, TINY_MMPROJ_FILE]


def test_existing_files_are_reused_and_no_temp_files_left(cache_dir: Path) -> None:
    text, mmproj = ensure_tiny_model(cache_dir)
    before = (text.stat().st_mtime_ns, mmproj.stat().st_mtime_ns)
    text, mmproj = ensure_tiny_model(cache_dir)
    assert (text.stat().st_mtime_ns, mmproj.stat().st_mtime_ns) == before
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted(
        [TINY_TEXT_FILE, TINY_MMPROJ_FILE, TINY_TEXT_Q8_FILE]
    )


def test_frame_gets_llava16_anyres_tokens_and_generates(captioner: Captioner) -> None:
    captioner.caption(noise_frame(0))  # warm-up: first use allocates compute buffers
    start = time.perf_counter()
    tokens = captioner.caption(noise_frame(1))
    elapsed = time.perf_counter() - start
    print(f"tiny model: one 640x360 frame + {N_GENERATED} tokens in {elapsed * 1000:.0f} ms")
    assert captioner.last_image_tokens == IMAGE_TOKENS_640X360
    assert len(tokens) == N_GENERATED
    assert elapsed < 1.0


def test_different_images_give_different_text(captioner: Captioner) -> None:
    noise = captioner.llama.detokenize(captioner.caption(noise_frame(2)))
    gradient = captioner.llama.detokenize(captioner.caption(gradient_frame()))
    assert noise != gradient


def test_same_image_gives_same_text(captioner: Captioner) -> None:
    assert captioner.caption(gradient_frame()) == captioner.caption(gradient_frame())


def test_chat_control_token_is_one_token(captioner: Captioner) -> None:
    llama = captioner.llama
    tokens = llama.tokenize(b"<|im_start|>user", add_bos=False, special=True)
    im_start = tokens[0]
    assert llama.detokenize([im_start], special=True) == b"<|im_start|>"
    assert len(tokens) == 2
    # Without special=True the marker is plain text.
    assert im_start not in llama.tokenize(b"<|im_start|>user", add_bos=False, special=False)


def test_im_end_is_end_of_generation(captioner: Captioner) -> None:
    # The GGUF sets no eot_token_id; llama.cpp recognises "<|im_end|>" by its text.
    llama = captioner.llama
    (im_end,) = llama.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llama.model), im_end)


def test_english_tokenizes_to_words(captioner: Captioner) -> None:
    llama = captioner.llama
    tokens = llama.tokenize(b"What is shown in the image?", add_bos=False)
    pieces = [llama.detokenize([t]) for t in tokens]
    assert pieces == [b" What", b" is", b" shown", b" in", b" the", b" image", b"?"]
    assert len(llama.tokenize(b"hello world", add_bos=False)) < len("hello world")


def test_bos_is_added(captioner: Captioner) -> None:
    assert captioner.llama.tokenize(b"the")[0] == captioner.llama.token_bos() == 1


def test_non_ascii_falls_back_to_bytes(captioner: Captioner) -> None:
    llama = captioner.llama
    tokens = llama.tokenize("é".encode(), add_bos=False)
    assert [llama.detokenize([t]) for t in tokens][-2:] == [b"\xc3", b"\xa9"]
    assert llama.detokenize(tokens) == " é".encode()


def test_quantized_model_loads_and_generates(cache_dir: Path) -> None:
    text, mmproj = ensure_tiny_model(cache_dir, quantized=True)
    assert text.name == TINY_TEXT_Q8_FILE
    assert text.stat().st_size < (cache_dir / TINY_TEXT_FILE).stat().st_size / 2
    quantized = Captioner(text, mmproj)
    try:
        tokens = quantized.caption(gradient_frame())
        assert quantized.last_image_tokens == IMAGE_TOKENS_640X360
        assert len(tokens) == N_GENERATED
    finally:
        quantized.close()
