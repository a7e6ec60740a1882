"""The decode scheduler: frames in, answers out, many sequences decoded together.

How a frame is answered:

1. A preparing thread prepares the frame (:class:`~pipeline.caption.engine.vision.Vision`:
   tiling and image preprocessing) and, on a GPU, CLIP-encodes it (``overlap_clip``), while
   the lanes keep the GPU busy with other frames (``prepare_ahead``). On a GPU there are
   ``clip_threads`` of them (by default one per lane), each encoding on its own set of mtmd
   contexts, so that the lanes do not wait for one CLIP encoder (BENCHMARKS.md, session 14).
2. On admission the prompt's text before the image and the image's embeddings are evaluated
   into one KV-cache sequence, in batches of ``n_batch`` tokens.
3. That sequence is copied (``llama_memory_seq_cp``) to one sequence per question; each
   question evaluates only its own tokens on top. By default every sequence has its own KV
   stream (``kv_unified=False``): the copy is a device-side copy of the stream, and each
   sequence's attention and KQ mask cover only its own cells.
4. All active sequences of all frames in flight are decoded together, one token each per
   step (in groups of ``max_decode_seqs``), ordered by sequence id so that llama.cpp puts
   them into one ubatch; greedy tokens are picked for all of them with one ``argmax`` over the
   logits (a question with a JSON Schema among the tokens its grammar allows: :mod:`.grammar`).
   A sequence ends with a typed reason (:mod:`.sequence`), frees its cells and slot,
   and a waiting frame fills them (continuous batching).

On a GPU the frames in flight are split over ``lanes`` (``engine.lanes``; by default
``engine.lanes_gpu``, 1 with several prompts unless set): llama.cpp contexts on the one loaded model, each
driven by its own thread, so that one lane's kernels run while another's host side samples and
prepares its next call. Frames are dealt to the lanes in turn (:class:`.source.FrameSource`),
not to whichever asks first, so each lane batches the same sequences in every run, and a GPU,
whose kernels round differently for other batch sizes, gives the same greedy answers run to run
(BENCHMARKS.md, session 11).

The lanes and their threads are in :mod:`.lanes`; a sequence's state, token picking and stops
in :mod:`.sequence`.

``parallel=1`` with one question per frame is the plain one-at-a-time path; on the CPU greedy
answers do not depend on how sequences are batched or on the lanes (tests hold this).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import llama_cpp
import numpy as np

from pipeline.caption.engine.frames import FramePreparation, Prepared
from pipeline.caption.engine.lanes import clip_thread_count, decode_group, open_lanes, run_lanes
from pipeline.caption.engine.native import (
    Lane,
    TextModel,
    cublas_build,
    default_threads,
    devices,
    flash_attn_type,
    free_lane,
    route_native_logs,
    usable_cores,
)
from pipeline.caption.engine.prompts import Prompts
from pipeline.caption.engine.records import Answer, EngineError, EngineSettings, EngineStats, Question
from pipeline.caption.engine.sequence import DecodeSequence, FrameInFlight, Sampling
from pipeline.caption.engine.source import END, FrameSource
from pipeline.caption.engine.vision import Vision
from pipeline.caption.weights import quantized_weights

Job = tuple[Any, np.ndarray] | tuple[Any, np.ndarray, Sequence[int] | None]

_log = logging.getLogger(__name__)


class Engine:
    """Loads one model pair once and answers many questions about many frames.

    Args:
        settings: Model files and runtime knobs.
    """

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.questions: list[Question] = []
        self._stats = EngineStats()  # the caller's share (waiting for frames)
        self._prepared_stats = EngineStats()  # the preparing threads' share
        self._prepared_lock = threading.Lock()
        self.clip_threads = 0
        self._model: TextModel | None = None
        self._vision: Vision | None = None
        self._lanes: list[Lane] = []
        self._worker: ThreadPoolExecutor | None = None
        self._overlap_clip = False
        self._prompts: Prompts  # the run's questions, from _set_questions on
        self._n_threads = 0

    @property
    def stats(self) -> EngineStats:
        """Where the time went, summed over the lanes; assign ``EngineStats()`` to reset."""
        total = self._stats + self._prepared_stats
        for lane in self._lanes:
            total = total + lane.stats
        return total

    @stats.setter
    def stats(self, value: EngineStats) -> None:
        self._stats = value
        self._prepared_stats = EngineStats()
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
            flash_attn = flash_attn_type(s.flash_attn, model.on_gpu)
            open_lanes(model, s, n_threads, flash_attn, self._lanes)
            self.clip_threads = clip_thread_count(s.clip_threads, model.on_gpu, len(self._lanes))
            self._vision = Vision(s.mmproj, s.image_layout, model, n_threads, flash_attn, self.clip_threads)
        except BaseException:
            self.close()
            raise
        # A frame must fit into any lane.
        self._frames = FramePreparation(
            self._vision, min(lane.kv_capacity for lane in self._lanes), s, int(model.n_embd)
        )
        self._sampling = Sampling(s, model)
        self._grouped_auto = (
            s.max_decode_seqs is None and model.on_gpu and cublas_build() and quantized_weights(s.text_model)
        )
        if s.prepare_ahead > 0 and (model.on_gpu or n_threads < usable_cores()):
            # Not when llama.cpp's CPU threads take every core: a second busy thread then
            # stalls their OpenMP barriers and decoding gets many times slower.
            self._overlap_clip = s.overlap_clip and model.on_gpu
            workers = self.clip_threads if self._overlap_clip else 1
            self._worker = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine-prep")

    @property
    def lanes(self) -> int:
        """The llama.cpp contexts (lanes) the loaded engine runs; 0 before :meth:`setup`."""
        return len(self._lanes)

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
            ConfigError: A question's schema cannot constrain an answer.
            EngineError: The native decode failed; the engine cannot go on.
        """
        self._set_questions(questions)
        ahead = max(self.settings.prepare_ahead, 1) * len(self._lanes)
        source: FrameSource[Job, Prepared] = FrameSource(
            iter(jobs), self._submit, self._release, self._stats, ahead, len(self._lanes)
        )
        try:
            if len(self._lanes) == 1:
                yield from self._drive(self._lanes[0], 0, source)
            else:
                yield from run_lanes(self._lanes, lambda i, lane: self._drive(lane, i, source), source.stop)
        finally:
            source.close()

    def check_fits(self, questions: list[Question]) -> None:
        """Refuse, before any frame, settings under which no frame can be answered: even the
        smallest frame (its base tile alone) with any of these questions and ``max_tokens``
        needs more KV cells than a lane has. Each question fits or fails on its own: one that
        cannot fit even the smallest frame is logged and gets error answers, the others go on;
        a larger frame that does not fit a question gets an error answer to it.

        Raises:
            ConfigError: No question fits (one line: the cells needed and what to change), or
                a question's schema cannot constrain an answer (one line naming the prompt).
            EngineError: :meth:`setup` was not called.
        """
        self._set_questions(questions)
        for why in self._frames.check_fits(self._prompts):
            _log.warning("%s; its answers are errors, the other prompts go on", why)

    def _set_questions(self, questions: list[Question]) -> None:
        """Take the questions of a run: tokenize their text around the image, compile their schemas.

        Raises:
            ConfigError: A question's schema cannot constrain an answer.
            EngineError: :meth:`setup` was not called, or a prompt does not tokenize.
            ValueError: Not between 1 and ``max_questions`` questions.
        """
        if self._model is None:
            raise EngineError("Engine.setup() was not called")
        self._prompts = Prompts(self._model, self.settings, questions)
        self._sampling.set_questions(self._prompts.questions)
        self.questions = self._prompts.questions

    def _drive(
        self, lane: Lane, turn: int, source: FrameSource[Job, Prepared]
    ) -> Iterator[tuple[Any, list[Answer]]]:
        """One lane's loop: admit its prepared frames (those dealt to ``turn``) while it has
        room, step its sequences."""
        active: list[DecodeSequence] = []
        try:
            while True:
                # Admit the lane's frames while slots are free, waiting for one still being
                # prepared: then a lane's decode steps batch the same sequences in every run,
                # and a GPU, whose kernels round differently for other batch sizes, gives the
                # same greedy answers run to run.
                while self._has_room(lane):
                    item = source.take(turn, lambda p: self._fits(lane, p))
                    if item is None:
                        break
                    if item is END:
                        if not active:
                            return
                        break
                    frame, failed = cast(Prepared, item)
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

    def _complete(self, lane: Lane, frame: FrameInFlight[Any]) -> tuple[Any, list[Answer]]:
        lane.kv_reserved -= frame.kv_need
        return frame.tag, [a for a in frame.answers if a is not None]

    def _abandon(self, lane: Lane, active: list[DecodeSequence]) -> None:
        """Free what an interrupted lane still holds."""
        for seq in active:
            lane.forget(seq.seq_id)
            self._sampling.release(seq)
            heapq.heappush(lane.free_seq_ids, seq.seq_id)
        active.clear()
        lane.kv_reserved = 0

    # -- one frame in -------------------------------------------------------------------------

    def _submit(self, job: Job) -> Future[Prepared]:
        tag, rgb, *rest = job
        asked_in = rest[0] if rest else None
        asked = tuple(range(len(self.questions))) if asked_in is None else tuple(asked_in)
        if not asked or not set(asked) <= set(range(len(self.questions))):
            raise ValueError(f"asked question indices {list(asked)} do not name the questions")
        if self._worker is None:
            future: Future[Prepared] = Future()
            future.set_result(self._prepare(tag, rgb, asked, encode=False))
            return future
        return self._worker.submit(self._prepare, tag, rgb, asked, self._overlap_clip)

    def _prepare(self, tag: Any, rgb: np.ndarray, asked: tuple[int, ...], encode: bool) -> Prepared:
        stats = EngineStats()  # several threads may prepare: each adds its share when done
        try:
            return self._frames.prepare(self._prompts, tag, rgb, asked, encode, stats)
        finally:
            with self._prepared_lock:
                self._prepared_stats = self._prepared_stats + stats

    def _release(self, prepared: Prepared) -> None:
        if self._vision is not None:  # not yet closed
            self._frames.release(prepared)

    def _has_room(self, lane: Lane) -> bool:
        return len(lane.free_seq_ids) >= len(self.questions)

    def _fits(self, lane: Lane, prepared: Prepared) -> bool:
        frame, _ = prepared
        return frame is None or lane.kv_reserved + frame.kv_need <= lane.kv_capacity

    def _admit(self, lane: Lane, frame: FrameInFlight[Any]) -> tuple[list[DecodeSequence], list[FrameInFlight[Any]]]:
        """Prefill the frame with its first question, then start the other questions on a copy.

        Returns the new sequences still generating and, rarely, frames already complete (an
        answer can end at its first token).
        """
        frame.started_s = time.perf_counter()
        lane.kv_reserved += frame.kv_need
        seq_ids = [heapq.heappop(lane.free_seq_ids) for _ in frame.asked]
        first_index = frame.asked[0]
        n_prompt = self._prompts.n_prompt(frame, first_index)
        first = self._sampling.new_sequence(seq_ids[0], frame, first_index, n_prompt, [])
        try:
            last_row = self._prefill(lane, frame, first.seq_id)
        except BaseException:
            lane.kv_reserved -= frame.kv_need
            lane.forget(first.seq_id)
            self._sampling.release(first)
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
        started: list[DecodeSequence] = [first]
        finished: list[FrameInFlight[Any]] = []
        self._sample(lane, [(first, last_row)], started, finished)  # before any decode overwrites the logits
        others = [
            self._sampling.new_sequence(seq_id, frame, i, frame.n_prefix, list(self._prompts.suffix_tokens[i]))
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

    def _prefill(self, lane: Lane, frame: FrameInFlight[Any], seq_id: int) -> int:
        """Evaluate the frame's prefill rows into ``seq_id``; returns the batch row of the
        last one, whose logits are kept."""
        rows = frame.rows
        frame.rows = None
        if rows is None:  # CLIP runs now, into the lane's scratch rows
            assert self._vision is not None
            prompts = self._prompts
            n = prompts.n_prompt(frame, frame.asked[0])
            if lane.embd_buffer.shape[0] < n:
                lane.embd_buffer = np.empty((n, self._frames.n_embd), np.float32)
            rows = prompts.prefill_rows(frame, lane.embd_buffer, self._vision, lane.stats)
        t0 = time.perf_counter()
        last_row = lane.decode_embeddings(rows, 0, seq_id)
        llama_cpp.llama_synchronize(lane.ctx)  # so that prefill_s holds the GPU's prefill time
        lane.stats.prefill_s += time.perf_counter() - t0
        return last_row

    # -- all sequences one step ---------------------------------------------------------------

    def _step(self, lane: Lane, active: list[DecodeSequence]) -> list[FrameInFlight[Any]]:
        """Feed every active sequence its pending tokens, sample one token each."""
        t0 = time.perf_counter()
        batch = lane.batch
        capacity = batch.capacity
        finished: list[FrameInFlight[Any]] = []
        outputs: list[tuple[DecodeSequence, int]] = []
        n = 0
        # In seq-id order: with one KV stream per sequence llama.cpp puts only runs of
        # consecutive seq ids into one ubatch (ids are handed out lowest first).
        most = decode_group(self.settings.max_decode_seqs, self._grouped_auto, len(active))
        for seq in sorted(active, key=_seq_id):
            if len(outputs) == most:
                self._decode_and_sample(lane, n, outputs, active, finished)
                outputs, n = [], 0
            first = seq.position
            tokens = seq.take_pending()
            start = 0
            while start < len(tokens):
                if n == capacity:
                    self._decode_and_sample(lane, n, outputs, active, finished)
                    outputs, n = [], 0
                take = min(capacity - n, len(tokens) - start)
                batch.token[n : n + take] = tokens[start : start + take]
                batch.pos[n : n + take] = np.arange(first + start, first + start + take, dtype=np.int32)
                batch.seq[n : n + take] = seq.seq_id
                batch.logits[n : n + take] = 0
                start += take
                n += take
                if start == len(tokens):
                    batch.logits[n - 1] = 1
                    outputs.append((seq, n - 1))
        self._decode_and_sample(lane, n, outputs, active, finished)
        lane.stats.decode_s += time.perf_counter() - t0
        return finished

    def _decode_and_sample(
        self,
        lane: Lane,
        n: int,
        outputs: list[tuple[DecodeSequence, int]],
        active: list[DecodeSequence],
        finished: list[FrameInFlight[Any]],
    ) -> None:
        if n == 0:
            return
        lane.decode(n, "llama_decode")
        lane.stats.decode_calls += 1
        self._sample(lane, outputs, active, finished)

    def _sample(
        self,
        lane: Lane,
        outputs: list[tuple[DecodeSequence, int]],
        active: list[DecodeSequence],
        finished: list[FrameInFlight[Any]],
    ) -> None:
        """Sample a token for each output (sequence, batch row) of the last decode; a
        sequence that completes leaves ``active`` and its frame, once whole, joins ``finished``."""
        if not outputs:
            return
        tokens = self._sampling.pick(lane.ctx, outputs)
        for (seq, _), token in zip(outputs, tokens):
            if self._sampling.accept(seq, token):
                active.remove(seq)
                if self._finish(lane, seq):
                    finished.append(seq.frame)

    def _finish(self, lane: Lane, seq: DecodeSequence) -> bool:
        """Free the sequence; True when its frame has all its answers."""
        lane.forget(seq.seq_id)
        heapq.heappush(lane.free_seq_ids, seq.seq_id)
        self._sampling.release(seq)
        frame = seq.frame
        n_prompt = self._prompts.n_prompt(frame, seq.index)
        frame.answers[seq.index] = seq.answer(self.questions[seq.index], n_prompt, self.settings.trace)
        lane.stats.prompt_tokens += n_prompt
        lane.stats.completion_tokens += len(seq.generated)
        frame.open_sequences -= 1
        return frame.open_sequences == 0


def _seq_id(seq: DecodeSequence) -> int:
    return seq.seq_id
