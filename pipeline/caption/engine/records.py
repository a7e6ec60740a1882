"""The engine's public records: its settings (load-time apart from per-answer), what it is asked,
what it answers, its figures."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from pipeline.caption.formats import ChatFormat

IMAGE_LAYOUTS = ("reference", "llamacpp")


class EngineError(RuntimeError):
    """The model could not be loaded or a decode failed; the message names the cause."""


@dataclass(frozen=True, kw_only=True)
class LoadSettings:
    """How the model loads and how much it runs at once: fixed for an engine's life, resolved
    for the machine it runs on (``conf/`` holds the defaults).

    Attributes:
        text_model: Path of the text GGUF.
        mmproj: Path of the CLIP projector GGUF.
        image_layout: ``reference``: the image tokens LLaVA 1.6 was trained on (base tile,
            unpadded grid, a newline after every row; see :mod:`pipeline.caption.layout`);
            ``llamacpp``: llama.cpp's own (every tile's 576 tokens in a row).
        n_ctx: KV cells for one frame's conversation (all its questions).
        n_gpu_layers: Layers offloaded to the GPU (-1: all).
        n_batch: Most tokens per ``llama_decode`` call (a frame's image tokens go in pieces of
            this size: 2048 or more keeps the GPU's matrix units busy).
        n_ubatch: Most tokens per compute step inside a decode.
        flash_attn: ``on``, ``off``, or ``auto``: on when layers run on a GPU (where it pays),
            off on CPU. llama.cpp's CPU flash-attention kernel is far less exact (its logits
            were 4 % off a float32 reference after 2,000 tokens, 0.02 % without it) and sums
            in an order that depends on the KV-cache layout, so answers would depend on
            batching.
        n_threads: CPU threads (``None``: :func:`~pipeline.caption.engine.native.default_threads`).
        parallel: Frames in flight at once.
        max_questions: Most questions asked about one frame (sets the sequence slots).
        prepare_ahead: Frames prepared (tiling, CPU image preprocessing) ahead on a background
            thread while the GPU decodes; 0 prepares on the calling thread. The thread is used
            only when the model runs on a GPU or ``n_threads`` leaves a core free (a busy
            extra thread next to llama.cpp's CPU threads on every core slows them many-fold).
        overlap_clip: Also run the CLIP encode of frames ahead on that thread, overlapping it
            with the decoding of frames in flight (GPU only; ignored on CPU).
        kv_unified: One KV stream shared by all sequences instead of one stream per sequence
            (each sequence's attention and KQ mask then cover only its own cells; a frame's
            image is copied on the device to its other questions' streams). With one stream,
            every prefill and every step attends over, and builds on the CPU a mask for, the
            cells of all frames in flight. Streams take ``n_ctx`` cells for every sequence
            slot (``parallel x max_questions``).
        max_decode_seqs: Most sequences per ``llama_decode`` in a decode step (0: all at once;
            ``None``: auto, groups of 8 up to 16 active sequences when llama.cpp's CUDA backend
            was built with ``GGML_CUDA_FORCE_CUBLAS``, layers run on the GPU and the text
            weights are quantized, else all at once). With that build a group of at most 8
            stays on the quantized matrix-vector kernel instead of dequantizing all weights to
            F16 for the step; F16 weights are read once per step either way.
        lanes: llama.cpp contexts (on the one model) that share the frames in flight, each
            driven by its own thread, frames dealt to them in turn (``None``: ``lanes_gpu``
            when layers run on a GPU, else 1; on a GPU always 1 when ``max_questions`` > 1:
            :func:`.lanes.lane_count`).
        lanes_gpu: Lanes on a GPU for ``lanes=None``.
        clip_threads: On a GPU, frames CLIP-encoded at once, each encoder with its own mtmd
            contexts (the projector's weights once more on the GPU) and, with ``overlap_clip``,
            its own preparing thread (``None``: one per lane; on the CPU always 1:
            :func:`.lanes.clip_thread_count`). The features do not depend on it.
    """

    text_model: str
    mmproj: str
    image_layout: str
    n_ctx: int
    n_gpu_layers: int
    n_batch: int
    n_ubatch: int
    flash_attn: str
    n_threads: int | None
    parallel: int
    max_questions: int
    prepare_ahead: int
    overlap_clip: bool
    kv_unified: bool
    max_decode_seqs: int | None
    lanes: int | None
    lanes_gpu: int
    clip_threads: int | None


@dataclass(frozen=True, kw_only=True)
class AnswerSettings:
    """How each answer is asked and generated: the same for every frame, whatever the machine.

    Attributes:
        chat_format: The variant's prompt template.
        system_prompt: System text; ``None`` uses the format's default.
        stop: Strings that end an answer (not included in it).
        max_tokens: Most tokens generated per answer.
        temperature: 0 for greedy decoding.
        top_k: Top-k cut-off when sampling.
        top_p: Nucleus cut-off when sampling.
        seed: Sampling seed (each answer restarts from it, so answers do not depend on batching).
        ignore_eos: Benchmarks only: end-of-generation tokens are biased to minus infinity so
            that every answer runs to ``max_tokens`` (stop strings still apply).
        trace: Parity checks only: each answer carries its token ids and the logits that
            chose its first token (:class:`AnswerTrace`).
    """

    chat_format: ChatFormat
    system_prompt: str | None
    stop: tuple[str, ...]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    ignore_eos: bool = False
    trace: bool = False


@dataclass(frozen=True, kw_only=True)
class EngineSettings(LoadSettings, AnswerSettings):
    """Everything the engine needs: its :class:`LoadSettings` and its :class:`AnswerSettings`
    (:meth:`of` puts the two together; fields are given by keyword)."""

    @classmethod
    def of(cls, load: LoadSettings, answer: AnswerSettings) -> EngineSettings:
        """The settings of an engine that loads as ``load`` says and answers as ``answer`` says."""
        return cls(**_values(load, LoadSettings), **_values(answer, AnswerSettings))


def _values(record: object, kind: type) -> dict[str, Any]:
    """``record``'s fields of ``kind`` by name (not :func:`dataclasses.asdict`, which would
    also take the chat format apart)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(kind)}


@dataclass(frozen=True)
class Question:
    """A prompt to ask about every frame, with a stable id.

    Attributes:
        prompt_id: Stable id of the text (and of the schema, where there is one).
        text: The prompt as written (sent as it is).
        schema_json: A JSON Schema whose top level is an object, as compact JSON: the answer is
            decoded under a grammar made from it (only JSON of the schema can come out) and
            checked against it; ``None``: a free-text answer.
    """

    prompt_id: str
    text: str
    schema_json: str | None = None


class FinishReason(str, Enum):
    """Why an answer ended; its value is what the Parquet ``finish_reason`` column holds.

    Values:
        STOP: The model ended it (an end-of-generation token).
        STOP_STRING: One of the stop strings (``model.stop``) came; the answer is cut before it.
        LENGTH: ``max_tokens`` were generated; the answer may be incomplete (a schema
            answer keeps its partial text and has no value).
        INVALID: A schema answer ended but its JSON does not validate against the schema (it
            has no value).

    A schema answer that says ``STOP`` is complete JSON that validated; stop strings never cut
    a schema answer.
    """

    STOP = "stop"
    STOP_STRING = "stop_string"
    LENGTH = "length"
    INVALID = "invalid"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, eq=False)
