"""The llama-cpp-python engine: frames in, answers out, many sequences decoded together.

How a frame is answered:

1. The frame's prefix (system text + the image, handed to ``mtmd`` as raw RGB) is tokenized
   once and evaluated once into one KV-cache sequence (CLIP encode, then prefill).
2. That sequence is copied (``llama_memory_seq_cp``; with a unified KV cache the cells are
   shared, not copied) to one sequence per question, and each question evaluates only its own
   tokens on top.
3. All active sequences of all frames in flight are decoded together, one token each per
   ``llama_decode``; a finished sequence frees its cells and slot, and a waiting frame fills
   them (continuous batching).

``parallel=1`` with one question per frame is the plain one-at-a-time path; greedy answers do
not depend on how sequences are batched (a test holds this).
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import llama_cpp  # noqa: I001  (import order: see pipeline/__init__.py)
import llama_cpp.mtmd_cpp as mtmd
import numpy as np

from pipeline.caption.formats import ChatFormat

log = logging.getLogger(__name__)

Tag = TypeVar("Tag")



class EngineError(RuntimeError):
    """The model could not be loaded or a decode failed; the message names the cause."""


@dataclass(frozen=True)
class EngineSettings:
    """Everything the engine needs, resolved from config.

    Attributes:
        text_model: Path of the text GGUF.
        mmproj: Path of the CLIP projector GGUF.
        chat_format: The variant's prompt template.
        system_prompt: System text; ``None`` uses the format's default.
        stop: Strings that end an answer (not included in it).
        n_ctx: KV cells for one frame's conversation (all its questions).
        n_gpu_layers: Layers offloaded to the GPU (-1: all).
        n_batch: Most tokens per ``llama_decode`` call.
        n_ubatch: Most tokens per compute step inside a decode.
        flash_attn: ``on``, ``off``, or ``auto``: on when layers run on a GPU (where it pays),
            off on CPU. llama.cpp's CPU flash-attention kernel sums in an order that depends on
            the KV-cache layout, so near-tie tokens can differ between batched and unbatched
            runs; without it, greedy answers do not depend on batching.
        n_threads: CPU threads (``None``: all cores).
        parallel: Frames in flight at once.
        max_questions: Most questions asked about one frame (sets the sequence slots).
        max_tokens: Most tokens generated per answer.
        temperature: 0 for greedy decoding.
        top_k: Top-k cut-off when sampling.
        top_p: Nucleus cut-off when sampling.
        seed: Sampling seed (each answer restarts from it, so answers do not depend on batching).
    """

    text_model: str
    mmproj: str
    chat_format: ChatFormat
    system_prompt: str | None = None
    stop: tuple[str, ...] = ()
    n_ctx: int = 4096
    n_gpu_layers: int = -1
    n_batch: int = 2048
    n_ubatch: int = 2048
    flash_attn: str = "auto"
    n_threads: int | None = None
    parallel: int = 4
    max_questions: int = 1
    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Question:
    """A prompt to ask about every frame, with a stable id."""

    prompt_id: str
    text: str


@dataclass(frozen=True)
class Answer:
    """The model's answer to one question about one frame.

    Attributes:
        question: What was asked.
        text: The answer ("" when ``error`` is set).
        prompt_tokens: Tokens evaluated for the prompt (shared image prefix + question).
        completion_tokens: Tokens generated.
        latency_ms: From the frame's admission to this answer's last token.
        error: Why there is no answer, or ``None``.
    """

    question: Question
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None


@dataclass
class EngineStats:
    """Where the engine's time went, in seconds, and how much it did."""

    tokenize_s: float = 0.0
    clip_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    frames: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Frame(Generic[Tag]):
    tag: Tag
    chunks: object
    prefix_tokens: int
    suffixes: list[list[int]]
    kv_need: int
    started_s: float = 0.0
    answers: list[Answer | None] = field(default_factory=list)
    open_sequences: int = 0


@dataclass
class _Sequence:
    seq_id: int
    frame: _Frame
    index: int
    position: int
    pending: list[int]
    sampler: object
    generated: list[int] = field(default_factory=list)
    text: bytes = b""


