"""The decode scheduler: frames in, answers out, many sequences decoded together.

How a frame is answered:

1. A background thread prepares the frame (:class:`~pipeline.caption.engine.vision.Vision`:
   tiling and image preprocessing) and, on a GPU, CLIP-encodes it (``overlap_clip``), while
   the calling thread keeps the GPU busy with other frames (``prepare_ahead``).
2. On admission the prompt's text before the image and the image's embeddings are evaluated
   into one KV-cache sequence, in batches of ``n_batch`` tokens.
3. That sequence is copied (``llama_memory_seq_cp``) to one sequence per question; each
   question evaluates only its own tokens on top. By default every sequence has its own KV
   stream (``kv_unified=False``): the copy is a device-side copy of the stream, and each
   sequence's attention and KQ mask cover only its own cells.
4. All active sequences of all frames in flight are decoded together, one token each per
   step (in groups of ``max_decode_seqs``), ordered by sequence id so that llama.cpp puts
   them into one ubatch; greedy tokens are picked for all of them with one ``argmax`` over the
   logits. A sequence ends with a reason (``stop`` or ``length``), frees its cells and slot,
   and a waiting frame fills them (continuous batching).

On a GPU the frames in flight are split over ``lanes``: llama.cpp contexts on the one loaded
model, each driven by its own thread, so that one lane's kernels run while another's host side
prepares its next call (graph building, input copies) and the GPU is never left waiting.

``parallel=1`` with one question per frame is the plain one-at-a-time path; greedy answers do
not depend on how sequences are batched or on the lanes (tests hold this).
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import llama_cpp
import numpy as np

from pipeline.caption.engine.native import (
    Lane,
    TextModel,
    cublas_build,
    default_threads,
    devices,
    flash_attn_type,
    free_lane,
    max_parallel_sequences,
    route_native_logs,
    usable_cores,
)
from pipeline.caption.engine.records import (
    Answer,
    AnswerTrace,
    EngineError,
    EngineSettings,
    EngineStats,
    Question,
)
from pipeline.caption.engine.source import END, FrameSource
from pipeline.caption.engine.vision import FrameImage, Vision
from pipeline.caption.weights import quantized_weights
from pipeline.errors import ConfigError

_log = logging.getLogger(__name__)

Tag = TypeVar("Tag")
Job = tuple[Any, np.ndarray] | tuple[Any, np.ndarray, Sequence[int] | None]


@dataclass
class _Frame(Generic[Tag]):
    """A frame in the engine: prepared, then admitted to a lane until its answers are in."""

    tag: Tag
    image: FrameImage
    n_prefix: int  # text before the image + image tokens
    kv_need: int  # cells reserved in a unified cache (0 with streams)
    asked: tuple[int, ...]  # indices of the questions asked about this frame
    # The prefill's rows once CLIP ran ahead: text before the image, image, first question.
    rows: np.ndarray | None = None
    started_s: float = 0.0
    answers: list[Answer | None] = field(default_factory=list)
    open_sequences: int = 0


@dataclass
class _Sequence:
    """One question's slot: explicit state from admission to its finish reason."""

    seq_id: int
    frame: _Frame[Any]
    index: int  # the question's index
    position: int
    pending: list[int]
    sampler: object  # None: greedy
    generated: list[int] = field(default_factory=list)
    text: bytes = b""
    finish_reason: str = ""
    first_logits: np.ndarray | None = None


# A prepared job: the frame, or (when it cannot be captioned) its tag and error answers.
_Prepared = tuple[_Frame[Any] | None, tuple[Any, list[Answer]] | None]


@dataclass(frozen=True)
class _Failure:
    """An exception raised on a lane's thread, to re-raise on the caller's."""

    error: BaseException


_LANE_DONE = object()  # a lane's thread has ended


