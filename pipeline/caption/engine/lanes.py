"""Lanes: llama.cpp contexts on the one loaded model that share the frames in flight, how many
there are (how many CLIP encoders feed them, how many sequences go into one decode call), and
the threads that drive them (one each) while the caller takes their answers."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pipeline.caption.engine.native import Lane, TextModel, max_parallel_sequences
from pipeline.caption.engine.records import EngineError, EngineSettings

Item = TypeVar("Item")


def lane_count(setting: int | None, lanes_gpu: int, on_gpu: bool, max_questions: int, parallel: int) -> int:
    """Lanes (llama.cpp contexts, a thread each) for the engine: ``engine.lanes`` as set, else
    ``lanes_gpu`` on a GPU and 1 on the CPU (where llama.cpp's threads already take every
    core); at most one per frame in flight.

    Unset, a GPU engine whose frames may be asked several questions runs one lane: with three
    prompts two lanes were 12-16 % faster on the Mistral-7B shape (session 15) but 16-18 %
    slower on the Yi-34B shape, the default preset's (session 16: each lane's decode step reads
    all the weights; BENCHMARKS.md). ``engine.lanes=2`` asks for two.
    """
    default = lanes_gpu if on_gpu and max_questions == 1 else 1
    return max(1, min(setting or default, parallel))


def clip_thread_count(setting: int | None, on_gpu: bool, lanes: int) -> int:
    """CLIP encoders (each a set of mtmd contexts, a frame at a time) for the engine:
    ``engine.clip_threads``, else one per lane, on a GPU; 1 on the CPU, where llama.cpp's
    threads already take every core."""
    return max(1, setting or lanes) if on_gpu else 1


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


# llama.cpp counts a context's KV cells in 32 bits (uint32_t), after rounding each stream up to
# a multiple of this many cells.
MAX_CONTEXT_CELLS = 2**32 - 1
_CELL_ROUNDING = 256


def context_cells(n_ctx_seq: int, streams: int) -> int:
    """The KV cells llama.cpp makes of a context of ``streams`` streams of ``n_ctx_seq`` cells."""
    return -(-n_ctx_seq // _CELL_ROUNDING) * _CELL_ROUNDING * streams


def too_much_for_a_lane(
    parallel: int, n_lanes: int, max_questions: int, n_ctx: int, kv_unified: bool, n_batch: int,
    setting: str = "engine.parallel",
) -> str | None:
    """Why ``parallel`` frames in flight over ``n_lanes`` lanes are more than one llama.cpp
    context takes, in one line with the fix; ``None`` where they are not. The first lane has
    the most (:func:`open_lanes`). Its ``frames x max_questions`` sequences must be within
    llama.cpp's limit, and within ``n_batch``: llama.cpp keeps room for ``n_batch`` outputs, one
    a sequence in a decode step, and aborts the process (``GGML_ASSERT``) on a context with more
    sequences. Its KV cells (``n_ctx`` for every sequence, or with ``kv_unified`` for every
    frame) must be within llama.cpp's 32-bit count and hold ``n_batch``: llama.cpp takes no
    more tokens a call than the cells asked for, where the engine's batch would put
    ``n_batch``. ``setting`` names the setting that gave ``parallel``, for the fix.
    """
    frames = -(-parallel // n_lanes)
    n_seq = frames * max_questions
    most = max_parallel_sequences()
    if n_seq > most:
        fix = (
            f"lower {setting} to at most {most // max_questions}" if max_questions <= most
            else f"ask at most {most} prompts a run (a later run with the others adds their answers)"
        )
        sequences = f"{frames} x {max_questions} = {n_seq} sequences per lane"
        return f"{setting} x prompts = {sequences}, more than llama.cpp's {most}; {fix}"
    if n_seq > n_batch:
        return (
            f"engine.n_batch={n_batch} is less than the {n_seq} sequences a lane decodes at once ({setting} x "
            f"prompts); raise engine.n_batch to at least {n_seq}, or lower {setting}"
        )
    each, per = (frames, "frames per lane (engine.kv_unified)") if kv_unified else (n_seq, "sequences per lane")
    cells = context_cells(n_ctx * each, 1) if kv_unified else context_cells(n_ctx, each)
    if cells > MAX_CONTEXT_CELLS:
        return (
            f"model.n_ctx={n_ctx} x {each} {per} = {cells} KV cells, more than llama.cpp's "
            f"{MAX_CONTEXT_CELLS}; lower model.n_ctx or {setting}"
        )
    if n_ctx * each < n_batch:
        return (
            f"engine.n_batch={n_batch} is more than a lane's KV cells, model.n_ctx={n_ctx} x {each} {per} = "
            f"{n_ctx * each}; lower engine.n_batch to at most {n_ctx * each}, or raise model.n_ctx"
        )
    return None


def open_lanes(model: TextModel, s: EngineSettings, n_threads: int, flash_attn: int, lanes: list[Lane]) -> None:
    """Open the engine's :func:`lane_count` lanes on ``model``, frames in flight split over
    them as evenly as it goes; each is appended to ``lanes`` as it opens, so that the caller
    can free those already open when a later one fails.

    Raises:
        EngineError: A lane would hold more than llama.cpp allows (:func:`too_much_for_a_lane`),
            or a context does not start.
    """
    n_lanes = lane_count(s.lanes, s.lanes_gpu, model.on_gpu, s.max_questions, s.parallel)
    why = too_much_for_a_lane(s.parallel, n_lanes, s.max_questions, s.n_ctx, s.kv_unified, s.n_batch)
    if why is not None:
        raise EngineError(why)
    split = [s.parallel // n_lanes + (i < s.parallel % n_lanes) for i in range(n_lanes)]
    for parallel in split:
        n_ctx_seq = s.n_ctx * (parallel if s.kv_unified else 1)
        lanes.append(
            model.new_lane(
                parallel * s.max_questions, n_ctx_seq, s.kv_unified, s.n_batch, s.n_ubatch, n_threads, flash_attn
            )
        )


@dataclass(frozen=True)
class _Failure:
    """An exception raised on a lane's thread, to re-raise on the caller's."""

    error: BaseException


_LANE_DONE = object()  # a lane's thread has ended


def run_lanes(
    lanes: list[Lane], drive: Callable[[int, Lane], Iterator[Item]], stop_source: Callable[[], None]
) -> Iterator[Item]:
    """Drive every lane on its own thread (``drive(index, lane)``); hand what they yield to the
    caller.

    An exception on a lane's thread is raised on the caller's. When the caller stops early
    (or a lane fails), ``stop_source`` stops the frames' source and every thread is joined.
    """
    results: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    def work(index: int, lane: Lane) -> None:
        try:
            for finished in drive(index, lane):
                results.put(finished)
                if stop.is_set():
                    break
        except BaseException as error:  # noqa: BLE001  (re-raised on the caller's thread)
            results.put(_Failure(error))
        finally:
            results.put(_LANE_DONE)

    threads = [
        threading.Thread(target=work, args=(i, lane), name=f"engine-lane{i}", daemon=True)
        for i, lane in enumerate(lanes)
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
        stop_source()
        for thread in threads:
            thread.join()