class Engine:
    """Loads one model pair once and answers many questions about many frames.

    Args:
        settings: Model files and runtime knobs.
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.questions: list[Question] = []
        self.stats = EngineStats()
        self._model = None
        self._ctx = None
        self._mtmd = None
        self._batch: llama_cpp.llama_batch | None = None
        self._greedy = None

    # -- life cycle -------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the text model, the context and the projector.

        Raises:
            EngineError: A file does not load.
        """
        s = self.settings
        _route_native_logs()
        n_threads = s.n_threads or os.cpu_count() or 1
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = s.n_gpu_layers
        self._model = llama_cpp.llama_model_load_from_file(s.text_model.encode(), model_params)
        if not self._model:
            raise EngineError(f"text model failed to load: {s.text_model}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

        n_seq = s.parallel * s.max_questions
        if n_seq > llama_cpp.llama_max_parallel_sequences():
            raise EngineError(
                f"engine.parallel × prompts = {n_seq} sequences, more than llama.cpp's "
                f"{llama_cpp.llama_max_parallel_sequences()}; lower engine.parallel"
            )
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = s.n_ctx * s.parallel
        ctx_params.n_batch = s.n_batch
        ctx_params.n_ubatch = min(s.n_ubatch, s.n_batch)
        ctx_params.n_seq_max = n_seq
        ctx_params.kv_unified = True
        ctx_params.n_threads = n_threads
        ctx_params.n_threads_batch = n_threads
        flash_attn = _flash_attn_type(s.flash_attn, s.n_gpu_layers)
        ctx_params.flash_attn_type = flash_attn
        ctx_params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            self.close()
            raise EngineError(
                f"llama context failed to start (n_ctx={ctx_params.n_ctx}); "
                "lower engine.parallel or model.n_ctx"
            )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._kv_capacity = llama_cpp.llama_n_ctx(self._ctx)

        mtmd_params = mtmd.mtmd_context_params_default()
        mtmd_params.use_gpu = s.n_gpu_layers != 0
        mtmd_params.print_timings = False
        mtmd_params.n_threads = n_threads
        mtmd_params.flash_attn_type = flash_attn
        mtmd_params.warmup = False
        self._mtmd = mtmd.mtmd_init_from_file(s.mmproj.encode(), self._model, mtmd_params)
        if not self._mtmd:
            self.close()
            raise EngineError(f"mmproj failed to load: {s.mmproj}")
        if not mtmd.mtmd_support_vision(self._mtmd):
            self.close()
            raise EngineError(f"mmproj has no vision encoder: {s.mmproj}")

        self._batch = llama_cpp.llama_batch_init(s.n_batch, 0, 1)
        self._free_seq_ids = list(range(n_seq - 1, -1, -1))
        self._kv_reserved = 0
        self._prefix_text, _ = s.chat_format.split("", s.system_prompt)

    def close(self) -> None:
        """Free everything native the engine holds (safe to call twice)."""
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._greedy is not None:
            llama_cpp.llama_sampler_free(self._greedy)
            self._greedy = None
        if self._mtmd:
            mtmd.mtmd_free(self._mtmd)
            self._mtmd = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Engine:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def text_embedding_size(self) -> int:
        """The text model's embedding size."""
        return llama_cpp.llama_model_n_embd(self._model)

    # -- the loop ---------------------------------------------------------------------------

    def run(
        self, jobs: Iterable[tuple[Tag, np.ndarray]], questions: list[Question]
    ) -> Iterator[tuple[Tag, list[Answer]]]:
        """Answer every question about every frame.

        Args:
            jobs: ``(tag, rgb)`` pairs; ``rgb`` is an ``HxWx3`` uint8 array. The tag comes
                back with the frame's answers.
            questions: Asked about every frame; at most ``settings.max_questions``.

        Yields:
            ``(tag, answers)`` per frame, one answer per question in question order, as frames
            finish (not necessarily in input order when ``parallel > 1``). A frame that cannot
            be processed (a bad array, too long a prompt) yields answers with ``error`` set.

        Raises:
            EngineError: The native decode failed; the engine cannot go on.
        """
        if self._ctx is None:
            raise EngineError("Engine.setup() was not called")
        if not 0 < len(questions) <= self.settings.max_questions:
            raise ValueError(
                f"{len(questions)} prompts given; between 1 and "
                f"{self.settings.max_questions} (settings.max_questions) allowed"
            )
        self.questions = list(questions)
        system = self.settings.system_prompt
        self._suffix_tokens = [
            self._tokenize(self.settings.chat_format.split(q.text, system)[1]) for q in questions
        ]
        job_iter = iter(jobs)
        active: list[_Sequence] = []
        waiting: _Frame | None = None
        exhausted = False
        while True:
            while waiting is None and not exhausted and self._free_seq_ids:
                job = next(job_iter, None)
                if job is None:
                    exhausted = True
                    break
                frame, failed = self._prepare(*job)
                if failed is not None:
                    yield failed
                    continue
                waiting = frame
                if self._fits(frame):
                    active.extend(self._admit(frame))
                    waiting = None
            if not active:
                return
            finished = self._step(active)
            for frame in finished:
                self._kv_reserved -= frame.kv_need
                yield frame.tag, [a for a in frame.answers if a is not None]
            if waiting is not None and self._fits(waiting):
                active.extend(self._admit(waiting))
                waiting = None

    # -- one frame in -------------------------------------------------------------------------

    def _prepare(
        self, tag: Tag, rgb: np.ndarray
    ) -> tuple[_Frame | None, tuple[Tag, list[Answer]] | None]:
        """Tokenize the frame's prefix with its image; a bad frame becomes error answers."""
        t0 = time.perf_counter()
        try:
            chunks = self._tokenize_prefix(rgb)
        except ValueError as error:
            return None, (tag, self._error_answers(str(error)))
        n_prefix = mtmd.mtmd_helper_get_n_pos(chunks)
        self.stats.tokenize_s += time.perf_counter() - t0
        kv_need = n_prefix + sum(len(t) + self.settings.max_tokens for t in self._suffix_tokens)
        if kv_need > self._kv_capacity:
            mtmd.mtmd_input_chunks_free(chunks)
            return None, (
                tag,
                self._error_answers(
                    f"frame needs {kv_need} KV cells (image {n_prefix} + prompts + max_tokens), "
                    f"more than the {self._kv_capacity} of model.n_ctx × engine.parallel"
                ),
            )
        frame = _Frame(tag, chunks, n_prefix, self._suffix_tokens, kv_need)
        frame.answers = [None] * len(self.questions)
        return frame, None

    def _fits(self, frame: _Frame) -> bool:
        return (
            len(self._free_seq_ids) >= len(self.questions)
            and self._kv_reserved + frame.kv_need <= self._kv_capacity
        )

    def _admit(self, frame: _Frame) -> list[_Sequence]:
        """Evaluate the frame's prefix once and start one sequence per question on it."""
        frame.started_s = time.perf_counter()
        self._kv_reserved += frame.kv_need
        seq_ids = [self._free_seq_ids.pop() for _ in self.questions]
        try:
            n_past = self._eval_prefix(frame.chunks, seq_ids[0])
        finally:
            mtmd.mtmd_input_chunks_free(frame.chunks)
            frame.chunks = None
        for seq_id in seq_ids[1:]:
            llama_cpp.llama_memory_seq_cp(self._memory, seq_ids[0], seq_id, 0, n_past)
        frame.open_sequences = len(seq_ids)
        self.stats.frames += 1
        return [
            _Sequence(seq_id, frame, i, n_past, list(frame.suffixes[i]), self._new_sampler())
            for i, seq_id in enumerate(seq_ids)
        ]

    def _tokenize_prefix(self, rgb: np.ndarray) -> object:
        if not (
            isinstance(rgb, np.ndarray)
            and rgb.dtype == np.uint8
            and rgb.ndim == 3
            and rgb.shape[2] == 3
            and rgb.shape[0] > 0
            and rgb.shape[1] > 0
        ):
            shape = getattr(rgb, "shape", None)
            dtype = getattr(rgb, "dtype", type(rgb).__name__)
            raise ValueError(f"frame must be an HxWx3 uint8 RGB array, got {shape} {dtype}")
        pixels = np.ascontiguousarray(rgb)
        height, width = pixels.shape[:2]
        bitmap = mtmd.mtmd_bitmap_init(
            width, height, pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        )
        if not bitmap:
            raise ValueError(f"mtmd could not take a {width}x{height} image")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = (self._prefix_text + mtmd.mtmd_default_marker().decode()).encode()
            input_text = mtmd.mtmd_input_text()
            input_text.text = text
            input_text.text_len = len(text)
            input_text.add_special = True
            input_text.parse_special = True
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = mtmd.mtmd_tokenize(self._mtmd, chunks, ctypes.byref(input_text), bitmaps, 1)
        finally:
            mtmd.mtmd_bitmap_free(bitmap)
        if status != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise ValueError(f"mtmd could not tokenize the image (status {status})")
        return chunks

    def _eval_prefix(self, chunks: object, seq_id: int) -> int:
        n_past = 0
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            is_image = mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT
            t0 = time.perf_counter()
            if is_image:
                if mtmd.mtmd_encode_chunk(self._mtmd, chunk) != 0:
                    raise EngineError("CLIP image encode failed")
                t1 = time.perf_counter()
                self.stats.clip_s += t1 - t0
                t0 = t1
                new_n_past = llama_cpp.llama_pos(n_past)
                status = mtmd.mtmd_helper_decode_image_chunk(
                    self._mtmd,
                    self._ctx,
                    chunk,
                    mtmd.mtmd_get_output_embd(self._mtmd),
                    n_past,
                    seq_id,
                    self.settings.n_batch,
                    ctypes.byref(new_n_past),
                    mtmd.mtmd_helper_post_decode_callback(),
                    None,
                )
            else:
                new_n_past = llama_cpp.llama_pos(n_past)
                status = mtmd.mtmd_helper_eval_chunk_single(
                    self._mtmd,
                    self._ctx,
                    chunk,
                    n_past,
                    seq_id,
                    self.settings.n_batch,
                    False,
                    ctypes.byref(new_n_past),
                )
            if status != 0:
                raise EngineError(f"prefill decode failed (status {status})")
            self.stats.prefill_s += time.perf_counter() - t0
            n_past = new_n_past.value
        return n_past

    # -- all sequences one step ---------------------------------------------------------------

    def _step(self, active: list[_Sequence]) -> list[_Frame]:
        """Feed every active sequence its pending tokens, sample one token each."""
        t0 = time.perf_counter()
        batch = self._batch
        capacity = self.settings.n_batch
        finished: list[_Frame] = []
        outputs: list[tuple[_Sequence, int]] = []
        batch.n_tokens = 0
        queue = list(active)
        for seq in queue:
            tokens = seq.pending
            for j, token in enumerate(tokens):
                if batch.n_tokens == capacity:
                    self._decode_and_sample(outputs, active, finished)
                    outputs = []
                i = batch.n_tokens
                batch.token[i] = token
                batch.pos[i] = seq.position + j
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq.seq_id
                last = j == len(tokens) - 1
                batch.logits[i] = last
                if last:
                    outputs.append((seq, i))
                batch.n_tokens += 1
            seq.position += len(tokens)
            seq.pending = []
        self._decode_and_sample(outputs, active, finished)
        self.stats.decode_s += time.perf_counter() - t0
        return finished

    def _decode_and_sample(
        self, outputs: list[tuple[_Sequence, int]], active: list[_Sequence], finished: list[_Frame]
    ) -> None:
        batch = self._batch
        if batch.n_tokens == 0:
            return
        status = llama_cpp.llama_decode(self._ctx, batch)
        batch.n_tokens = 0
        if status != 0:
            raise EngineError(f"llama_decode failed (status {status})")
        for seq, index in outputs:
            token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, index)
            if self._accept(seq, token):
                active.remove(seq)
                if self._finish(seq):
                    finished.append(seq.frame)

    def _accept(self, seq: _Sequence, token: int) -> bool:
        """Take a sampled token; True when the answer is complete."""
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return True
        seq.generated.append(token)
        seq.text += self._piece(token)
        if self._cut_at_stop(seq):
            return True
        if len(seq.generated) >= self.settings.max_tokens:
            return True
        seq.pending = [token]
        return False

    def _cut_at_stop(self, seq: _Sequence) -> bool:
        text = seq.text.decode("utf-8", errors="ignore")
        hits = [text.find(stop) for stop in self.settings.stop if stop and stop in text]
        if hits:
            seq.text = text[: min(hits)].encode()
            return True
        return False

    def _finish(self, seq: _Sequence) -> bool:
        """Free the sequence; True when its frame has all its answers."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq.seq_id, -1, -1)
        self._free_seq_ids.append(seq.seq_id)
        if seq.sampler is not self._greedy:
            llama_cpp.llama_sampler_free(seq.sampler)
        frame = seq.frame
        n_prompt = frame.prefix_tokens + len(frame.suffixes[seq.index])
        frame.answers[seq.index] = Answer(
            question=self.questions[seq.index],
            text=seq.text.decode("utf-8", errors="replace").strip(),
            prompt_tokens=n_prompt,
            completion_tokens=len(seq.generated),
            latency_ms=(time.perf_counter() - frame.started_s) * 1000.0,
        )
        self.stats.prompt_tokens += n_prompt
        self.stats.completion_tokens += len(seq.generated)
        frame.open_sequences -= 1
        return frame.open_sequences == 0

    # -- small helpers ------------------------------------------------------------------------

    def _new_sampler(self) -> object:
        s = self.settings
        if s.temperature <= 0:
            if self._greedy is None:
                self._greedy = llama_cpp.llama_sampler_init_greedy()
            return self._greedy
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(s.seed))
        return chain

    def _tokenize(self, text: str) -> list[int]:
        data = text.encode()
        size = len(data) + 16
        buffer = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, size, False, True)
        if n < 0:
            raise EngineError(f"prompt does not tokenize: {text[:60]!r}")
        return list(buffer[:n])

    def _piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 64, 0, True)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, -n, 0, True)
        return buffer.raw[:n]

    def _error_answers(self, reason: str) -> list[Answer]:
        return [Answer(question=q, text="", error=reason) for q in self.questions]


def _flash_attn_type(setting: str, n_gpu_layers: int) -> int:
    on = setting == "on" or (
        setting == "auto" and n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload()
    )
    return llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if on else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED


_NATIVE_LOG = logging.getLogger("pipeline.llama_cpp")
# ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line's level.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = logging.DEBUG


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    if level != 5:
        _last_level = _LEVELS.get(level, logging.DEBUG)
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        _NATIVE_LOG.log(_last_level, message)


def _route_native_logs() -> None:
    """Send llama.cpp's and mtmd's console chatter to Python logging (DEBUG unless a problem)."""
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_log_set(_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(_log_callback, ctypes.c_void_p(0))
