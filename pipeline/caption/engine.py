"""The llama-cpp-python engine: frames in, answers out, many sequences decoded together.

How a frame is answered:

1. A background thread tokenizes the frame's prefix (system text + the image, handed to
   ``mtmd`` as raw RGB; ``mtmd_tokenize`` does the CPU image preprocessing: anyres tiling,
   resizing, normalisation) and, on a GPU, CLIP-encodes its tiles (``overlap_clip``), while
   the calling thread keeps the GPU busy with other frames (``prepare_ahead``).
2. On admission the tiles' embeddings are evaluated into one KV-cache sequence, all tiles of a
   frame together in batches of ``n_batch`` tokens (not one 576-token tile per decode).
3. That sequence is copied (``llama_memory_seq_cp``) to one sequence per question; each
   question evaluates only its own tokens on top. By default every sequence has its own KV
   stream (``kv_unified=False``): the copy is a device-side copy of the stream, and each
   sequence's attention and KQ mask cover only its own cells.
4. All active sequences of all frames in flight are decoded together, one token each per
   step (in groups of ``max_decode_seqs``), ordered by sequence id so that llama.cpp puts
   them into one ubatch; greedy tokens are picked for all of them with one ``argmax`` over the
   logits. A finished sequence frees its cells and slot, and a waiting frame fills them
   (continuous batching).

On a GPU the frames in flight are split over ``lanes``: llama.cpp contexts on the one loaded
model, each driven by its own thread, so that one lane's kernels run while another's host side
prepares its next call (graph building, input copies) and the GPU is never left waiting.

``parallel=1`` with one question per frame is the plain one-at-a-time path; greedy answers do
not depend on how sequences are batched or on the lanes (tests hold this).
"""

from __future__ import annotations