class Engine:
    """Loads one model pair once and answers many questions about many frames.

    Args:
        settings: Model files and runtime knobs.
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.questions: list[Question] = []
        self._stats = EngineStats()  # the preparing thread's and the caller's share
        self._model: TextModel | None = None
        self._vision: Vision | None = None
        self._lanes: list[Lane] = []
        self._worker: ThreadPoolExecutor | None = None
        self._overlap_clip = False
        self._prefix_tokens: list[int] = []
        self._suffix_tokens: list[list[int]] = []
        self._prefix_rows = np.zeros((0, 0), np.float32)  # their input embeddings
        self._suffix_rows: list[np.ndarray] = []
        self._n_threads = 0

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
        """Load the text model, its contexts (lanes) and the projector.

        Raises:
            EngineError: A file does not load or a context does not start.
            WeightsError: The projector does not suit the image layout.
        """
        s = self.settings
        route_native_logs()
        n_threads = self._n_threads = default_threads(s.n_threads)
        try:
            model = self._model = TextModel(s.text_model, s.n_gpu_layers)
            n_lanes = lane_count(s.lanes, model.on_gpu, s.max_questions, s.parallel)
            # Frames in flight per lane: parallel split as evenly as it goes.
            lane_parallel = [s.parallel // n_lanes + (i < s.parallel % n_lanes) for i in range(n_lanes)]
            if lane_parallel[0] * s.max_questions > max_parallel_sequences():
                raise EngineError(
                    f"engine.parallel x prompts = {lane_parallel[0] * s.max_questions} sequences per lane, "
                    f"more than llama.cpp's {max_parallel_sequences()}; lower engine.parallel"
                )
            flash_attn = flash_attn_type(s.flash_attn, model.on_gpu)
            for parallel in lane_parallel:
                n_ctx_seq = s.n_ctx * (parallel if s.kv_unified else 1)
                self._lanes.append(
                    model.new_lane(
                        parallel * s.max_questions,
                        n_ctx_seq,
                        s.kv_unified,
                        s.n_batch,
                        s.n_ubatch,
                        n_threads,
                        flash_attn,
                    )
                )
            self._vision = Vision(s.mmproj, s.image_layout, model, n_threads, flash_attn)
        except BaseException:
            self.close()
            raise
        # A frame must fit into any lane.
        self._kv_capacity = min(lane.kv_capacity for lane in self._lanes)
        self._eog = model.end_of_generation_ids() if s.ignore_eos else np.zeros(0, np.int64)
        self._grouped_auto = (
            s.max_decode_seqs is None and model.on_gpu and cublas_build() and quantized_weights(s.text_model)
        )
        if s.prepare_ahead > 0 and (model.on_gpu or n_threads < usable_cores()):
            # Not when llama.cpp's CPU threads take every core: a second busy thread then
            # stalls their OpenMP barriers and decoding gets many times slower.
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-prep")
            self._overlap_clip = s.overlap_clip and model.on_gpu

    def describe(self) -> str:
        """Where and how the loaded model runs, in words: the device (GPU names and layers on
        them, or the CPU), CPU threads and frames in flight."""
        if self._model is None:
            return "not loaded"
        gpus, cpu = devices()
        model = self._model
        if model.on_gpu:
            where = f"GPU {', '.join(gpus) or '(unnamed)'}, {model.gpu_layers} of {model.n_layer} layers on it"
        else:
            where = f"CPU ({cpu})" if cpu else "CPU"
        threads = f"{self._n_threads} CPU thread{'s' if self._n_threads != 1 else ''}"
        lanes = f" over {len(self._lanes)} lanes" if len(self._lanes) > 1 else ""
        return f"{where}, {threads}, {self.settings.parallel} frames in flight{lanes}"

    def close(self) -> None:
        """Free everything native the engine holds (safe to call twice)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._vision is not None:
            self._vision.close()
            self._vision = None
        for lane in self._lanes:
            free_lane(lane)
        self._lanes = []
        if self._model is not None:
            self._model.close()
            self._model = None

    def __enter__(self) -> Engine:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, jobs: Iterable[Job], questions: list[Question]) -> Iterator[tuple[Any, list[Answer]]]:
        """Answer every question about every frame.

        Args:
            jobs: ``(tag, rgb)`` pairs, or ``(tag, rgb, asked)`` with the indices into
                ``questions`` to ask about that frame (all when left out or ``None``); ``rgb``
                is an ``HxWx3`` uint8 array. The tag comes back with the frame's answers. The
                iterable is consumed on the calling thread (with several lanes, on theirs, one
                at a time).
            questions: Asked about every frame; at most ``settings.max_questions``.

        Yields:
            ``(tag, answers)`` per frame, one answer per asked question in question order, as
            frames finish (not necessarily in input order when ``parallel > 1``). A frame
            that cannot be processed (a bad array, too long a prompt) yields answers with
            ``error`` set.

        Raises:
            EngineError: The native decode failed; the engine cannot go on.
        """
        self._set_questions(questions)
        ahead = max(self.settings.prepare_ahead, 1) * len(self._lanes)
        source: FrameSource[Job, _Prepared] = FrameSource(iter(jobs), self._submit, self._release, self._stats, ahead)
        try:
            if len(self._lanes) == 1:
                yield from self._drive(self._lanes[0], source)
            else:
                yield from self._run_lanes(source)
        finally:
            source.close()

    def check_fits(self, questions: list[Question]) -> None:
        """Refuse, before any frame, settings under which no frame can be answered: even the
        smallest frame (its base tile alone) with these questions and ``max_tokens`` needs more
        KV cells than a lane has. A larger frame that does not fit still gets error answers.

        Raises:
            ConfigError: It cannot fit (one line: the cells needed and what to change).
            EngineError: :meth:`setup` was not called.
        """
        self._set_questions(questions)
        assert self._vision is not None
        kv_need = self._kv_need(self._vision.min_image_tokens, range(len(questions)))
        if kv_need > self._kv_capacity:
            raise ConfigError(
                f"no frame fits: even the smallest needs {kv_need} KV cells (image {self._vision.min_image_tokens}"
                f" + prompts + generation.max_tokens={self.settings.max_tokens}), more than the "
                f"{self._kv_capacity} of {self._kv_setting()}; raise model.n_ctx, lower generation.max_tokens or "
                "shorten the prompts"
            )

    def _set_questions(self, questions: list[Question]) -> None:
        """Take the questions of a run and tokenize their text around the image.

        Raises:
            EngineError: :meth:`setup` was not called, or a prompt does not tokenize.
            ValueError: Not between 1 and ``max_questions`` questions.
        """
        if self._model is None:
            raise EngineError("Engine.setup() was not called")
        if not 0 < len(questions) <= self.settings.max_questions:
            raise ValueError(
                f"{len(questions)} prompts given; between 1 and "
                f"{self.settings.max_questions} (settings.max_questions) allowed"
            )
        self.questions = list(questions)
        system, chat = self.settings.system_prompt, self.settings.chat_format
        self._prefix_tokens = self._model.tokenize(chat.split("", system)[0], add_special=True)
        self._suffix_tokens = [
            self._model.tokenize(chat.split(q.text, system)[1], add_special=False) for q in questions
        ]
        self._prefix_rows = self._model.token_rows(self._prefix_tokens)
        self._suffix_rows = [self._model.token_rows(tokens) for tokens in self._suffix_tokens]

    def _kv_need(self, n_image_tokens: int, asked: Iterable[int]) -> int:
        """KV cells a frame of ``n_image_tokens`` with the ``asked`` questions takes: with
        streams, the longest question's; in a unified cache, all of theirs."""
        n_prefix = len(self._prefix_tokens) + n_image_tokens
        suffixes = [len(self._suffix_tokens[i]) + self.settings.max_tokens for i in asked]
        return n_prefix + (sum(suffixes) if self.settings.kv_unified else max(suffixes))

    def _kv_setting(self) -> str:
        """The setting that sizes a frame's KV cells."""
        return "model.n_ctx x engine.parallel" if self.settings.kv_unified else "model.n_ctx"

    def _run_lanes(self, source: FrameSource[Job, _Prepared]) -> Iterator[tuple[Any, list[Answer]]]:
        """Drive every lane on its own thread; hand their finished frames to the caller."""
        results: queue.Queue[object] = queue.Queue()
        stop = threading.Event()

        def work(lane: Lane) -> None:
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
                    yield item  # type: ignore[misc]
        finally:
            stop.set()
            source.stop()
            for thread in threads:
                thread.join()

    def _drive(self, lane: Lane, source: FrameSource[Job, _Prepared]) -> Iterator[tuple[Any, list[Answer]]]:
        """One lane's loop: admit prepared frames while it has room, step its sequences."""
        active: list[_Sequence] = []
        try:
            while True:
                # Admit prepared frames while slots are free; wait for one only when nothing
                # else could use the GPU meanwhile.
                while self._has_room(lane):
                    item = source.take(block=not active, fits=lambda p: self._fits(lane, p))
                    if item is None:
                        break
                    if item is END:
                        if not active:
                            return
                        break
                    frame, failed = cast(_Prepared, item)
                    if failed is not None:
                        yield failed
                        continue
                    assert frame is not None  # a prepared job is a frame or its failure
                    started, finished = self._admit(lane, frame)
                    active.extend(started)
                    for done in finished:
                        yield self._complete(lane, done)
                if not active:
                    continue
                for frame in self._step(lane, active):
                    yield self._complete(lane, frame)
        finally:
            self._abandon(lane, active)

    def _complete(self, lane: Lane, frame: _Frame[Any]) -> tuple[Any, list[Answer]]:
        lane.kv_reserved -= frame.kv_need
        return frame.tag, [a for a in frame.answers if a is not None]

    def _abandon(self, lane: Lane, active: list[_Sequence]) -> None:
        """Free what an interrupted lane still holds."""
        for seq in active:
            lane.forget(seq.seq_id)
            self._free_sampler(seq)
            heapq.heappush(lane.free_seq_ids, seq.seq_id)
        active.clear()
        lane.kv_reserved = 0

    # -- one frame in -------------------------------------------------------------------------

    def _submit(self, job: Job) -> Future[_Prepared]:
        tag, rgb, *rest = job
        asked_in = rest[0] if rest else None
        asked = tuple(range(len(self.questions))) if asked_in is None else tuple(asked_in)
        if not asked or not set(asked) <= set(range(len(self.questions))):
            raise ValueError(f"asked question indices {list(asked)} do not name the questions")
        if self._worker is None:
            future: Future[_Prepared] = Future()
            future.set_result(self._prepare(tag, rgb, asked, encode=False))
            return future
        return self._worker.submit(self._prepare, tag, rgb, asked, self._overlap_clip)

    def _prepare(self, tag: Any, rgb: np.ndarray, asked: tuple[int, ...], encode: bool) -> _Prepared:
        """Prepare a frame's image (and with ``encode`` run CLIP on it); a frame that cannot
        be captioned becomes error answers. Runs on the background thread when there is one."""
        assert self._vision is not None
        try:
            image = self._vision.tokenize(rgb, self._stats)
        except ValueError as error:
            return None, (tag, self._error_answers(str(error), asked))
        n_prefix = len(self._prefix_tokens) + image.n_tokens
        kv_need = self._kv_need(image.n_tokens, asked)
        if kv_need > self._kv_capacity:
            self._vision.free(image)
            reason = (
                f"frame needs {kv_need} KV cells (image {image.n_tokens} + prompts + max_tokens), "
                f"more than the {self._kv_capacity} of {self._kv_setting()}"
            )
            return None, (tag, self._error_answers(reason, asked))
        frame = _Frame(tag, image, n_prefix, kv_need if self.settings.kv_unified else 0, asked)
        frame.answers = [None] * len(self.questions)
        if encode:
            try:
                out = np.empty((self._n_prompt(frame, frame.asked[0]), self._model_n_embd()), np.float32)
                frame.rows = self._prefill_rows(frame, out, self._stats)
            except BaseException:
                self._vision.free(image)
                raise
        return frame, None

    def _release(self, prepared: _Prepared) -> None:
        frame, _ = prepared
        if frame is not None and self._vision is not None:
            self._vision.free(frame.image)

    def _has_room(self, lane: Lane) -> bool:
        return len(lane.free_seq_ids) >= len(self.questions)

    def _fits(self, lane: Lane, prepared: _Prepared) -> bool:
        frame, _ = prepared
        return frame is None or lane.kv_reserved + frame.kv_need <= lane.kv_capacity

    def _admit(self, lane: Lane, frame: _Frame[Any]) -> tuple[list[_Sequence], list[_Frame[Any]]]:
        """Prefill the frame with its first question, then start the other questions on a copy.

        Returns the new sequences still generating and, rarely, frames already complete (an
        answer can end at its first token).
        """
        frame.started_s = time.perf_counter()
        lane.kv_reserved += frame.kv_need
        seq_ids = [heapq.heappop(lane.free_seq_ids) for _ in frame.asked]
        first_index = frame.asked[0]
        first = _Sequence(
            seq_ids[0], frame, first_index, self._n_prompt(frame, first_index), [],
            self._new_sampler(),
        )
        try:
            last_row = self._prefill(lane, frame, first.seq_id)
        except BaseException:
            lane.kv_reserved -= frame.kv_need
            lane.forget(first.seq_id)
            self._free_sampler(first)
            for seq_id in seq_ids:
                heapq.heappush(lane.free_seq_ids, seq_id)
            raise
        finally:
            self._release((frame, None))
        # The other questions share the text and image: copy them, not the first question.
        for seq_id in seq_ids[1:]:
            llama_cpp.llama_memory_seq_cp(lane.memory, first.seq_id, seq_id, -1, -1)
            llama_cpp.llama_memory_seq_rm(lane.memory, seq_id, frame.n_prefix, -1)
        frame.open_sequences = len(seq_ids)
        lane.stats.frames += 1
        lane.stats.image_tokens += frame.image.n_tokens * len(seq_ids)
        started: list[_Sequence] = [first]
        finished: list[_Frame[Any]] = []
        self._sample(lane, [(first, last_row)], started, finished)  # before any decode overwrites the logits
        others = [
            _Sequence(seq_id, frame, i, frame.n_prefix, list(self._suffix_tokens[i]), self._new_sampler())
            for i, seq_id in zip(frame.asked[1:], seq_ids[1:])
        ]
        if self.settings.kv_unified:
            return started + others, finished  # their questions' tokens go into the next step's batch
        # One stream per sequence: llama.cpp splits a batch into ubatches with equally many
        # tokens per stream, so the questions' tokens next to other sequences' single tokens
        # would cost a forward pass per token; evaluate this frame's questions now, together
        # (one call: a ubatch of their common length, then the rest of the longer ones).
        asking = list(others)
        finished += self._step(lane, asking)
        return started + asking, finished

    def _n_prompt(self, frame: _Frame[Any], index: int) -> int:
        """Tokens of the frame's prompt for question ``index``: text, image and question."""
        return frame.n_prefix + len(self._suffix_tokens[index])

    def _prefill_rows(self, frame: _Frame[Any], out: np.ndarray, stats: EngineStats) -> np.ndarray:
        """CLIP-encode the frame into its prefill rows (the first ``_n_prompt`` rows of
        ``out``): the text before the image, the image and the first asked question, all as
        input embeddings, so that one embedding pass evaluates the three."""
        assert self._vision is not None
        n_text, n_image = len(self._prefix_tokens), frame.image.n_tokens
        rows = out[: self._n_prompt(frame, frame.asked[0])]
        rows[:n_text] = self._prefix_rows
        self._vision.encode(frame.image, rows[n_text : n_text + n_image], stats)
        rows[n_text + n_image :] = self._suffix_rows[frame.asked[0]]
        return rows

    def _prefill(self, lane: Lane, frame: _Frame[Any], seq_id: int) -> int:
        """Evaluate the frame's prefill rows into ``seq_id``; returns the batch row of the
        last one, whose logits are kept."""
        rows = frame.rows
        frame.rows = None
        if rows is None:  # CLIP runs now, into the lane's scratch rows
            n = self._n_prompt(frame, frame.asked[0])
            if lane.embd_buffer.shape[0] < n:
                lane.embd_buffer = np.empty((n, self._model_n_embd()), np.float32)
            rows = self._prefill_rows(frame, lane.embd_buffer, lane.stats)
        t0 = time.perf_counter()
        last_row = self._decode_rows(lane, rows, 0, seq_id)
        llama_cpp.llama_synchronize(lane.ctx)  # so that prefill_s holds the GPU's prefill time
        lane.stats.prefill_s += time.perf_counter() - t0
        return last_row

    @staticmethod
    def _decode_rows(lane: Lane, rows: np.ndarray, n_past: int, seq_id: int) -> int:
        """Evaluate embedding rows into one sequence, ``n_batch`` at a time; only the last
        row's logits are kept. Returns that row's index in the last batch."""
        batch = lane.batch
        total = rows.shape[0]
        n = 0
        for start in range(0, total, batch.capacity):
            n = min(batch.capacity, total - start)
            batch.pos[:n] = np.arange(n_past + start, n_past + start + n, dtype=np.int32)
            batch.seq[:n] = seq_id
            batch.logits[:n] = 0
            batch.logits[n - 1] = start + n == total
            status = llama_cpp.llama_decode(lane.ctx, batch.as_embeddings(rows[start:], n))
            if status != 0:
                raise EngineError(f"prefill decode failed (status {status})")
            lane.stats.prefill_calls += 1
        return n - 1

    # -- all sequences one step ---------------------------------------------------------------

    def _step(self, lane: Lane, active: list[_Sequence]) -> list[_Frame[Any]]:
        """Feed every active sequence its pending tokens, sample one token each."""
        t0 = time.perf_counter()
        batch = lane.batch
        capacity = batch.capacity
        finished: list[_Frame[Any]] = []
        outputs: list[tuple[_Sequence, int]] = []
        n = 0
        # In seq-id order: with one KV stream per sequence llama.cpp puts only runs of
        # consecutive seq ids into one ubatch (ids are handed out lowest first).
        most = decode_group(self.settings.max_decode_seqs, self._grouped_auto, len(active))
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
                batch.pos[n : n + take] = np.arange(seq.position + start, seq.position + start + take, dtype=np.int32)
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

    def _decode_and_sample(
        self,
        lane: Lane,
        n: int,
        outputs: list[tuple[_Sequence, int]],
        active: list[_Sequence],
        finished: list[_Frame[Any]],
    ) -> None:
        if n == 0:
            return
        lane.decode(n, "llama_decode")
        lane.stats.decode_calls += 1
        self._sample(lane, outputs, active, finished)

    def _sample(
        self,
        lane: Lane,
        outputs: list[tuple[_Sequence, int]],
        active: list[_Sequence],
        finished: list[_Frame[Any]],
    ) -> None:
        """Sample a token for each output (sequence, batch row) of the last decode; a
        sequence that completes leaves ``active`` and its frame, once whole, joins ``finished``."""
        if not outputs:
            return
        trace = self.settings.trace
        if self.settings.temperature <= 0:
            # Greedy for all outputs at once: the logits of the outputs lie in batch order.
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits(lane.ctx), shape=(len(outputs), self._model_n_vocab())
            )
            if trace:
                self._keep_first_logits(outputs, lambda row, _: logits[row])
            if self._eog.size:
                logits[:, self._eog] = -np.inf
            tokens = logits.argmax(axis=1).tolist()
        else:
            if trace:
                self._keep_first_logits(
                    outputs,
                    lambda _, index: np.ctypeslib.as_array(
                        llama_cpp.llama_get_logits_ith(lane.ctx, index), shape=(self._model_n_vocab(),)
                    ),
                )
            tokens = [llama_cpp.llama_sampler_sample(seq.sampler, lane.ctx, index) for seq, index in outputs]
        for (seq, _), token in zip(outputs, tokens):
            if self._accept(seq, token):
                active.remove(seq)
                if self._finish(lane, seq):
                    finished.append(seq.frame)

    @staticmethod
    def _keep_first_logits(outputs: list[tuple[_Sequence, int]], logits_of: Any) -> None:
        for row, (seq, index) in enumerate(outputs):
            if not seq.generated and seq.first_logits is None:
                seq.first_logits = np.array(logits_of(row, index), dtype=np.float32)

    def _accept(self, seq: _Sequence, token: int) -> bool:
        """Take a sampled token; True when the answer is complete (its reason set)."""
        assert self._model is not None
        if self._model.is_eog(token):
            seq.finish_reason = "stop"
            return True
        seq.generated.append(token)
        seq.text += self._model.piece(token)
        if self.settings.stop and self._cut_at_stop(seq):
            seq.finish_reason = "stop"
            return True
        if len(seq.generated) >= self.settings.max_tokens:
            seq.finish_reason = "length"
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

    def _finish(self, lane: Lane, seq: _Sequence) -> bool:
        """Free the sequence; True when its frame has all its answers."""
        lane.forget(seq.seq_id)
        heapq.heappush(lane.free_seq_ids, seq.seq_id)
        self._free_sampler(seq)
        frame = seq.frame
        n_prompt = self._n_prompt(frame, seq.index)
        trace = None
        if self.settings.trace and seq.first_logits is not None:
            trace = AnswerTrace(tuple(seq.generated), seq.first_logits)
        frame.answers[seq.index] = Answer(
            question=self.questions[seq.index],
            text=seq.text.decode("utf-8", errors="replace").strip(),
            prompt_tokens=n_prompt,
            completion_tokens=len(seq.generated),
            latency_ms=(time.perf_counter() - frame.started_s) * 1000.0,
            finish_reason=seq.finish_reason,
            trace=trace,
        )
        lane.stats.prompt_tokens += n_prompt
        lane.stats.completion_tokens += len(seq.generated)
        frame.open_sequences -= 1
        return frame.open_sequences == 0

    # -- small helpers ------------------------------------------------------------------------

    def _model_n_embd(self) -> int:
        assert self._model is not None
        return int(self._model.n_embd)

    def _model_n_vocab(self) -> int:
        assert self._model is not None
        return int(self._model.n_vocab)

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
                chain, llama_cpp.llama_sampler_init_logit_bias(self._model_n_vocab(), self._eog.size, biases)
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

    def _error_answers(self, reason: str, asked: Sequence[int]) -> list[Answer]:
        return [Answer(question=self.questions[i], text="", error=reason) for i in asked]