class AnswerTrace:
    """What a parity check needs beyond an answer's text (``EngineSettings.trace``).

    Attributes:
        token_ids: The generated tokens, in order (a stop string's tokens included).
        first_logits: The logits (all of the vocabulary) that chose the first token.
    """

    token_ids: tuple[int, ...]
    first_logits: np.ndarray


@dataclass(frozen=True)
class Answer:
    """The model's answer to one question about one frame.

    Attributes:
        question: What was asked.
        text: The answer ("" when ``error`` is set).
        prompt_tokens: Tokens evaluated for the prompt (shared image prefix + question).
        completion_tokens: Tokens generated.
        latency_ms: From the frame's admission to this answer's last token.
        finish_reason: Why it ended; ``None`` with an error.
        error: Why there is no answer, or ``None``.
        value_json: A schema question's answer as compact JSON once it validated (``STOP``),
            else ``None``.
        trace: Token ids and first logits, with ``EngineSettings.trace`` only.
    """

    question: Question
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: FinishReason | None = None
    error: str | None = None
    value_json: str | None = None
    trace: AnswerTrace | None = None

    @property
    def value(self) -> Any:
        """A schema question's validated answer, parsed (``None`` when there is none)."""
        return None if self.value_json is None else json.loads(self.value_json)


@dataclass
class EngineStats:
    """Where the engine's time went, in seconds, and how much it did.

    ``tokenize_s`` (image tiling and preprocessing; and ``clip_s`` with ``overlap_clip``) is
    spent on the preparing threads (summed over them), overlapped with the rest;
    ``prefill_s`` and ``decode_s`` include waiting for the GPU; ``wait_s`` is the calling
    thread waiting for input frames or their preparation. ``image_tokens`` counts the image's
    share of ``prompt_tokens``.
    ``prefill_calls`` are the ``llama_decode`` calls of frames' prefills (text before the
    image, image and first question in one pass: one call per ``n_batch`` rows),
    ``decode_calls`` the rest.
    """

    tokenize_s: float = 0.0
    clip_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    wait_s: float = 0.0
    frames: int = 0
    prompt_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0
    decode_calls: int = 0
    prefill_calls: int = 0

    def __add__(self, other: EngineStats) -> EngineStats:
        return EngineStats(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))