import ctypes
import dataclasses
import heapq
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
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
        n_batch: Most tokens per ``llama_decode`` call (a frame's image tokens go in pieces of
            this size: 2048 or more keeps the GPU's matrix units busy).
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
        prepare_ahead: Frames tokenized (CPU image preprocessing) ahead on a background
            thread while the GPU decodes; 0 tokenizes on the calling thread. The thread is used
            only when the model runs on a GPU or ``n_threads`` leaves a core free (a busy
            extra thread next to llama.cpp's CPU threads on every core slows them many-fold).
        overlap_clip: Also run the CLIP encode of frames ahead on that thread, overlapping it
            with the decoding of frames in flight (GPU only; ignored on CPU).
        kv_unified: One KV stream shared by all sequences (cells of a frame's image shared by
            its questions) instead of one stream per sequence (the default: each sequence's
            attention and KQ mask cover only its own cells; a frame's image is copied on the
            device to its other questions' streams). With one stream, every prefill and every
            step attends over, and builds on the CPU a mask for, the cells of all frames in
            flight (measured 0.49 instead of 0.30 s of prefill per frame at 16 frames). Streams
            take ``n_ctx`` cells for every sequence slot (``parallel × max_questions``).
        max_decode_seqs: Most sequences per ``llama_decode`` in a decode step (0: all at once;
            ``None``: auto, groups of 8 up to 16 active sequences when llama.cpp's CUDA backend
            was built with ``GGML_CUDA_FORCE_CUBLAS`` and layers run on the GPU, else all at
            once). With that build (fast cuBLAS prefill) a group of at most 8 stays on the
            quantized matrix-vector kernel instead of dequantizing all weights to F16 for the
            step; past two groups the per-call overhead costs more than the dequantizing.
        lanes: llama.cpp contexts (on the one model) that share the frames in flight, each
            driven by its own thread (``None``: 2 when layers run on a GPU, else 1). On an H100
            two lanes keep the GPU busy while each one's host side prepares its next call.
        ignore_eos: Benchmark only: end-of-generation tokens are biased to minus infinity so
            that every answer runs to ``max_tokens`` (stop strings still apply).
    """

    text_model: str
    mmproj: str
    chat_format: ChatFormat
    system_prompt: str | None = None
    stop: tuple[str, ...] = ()
    n_ctx: int = 4096
    n_gpu_layers: int = -1
    n_batch: int = 2048
    n_ubatch: int = 1024
    flash_attn: str = "auto"
    n_threads: int | None = None
    parallel: int = 4
    max_questions: int = 1
    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    seed: int = 0
    prepare_ahead: int = 2
    overlap_clip: bool = True
    kv_unified: bool = False
    max_decode_seqs: int | None = None
    lanes: int | None = None
    ignore_eos: bool = False


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
    """Where the engine's time went, in seconds, and how much it did.

    ``tokenize_s`` (and ``clip_s`` with ``overlap_clip``) is spent on the background thread,
    overlapped with the rest; ``prefill_s`` and ``decode_s`` include waiting for the GPU;
    ``wait_s`` is the calling thread waiting for input frames or their tokenization.
    """

    tokenize_s: float = 0.0
    clip_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    wait_s: float = 0.0
    frames: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decode_calls: int = 0

    def __add__(self, other: EngineStats) -> EngineStats:
        return EngineStats(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )


@dataclass
class _Segment:
    """A run of a frame's prefix: text tokens, consecutive image chunks, or another chunk."""

    kind: str  # "text", "image" (LLaVA-style tiles, evaluated as embeddings) or "chunk"
    n_tokens: int
    tokens: list[int] = field(default_factory=list)
    chunks: list[object] = field(default_factory=list)
    embd: np.ndarray | None = None  # filled on the background thread with overlap_clip


@dataclass
class _Frame(Generic[Tag]):
    tag: Tag
    chunks: object  # mtmd_input_chunks owning the segments' chunks; freed after prefill
    segments: list[_Segment]
    prefix_tokens: int
    kv_need: int
    asked: tuple[int, ...]  # indices of the questions asked about this frame
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
    sampler: object  # None: greedy
    generated: list[int] = field(default_factory=list)
    text: bytes = b""


class _Batch:
    """A ``llama_batch`` whose arrays are numpy arrays, filled without per-field ctypes calls."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.seq = np.zeros(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        seq_p = ctypes.POINTER(llama_cpp.llama_seq_id)
        base = self.seq.ctypes.data
        size = self.seq.itemsize
        self.seq_ptrs = (seq_p * capacity)(
            *(ctypes.cast(base + i * size, seq_p) for i in range(capacity))
        )
        self.struct = llama_cpp.llama_batch()
        self.struct.pos = self.pos.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos))
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.seq_id = self.seq_ptrs
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self._token_p = self.token.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token))

    def as_tokens(self, n: int) -> llama_cpp.llama_batch:
        self.struct.n_tokens = n
        self.struct.token = self._token_p
        self.struct.embd = None
        return self.struct

    def as_embeddings(self, embd: np.ndarray, n: int) -> llama_cpp.llama_batch:
        self.struct.n_tokens = n
        self.struct.token = None
        self.struct.embd = embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        return self.struct


@dataclass(eq=False)
class _Lane:
    """One llama.cpp context on the shared model, with its sequence slots and counters."""

    ctx: object
    memory: object
    batch: _Batch
    free_seq_ids: list[int]  # a heap: lowest ids first (see _step)
    kv_capacity: int
    stats: EngineStats = field(default_factory=EngineStats)
    kv_reserved: int = 0
    embd_buffer: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


class Engine:
    """Loads one model pair once and answers many questions about many frames.

    Args:
        settings: Model files and runtime knobs.
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.questions: list[Question] = []
        self._stats = EngineStats()  # the preparing thread's and the caller's share
        self._model = None
        self._lanes: list[_Lane] = []
        self._mtmd = None
        self._worker: ThreadPoolExecutor | None = None
        self._clip_lock = threading.Lock()  # mtmd's context encodes one image at a time

    @property
    def stats(self) -> EngineStats:
        """Where the time went, summed over the lanes; assign ``EngineStats()`` to reset."""
        total = self._stats
        for lane in self._lanes:
            total = total + lane.stats
        return total

    @stats.setter
    def stats(self, value: EngineStats) -> None:
        self._stats = value
        for lane in self._lanes:
            lane.stats = EngineStats()

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
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._n_embd = llama_cpp.llama_model_n_embd_inp(self._model)

        on_gpu = s.n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload()
        n_lanes = max(1, min(s.lanes or (2 if on_gpu else 1), s.parallel))
        # Frames in flight per lane: parallel split as evenly as it goes.
        lane_parallel = [s.parallel // n_lanes + (i < s.parallel % n_lanes) for i in range(n_lanes)]
        n_seq_most = lane_parallel[0] * s.max_questions
        if n_seq_most > llama_cpp.llama_max_parallel_sequences():
            raise EngineError(
                f"engine.parallel × prompts = {n_seq_most} sequences per lane, more than "
                f"llama.cpp's {llama_cpp.llama_max_parallel_sequences()}; lower engine.parallel"
            )
        flash_attn = _flash_attn_type(s.flash_attn, s.n_gpu_layers)
        for parallel in lane_parallel:
            self._lanes.append(self._new_lane(parallel, n_threads, flash_attn))
        # A frame must fit into any lane.
        self._kv_capacity = min(lane.kv_capacity for lane in self._lanes)

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
        # LLaVA-style images (plain positions, causal attention) are evaluated as embeddings
        # by the engine itself; other models go through mtmd's helper chunk by chunk.
        self._embd_images = not mtmd.mtmd_decode_use_mrope(self._mtmd)

        self._prefix_text, _ = s.chat_format.split("", s.system_prompt)
        self._eog = np.array(
            [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
            if s.ignore_eos
            else [],
            dtype=np.int64,
        )
        # None: auto (see _decode_group); 0: all active sequences in one llama_decode.
        self._max_decode_seqs = s.max_decode_seqs
        if self._max_decode_seqs is None:
            cublas = b"FORCE_CUBLAS = 1" in (llama_cpp.llama_print_system_info() or b"")
            self._max_decode_seqs = -8 if on_gpu and cublas else 0
        self._overlap_clip = False
        if s.prepare_ahead > 0 and (on_gpu or n_threads < (os.cpu_count() or 1)):
            # Not when llama.cpp's CPU threads take every core: a second busy thread then
            # stalls their OpenMP barriers and decoding gets many times slower.
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-prep")
            self._overlap_clip = s.overlap_clip and on_gpu

    def _new_lane(self, parallel: int, n_threads: int, flash_attn: int) -> _Lane:
        """A llama.cpp context for ``parallel`` frames in flight on the loaded model."""
        s = self.settings
        n_seq = parallel * s.max_questions
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = s.n_ctx * (parallel if s.kv_unified else n_seq)
        ctx_params.n_batch = s.n_batch
        ctx_params.n_ubatch = min(s.n_ubatch, s.n_batch)
        ctx_params.n_seq_max = n_seq
        ctx_params.kv_unified = s.kv_unified
        ctx_params.n_threads = n_threads
        ctx_params.n_threads_batch = n_threads
        ctx_params.flash_attn_type = flash_attn
        ctx_params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not ctx:
            self.close()
            raise EngineError(
                f"llama context failed to start (n_ctx={ctx_params.n_ctx}); "
                "lower engine.parallel or model.n_ctx"
            )
        # Unified: cells for all frames in flight; per-sequence streams: cells of one stream.
        capacity = llama_cpp.llama_n_ctx(ctx) if s.kv_unified else llama_cpp.llama_n_ctx_seq(ctx)
        return _Lane(
            ctx, llama_cpp.llama_get_memory(ctx), _Batch(s.n_batch), list(range(n_seq)), capacity
        )

    def close(self) -> None:
        """Free everything native the engine holds (safe to call twice)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._mtmd:
            mtmd.mtmd_free(self._mtmd)
            self._mtmd = None
        for lane in self._lanes:
            llama_cpp.llama_free(lane.ctx)
        self._lanes = []
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
        self,
        jobs: Iterable[tuple[Tag, np.ndarray] | tuple[Tag, np.ndarray, Sequence[int] | None]],
        questions: list[Question],
    ) -> Iterator[tuple[Tag, list[Answer]]]:
        """Answer every question about every frame.

        Args:
            jobs: ``(tag, rgb)`` pairs, or ``(tag, rgb, asked)`` with the indices into
                ``questions`` to ask about that frame (all when left out or ``None``); ``rgb``
                is an ``HxWx3`` uint8 array. The tag comes back with the frame's answers. The
                iterable is consumed on the calling thread (with several lanes, on theirs, one
                at a time).
            questions: Asked about every frame; at most ``settings.max_questions``.

        Yields:
            ``(tag, answers)`` per frame, one answer per asked question in question order, as frames
            finish (not necessarily in input order when ``parallel > 1``). A frame that cannot
            be processed (a bad array, too long a prompt) yields answers with ``error`` set.

        Raises:
            EngineError: The native decode failed; the engine cannot go on.
        """
        if not self._lanes:
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
        source = _Source(self, iter(jobs), max(self.settings.prepare_ahead, 1) * len(self._lanes))
        try:
            if len(self._lanes) == 1:
                yield from self._drive(self._lanes[0], source)
            else:
                yield from self._run_lanes(source)
        finally:
            source.close()

    def _run_lanes(self, source: _Source) -> Iterator[tuple[Tag, list[Answer]]]:
        """Drive every lane on its own thread; hand their finished frames to the caller."""
        results: queue.Queue = queue.Queue()
        stop = threading.Event()

        def work(lane: _Lane) -> None:
            try:
                for finished in self._drive(lane, source):
                    results.put(finished)
                    if stop.is_set():
                        break
            except BaseException as error:  # noqa: BLE001  (re-raised on the caller's thread)
                results.put(_Failure(error))
            finally:
                results.put(_LANE_DONE)

        threads = [
            threading.Thread(target=work, args=(lane,), name=f"engine-lane{i}", daemon=True)
            for i, lane in enumerate(self._lanes)
        ]
        for thread in threads:
            thread.start()
        try:
            running = len(threads)
            while running:
                item = results.get()
                if item is _LANE_DONE:
                    running -= 1
                elif isinstance(item, _Failure):
                    raise item.error
                else:
                    yield item
        finally:
            stop.set()
            source.stop()
            for thread in threads:
                thread.join()

    def _drive(self, lane: _Lane, source: _Source) -> Iterator[tuple[Tag, list[Answer]]]:
        """One lane's loop: admit prepared frames while it has room, step its sequences."""
        active: list[_Sequence] = []
        try:
            while True:
                # Admit prepared frames while slots are free; wait for one only when nothing
                # else could use the GPU meanwhile.
                while self._has_room(lane):
                    item = source.take(block=not active, fits=lambda f: self._fits(lane, f))
                    if item is None:
                        break
                    if item is _END:
                        if not active:
                            return
                        break
                    frame, failed = item
                    if failed is not None:
                        yield failed
                        continue
                    started, finished = self._admit(lane, frame)
                    active.extend(started)
                    for done in finished:
                        lane.kv_reserved -= done.kv_need
                        yield done.tag, [a for a in done.answers if a is not None]
                if not active:
                    continue
                for frame in self._step(lane, active):
                    lane.kv_reserved -= frame.kv_need
                    yield frame.tag, [a for a in frame.answers if a is not None]
        finally:
            self._abandon(lane, active)

    def _abandon(self, lane: _Lane, active: list[_Sequence]) -> None:
        """Free what an interrupted lane still holds."""
        for seq in active:
            llama_cpp.llama_memory_seq_rm(lane.memory, seq.seq_id, -1, -1)
            self._free_sampler(seq)
            heapq.heappush(lane.free_seq_ids, seq.seq_id)
        active.clear()
        lane.kv_reserved = 0

    # -- one frame in -------------------------------------------------------------------------

    def _submit(self, tag: Tag, rgb: np.ndarray, asked: Sequence[int] | None = None) -> Future:
        asked = tuple(range(len(self.questions))) if asked is None else tuple(asked)
        if not asked or not set(asked) <= set(range(len(self.questions))):
            raise ValueError(f"asked question indices {list(asked)} do not name the questions")
        if self._worker is None:
            return _done(self._prepare(tag, rgb, asked, encode=False))
        return self._worker.submit(self._prepare, tag, rgb, asked)

    def _prepare(
        self, tag: Tag, rgb: np.ndarray, asked: tuple[int, ...], encode: bool = True
    ) -> tuple[_Frame | None, tuple[Tag, list[Answer]] | None]:
        """Tokenize the frame's prefix with its image (and with ``overlap_clip`` encode it);
        a bad frame becomes error answers. Runs on the background thread."""
        t0 = time.perf_counter()
        try:
            chunks = self._tokenize_prefix(rgb)
        except ValueError as error:
            return None, (tag, self._error_answers(str(error), asked))
        n_prefix = mtmd.mtmd_helper_get_n_pos(chunks)
        segments = self._segments(chunks)
        self._stats.tokenize_s += time.perf_counter() - t0
        suffixes = [self._suffix_tokens[i] for i in asked]
        if self.settings.kv_unified:
            kv_need = n_prefix + sum(len(t) + self.settings.max_tokens for t in suffixes)
        else:
            kv_need = n_prefix + max(len(t) for t in suffixes) + self.settings.max_tokens
        if kv_need > self._kv_capacity:
            mtmd.mtmd_input_chunks_free(chunks)
            where = "model.n_ctx × engine.parallel" if self.settings.kv_unified else "model.n_ctx"
            return None, (
                tag,
                self._error_answers(
                    f"frame needs {kv_need} KV cells (image {n_prefix} + prompts + max_tokens), "
                    f"more than the {self._kv_capacity} of {where}",
                    asked,
                ),
            )
        frame = _Frame(
            tag, chunks, segments, n_prefix, kv_need if self.settings.kv_unified else 0, asked
        )
        frame.answers = [None] * len(self.questions)
        if encode and self._overlap_clip:
            try:
                for segment in segments:
                    if segment.kind == "image":
                        out = np.empty((segment.n_tokens, self._n_embd), np.float32)
                        segment.embd = self._encode(segment, out, self._stats)
            except BaseException:
                self._free_chunks(frame)
                raise
        return frame, None

    def _segments(self, chunks: object) -> list[_Segment]:
        segments: list[_Segment] = []
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                segments.append(_Segment("text", n.value, tokens=list(tokens[: n.value])))
                continue
            n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            plain = (
                kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
                and self._embd_images
                and not mtmd.mtmd_decode_use_non_causal(self._mtmd, chunk)
                and mtmd.mtmd_input_chunk_get_n_pos(chunk) == n_tokens
            )
            if plain and segments and segments[-1].kind == "image":
                segments[-1].chunks.append(chunk)
                segments[-1].n_tokens += n_tokens
            else:
                segments.append(_Segment("image" if plain else "chunk", n_tokens, chunks=[chunk]))
        return segments

    def _has_room(self, lane: _Lane) -> bool:
        return len(lane.free_seq_ids) >= len(self.questions)

    def _fits(self, lane: _Lane, frame: _Frame) -> bool:
        return lane.kv_reserved + frame.kv_need <= lane.kv_capacity

    def _admit(self, lane: _Lane, frame: _Frame) -> tuple[list[_Sequence], list[_Frame]]:
        """Evaluate the frame's prefix once and start one sequence per question on it.

        Returns the new sequences and, rarely, frames already complete (an answer can end at
        its first token).
        """
        frame.started_s = time.perf_counter()
        lane.kv_reserved += frame.kv_need
        seq_ids = [heapq.heappop(lane.free_seq_ids) for _ in frame.asked]
        try:
            n_past = self._eval_prefix(lane, frame, seq_ids[0])
        except BaseException:
            lane.kv_reserved -= frame.kv_need
            llama_cpp.llama_memory_seq_rm(lane.memory, seq_ids[0], -1, -1)
            for seq_id in seq_ids:
                heapq.heappush(lane.free_seq_ids, seq_id)
            raise
        finally:
            self._free_chunks(frame)
        for seq_id in seq_ids[1:]:
            llama_cpp.llama_memory_seq_cp(lane.memory, seq_ids[0], seq_id, -1, -1)
        frame.open_sequences = len(seq_ids)
        lane.stats.frames += 1
        sequences = [
            _Sequence(seq_id, frame, i, n_past, list(self._suffix_tokens[i]), self._new_sampler())
            for i, seq_id in zip(frame.asked, seq_ids)
        ]
        if self.settings.kv_unified:
            return sequences, []  # the questions' tokens go into the next step's batch
        # One stream per sequence: llama.cpp splits a batch into ubatches with equally many
        # tokens per stream, so the questions' tokens next to other sequences' single tokens
        # would cost a forward pass per token; evaluate each question alone, now.
        started, finished = [], []
        for seq in sequences:
            alone = [seq]
            finished += self._step(lane, alone)
            started += alone
        return started, finished

    def _free_chunks(self, frame: _Frame) -> None:
        if frame.chunks is not None:
            mtmd.mtmd_input_chunks_free(frame.chunks)
            frame.chunks = None
        frame.segments = []

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

    def _encode(self, segment: _Segment, out: np.ndarray, stats: EngineStats) -> np.ndarray:
        """CLIP-encode a run of image chunks into ``out`` (``n_tokens × n_embd`` float32)."""
        t0 = time.perf_counter()
        row = 0
        with self._clip_lock:
            for chunk in segment.chunks:
                if mtmd.mtmd_encode_chunk(self._mtmd, chunk) != 0:
                    raise EngineError("CLIP image encode failed")
                n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                embd = mtmd.mtmd_get_output_embd(self._mtmd)
                ctypes.memmove(out[row:].ctypes.data, embd, n * self._n_embd * 4)
                row += n
        stats.clip_s += time.perf_counter() - t0
        return out

    def _eval_prefix(self, lane: _Lane, frame: _Frame, seq_id: int) -> int:
        n_past = 0
        stats = lane.stats
        for segment in frame.segments:
            if segment.kind == "text":
                t0 = time.perf_counter()
                self._decode_plain(lane, segment.tokens, None, n_past, seq_id)
                stats.prefill_s += time.perf_counter() - t0
            elif segment.kind == "image":
                embd = segment.embd
                if embd is None:
                    buffer = lane.embd_buffer
                    if buffer.shape[0] < segment.n_tokens or buffer.shape[1] != self._n_embd:
                        lane.embd_buffer = np.empty((segment.n_tokens, self._n_embd), np.float32)
                    embd = self._encode(segment, lane.embd_buffer, stats)
                t0 = time.perf_counter()
                self._decode_plain(lane, None, embd[: segment.n_tokens], n_past, seq_id)
                stats.prefill_s += time.perf_counter() - t0
                segment.embd = None
            else:
                self._eval_chunk(lane, segment.chunks[0], n_past, seq_id)
            n_past += segment.n_tokens
        t0 = time.perf_counter()
        llama_cpp.llama_synchronize(lane.ctx)  # so that prefill_s holds the GPU's prefill time
        stats.prefill_s += time.perf_counter() - t0
        return n_past

    def _decode_plain(
        self,
        lane: _Lane,
        tokens: list[int] | None,
        embd: np.ndarray | None,
        n_past: int,
        seq_id: int,
    ) -> None:
        """Evaluate tokens or embeddings into one sequence, no outputs, ``n_batch`` at a time."""
        batch = lane.batch
        total = len(tokens) if tokens is not None else embd.shape[0]
        for start in range(0, total, batch.capacity):
            n = min(batch.capacity, total - start)
            batch.pos[:n] = np.arange(n_past + start, n_past + start + n, dtype=np.int32)
            batch.seq[:n] = seq_id
            batch.logits[:n] = 0
            if tokens is not None:
                batch.token[:n] = tokens[start : start + n]
                struct = batch.as_tokens(n)
            else:
                struct = batch.as_embeddings(embd[start:], n)
            status = llama_cpp.llama_decode(lane.ctx, struct)
            if status != 0:
                raise EngineError(f"prefill decode failed (status {status})")

    def _eval_chunk(self, lane: _Lane, chunk: object, n_past: int, seq_id: int) -> None:
        """A chunk mtmd must place itself (M-RoPE positions, non-causal attention, audio)."""
        t0 = time.perf_counter()
        new_n_past = llama_cpp.llama_pos(n_past)
        with self._clip_lock:
            status = mtmd.mtmd_helper_eval_chunk_single(
                self._mtmd,
                lane.ctx,
                chunk,
                n_past,
                seq_id,
                self.settings.n_batch,
                False,
                ctypes.byref(new_n_past),
            )
        if status != 0:
            raise EngineError(f"prefill decode failed (status {status})")
        lane.stats.prefill_s += time.perf_counter() - t0

    # -- all sequences one step ---------------------------------------------------------------

    def _step(self, lane: _Lane, active: list[_Sequence]) -> list[_Frame]:
        """Feed every active sequence its pending tokens, sample one token each."""
        t0 = time.perf_counter()
        batch = lane.batch
        capacity = batch.capacity
        finished: list[_Frame] = []
        outputs: list[tuple[_Sequence, int]] = []
        n = 0
        # In seq-id order: with one KV stream per sequence llama.cpp puts only runs of
        # consecutive seq ids into one ubatch (ids are handed out lowest first).
        most = self._decode_group(len(active))
        for seq in sorted(active, key=_seq_id):
            if len(outputs) == most:
                self._decode_and_sample(lane, n, outputs, active, finished)
                outputs, n = [], 0
            tokens = seq.pending
            start = 0
            while start < len(tokens):
                if n == capacity:
                    self._decode_and_sample(lane, n, outputs, active, finished)
                    outputs, n = [], 0
                take = min(capacity - n, len(tokens) - start)
                batch.token[n : n + take] = tokens[start : start + take]
                batch.pos[n : n + take] = np.arange(
                    seq.position + start, seq.position + start + take, dtype=np.int32
                )
                batch.seq[n : n + take] = seq.seq_id
                batch.logits[n : n + take] = 0
                start += take
                n += take
                if start == len(tokens):
                    batch.logits[n - 1] = 1
                    outputs.append((seq, n - 1))
            seq.position += len(tokens)
            seq.pending = []
        self._decode_and_sample(lane, n, outputs, active, finished)
        lane.stats.decode_s += time.perf_counter() - t0
        return finished

    def _decode_group(self, n_active: int) -> int:
        """Most sequences per ``llama_decode`` this step.

        Auto (cuBLAS build, -8): groups of 8 while that means at most two calls; measured on
        an H100, 2 x 8 sequences took 2 x 13 ms against 24 ms in one dequantizing call, but
        6 x 8 took 78 ms against 33 ms.
        """
        most = self._max_decode_seqs
        if most < 0:
            return -most if n_active <= -2 * most else n_active
        return most or n_active

    def _decode_and_sample(
        self,
        lane: _Lane,
        n: int,
        outputs: list[tuple[_Sequence, int]],
        active: list[_Sequence],
        finished: list[_Frame],
    ) -> None:
        if n == 0:
            return
        status = llama_cpp.llama_decode(lane.ctx, lane.batch.as_tokens(n))
        lane.stats.decode_calls += 1
        if status != 0:
            raise EngineError(f"llama_decode failed (status {status})")
        if not outputs:
            return
        if self.settings.temperature <= 0:
            # Greedy for all outputs at once: the logits of the outputs lie in batch order.
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits(lane.ctx), shape=(len(outputs), self._n_vocab)
            )
            if self._eog.size:
                logits[:, self._eog] = -np.inf
            tokens = logits.argmax(axis=1).tolist()
        else:
            tokens = [
                llama_cpp.llama_sampler_sample(seq.sampler, lane.ctx, index)
                for seq, index in outputs
            ]
        for (seq, _), token in zip(outputs, tokens):
            if self._accept(seq, token):
                active.remove(seq)
                if self._finish(lane, seq):
                    finished.append(seq.frame)

    def _accept(self, seq: _Sequence, token: int) -> bool:
        """Take a sampled token; True when the answer is complete."""
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return True
        seq.generated.append(token)
        seq.text += self._piece(token)
        if self.settings.stop and self._cut_at_stop(seq):
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

    def _finish(self, lane: _Lane, seq: _Sequence) -> bool:
        """Free the sequence; True when its frame has all its answers."""
        llama_cpp.llama_memory_seq_rm(lane.memory, seq.seq_id, -1, -1)
        heapq.heappush(lane.free_seq_ids, seq.seq_id)
        self._free_sampler(seq)
        frame = seq.frame
        n_prompt = frame.prefix_tokens + len(self._suffix_tokens[seq.index])
        frame.answers[seq.index] = Answer(
            question=self.questions[seq.index],
            text=seq.text.decode("utf-8", errors="replace").strip(),
            prompt_tokens=n_prompt,
            completion_tokens=len(seq.generated),
            latency_ms=(time.perf_counter() - frame.started_s) * 1000.0,
        )
        lane.stats.prompt_tokens += n_prompt
        lane.stats.completion_tokens += len(seq.generated)
        frame.open_sequences -= 1
        return frame.open_sequences == 0

    # -- small helpers ------------------------------------------------------------------------

    def _new_sampler(self) -> object:
        """A sampler chain for temperature > 0 (greedy needs none: one argmax per step)."""
        s = self.settings
        if s.temperature <= 0:
            return None
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if self._eog.size:
            biases = (llama_cpp.llama_logit_bias * self._eog.size)(
                *(llama_cpp.llama_logit_bias(int(t), -float("inf")) for t in self._eog)
            )
            llama_cpp.llama_sampler_chain_add(
                chain,
                llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, self._eog.size, biases),
            )
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(s.seed))
        return chain

    @staticmethod
    def _free_sampler(seq: _Sequence) -> None:
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.sampler = None

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

    def _error_answers(self, reason: str, asked: Sequence[int]) -> list[Answer]:
        return [Answer(question=self.questions[i], text="", error=reason) for i in asked]


class _Source(Generic[Tag]):
    """Prepared frames for the lanes: pulls jobs and keeps ``ahead`` of them being prepared.

    Shared by the lanes' threads; one of them at a time pulls from ``jobs``.
    """

    def __init__(self, engine: Engine, jobs: Iterator[tuple[Tag, np.ndarray]], ahead: int) -> None:
        self._engine = engine
        self._jobs = jobs
        self._ahead = ahead
        self._pending: deque[Future] = deque()
        self._exhausted = False
        self._stopped = False
        self._lock = threading.Lock()

    def take(self, block: bool, fits: Callable[[_Frame], bool]) -> object:
        """The next prepared ``(frame, failed)`` pair, if ``fits`` takes its frame.

        Returns ``None`` when none is ready (without ``block``) or the next does not fit,
        and ``_END`` when there are no more (or the source was stopped).
        """
        while True:
            if not self._lock.acquire(blocking=block):
                return None  # another lane is pulling jobs: do not stall this one's steps
            try:
                if self._stopped:
                    return _END
                self._top_up()
                if not self._pending:
                    return _END
                head = self._pending[0]
                if head.done():
                    frame, failed = item = head.result()
                    if failed is None and not fits(frame):
                        return None
                    self._pending.popleft()
                    self._top_up()
                    return item
            finally:
                self._lock.release()
            if not block:
                return None
            t0 = time.perf_counter()
            futures_wait([head])
            with self._lock:
                self._engine._stats.wait_s += time.perf_counter() - t0

    def _top_up(self) -> None:
        """Pull jobs until ``ahead`` frames are being prepared (the lock is held)."""
        while not self._exhausted and len(self._pending) < self._ahead:
            t0 = time.perf_counter()
            job = next(self._jobs, None)
            self._engine._stats.wait_s += time.perf_counter() - t0
            if job is None:
                self._exhausted = True
            else:
                self._pending.append(self._engine._submit(*job))

    def stop(self) -> None:
        """Make every ``take`` answer ``_END`` from now on."""
        with self._lock:
            self._stopped = True

    def close(self) -> None:
        """Free the frames prepared but never taken."""
        while self._pending:
            future = self._pending.popleft()
            try:
                frame, _ = future.result()
            except Exception:  # noqa: BLE001, S112  (already raised on a lane, or tearing down)
                continue
            if frame is not None:
                self._engine._free_chunks(frame)


@dataclass(frozen=True)
class _Failure:
    """An exception raised on a lane's thread, to re-raise on the caller's."""

    error: BaseException


_END = object()  # no more frames
_LANE_DONE = object()  # a lane's thread has ended


def _seq_id(seq: _Sequence) -> int:
    return seq.seq_id


def _flash_attn_type(setting: str, n_gpu_layers: int) -> int:
    on = setting == "on" or (
        setting == "auto" and n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload()
    )
    return llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if on else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


_NATIVE_LOG = logging.getLogger("pipeline.llama_cpp")
# ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line's level.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = logging.DEBUG


@llama_cpp.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    if level != 5:
        _last_level = _LEVELS.get(level, logging.DEBUG)
    if not _NATIVE_LOG.isEnabledFor(_last_level):
        return
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        _NATIVE_LOG.log(_last_level, message)


def _route_native_logs() -> None:
    """Send llama.cpp's and mtmd's console chatter to Python logging (DEBUG unless a problem)."""
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_log_set(_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(_log_callback, ctypes.c_void_p(0))