def decode_group(setting: int | None, grouped_auto: bool, n_active: int) -> int:
    """Most sequences per ``llama_decode`` in a decode step of ``n_active`` sequences:
    ``engine.max_decode_seqs`` as set (0: all at once), or for ``None`` (auto) groups of 8
    while that means at most two calls where ``grouped_auto`` (a ``GGML_CUDA_FORCE_CUBLAS``
    build, layers on the GPU, quantized text weights), else all at once.

    Measured on an H100, 2 x 8 sequences took 2 x 13 ms against 24 ms in one dequantizing
    call, but 6 x 8 took 78 ms against 33 ms.
    """
    if setting is None:
        setting = 8 if grouped_auto and n_active <= 16 else 0
    return setting or n_active


def lane_count(setting: int | None, on_gpu: bool, max_questions: int, parallel: int) -> int:
    """Lanes (llama.cpp contexts, a thread each) for the engine: ``engine.lanes``, else 2 on a
    GPU and 1 on the CPU; at most one per frame in flight.

    On a GPU, one lane when frames may be asked several questions: there two lanes hung on an
    H200 in 5 runs of 6 (every thread waiting on the GPU, no progress; with a unified KV cache,
    a CUDA "illegal instruction" instead; also with ``GGML_CUDA_PDL=0``). The one run that
    finished, with CUDA graphs off (``GGML_CUDA_DISABLE_GRAPHS=1``), was slower than one lane
    (4.49 against 4.80-5.10 frames/s; benchmarks/NOTES-gpu.md, sessions 5 and 6). A setting
    above 1 is then lowered, with a warning.
    """
    lanes = max(1, min(setting or (2 if on_gpu else 1), parallel))
    if on_gpu and max_questions > 1 and lanes > 1:
        if setting:
            _log.warning(
                "engine.lanes=%d lowered to 1: with several prompts per frame, more lanes hung on "
                "a GPU (README, engine settings)", setting,
            )
        return 1
    return lanes


def _seq_id(seq: _Sequence) -> int:
    return seq.seq_id
