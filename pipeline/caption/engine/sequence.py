"""A sequence's life in the engine: the frame it belongs to, its explicit state, how its next
token is picked (greedy or a sampler chain; under its schema's grammar for a schema question),
and how it ends (end of generation, a stop string, ``max_tokens``, complete JSON) with a typed
:class:`~pipeline.caption.engine.records.FinishReason`.

States (llama.cpp server's ``slot_state``): a sequence starts in ``PROMPT`` (its question's
tokens, or the frame's prefill, not yet evaluated), is ``DECODING`` from its first sampled
token on, and is ``FINISHED`` once its finish reason is set and its answer made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

import llama_cpp
import numpy as np

from pipeline.caption.engine.grammar import AnswerSchema, Grammars, answer_schema
from pipeline.caption.engine.native import TextModel
from pipeline.caption.engine.records import Answer, AnswerTrace, EngineSettings, FinishReason, Question
from pipeline.caption.engine.vision import FrameImage

Tag = TypeVar("Tag")


class SequenceState(Enum):
    """Where a sequence is in its life."""

    PROMPT = "prompt"  # its prompt tokens are not all evaluated yet
    DECODING = "decoding"  # it has sampled a token and generates one per step
    FINISHED = "finished"  # it has a finish reason and an answer


@dataclass
class FrameInFlight(Generic[Tag]):
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
class DecodeSequence:
    """One question about one frame in a sequence slot, from admission to its finish reason."""

    seq_id: int
    frame: FrameInFlight[Any]
    index: int  # the question's index
    position: int
    pending: list[int]  # tokens to evaluate at the next step
    sampler: object  # None: greedy
    schema: AnswerSchema | None = None  # a schema question's
    matcher: Any = None  # its grammar's state (an llguidance matcher) while it decodes
    state: SequenceState = SequenceState.PROMPT
    generated: list[int] = field(default_factory=list)
    text: bytes = b""
    finish_reason: FinishReason | None = None
    value_json: str | None = None
    first_logits: np.ndarray | None = None

    def take_pending(self) -> list[int]:
        """The tokens to evaluate now; the sequence's position moves past them."""
        tokens, self.pending = self.pending, []
        self.position += len(tokens)
        return tokens

    def finish(self, reason: FinishReason) -> None:
        """End the sequence with ``reason``."""
        self.state = SequenceState.FINISHED
        self.finish_reason = reason

    def answer(self, question: Question, prompt_tokens: int, trace: bool) -> Answer:
        """The finished sequence's answer (``trace``: with its token ids and first logits)."""
        assert self.state is SequenceState.FINISHED
        return Answer(
            question=question,
            text=self.text.decode("utf-8", errors="replace").strip(),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(self.generated),
            latency_ms=(time.perf_counter() - self.frame.started_s) * 1000.0,
            finish_reason=self.finish_reason,
            value_json=self.value_json,
            trace=AnswerTrace(tuple(self.generated), self.first_logits)
            if trace and self.first_logits is not None
            else None,
        )


class Sampling:
    """Picks the next token of many sequences at once and decides when each one ends.

    Args:
        settings: The engine's settings (temperature, stop strings, ``max_tokens``, ...).
        model: The loaded text model.
    """

    def __init__(self, settings: EngineSettings, model: TextModel) -> None:
        self.settings = settings
        self.model = model
        self.n_vocab = int(model.n_vocab)
        # Biased to minus infinity with ignore_eos (benchmarks), in free-text answers.
        self.eog = model.end_of_generation_ids() if settings.ignore_eos else np.zeros(0, np.int64)
        self._schemas: list[AnswerSchema | None] = []
        self._grammars: Grammars | None = None

    def set_questions(self, questions: list[Question]) -> None:
        """Take a run's questions: compile their schemas (on the calling thread, before any
        lane's).

        Raises:
            ConfigError: A schema cannot constrain an answer.
        """
        self._schemas = [None if q.schema_json is None else answer_schema(q) for q in questions]
        schemas = [schema for schema in self._schemas if schema is not None]
        if schemas and self._grammars is None:
            self._grammars = Grammars(self.model)
        if self._grammars is not None:
            self._grammars.prepare(schemas)

    def _new_sampler(self, free_text: bool) -> object:
        """A sampler chain for temperature > 0 (greedy needs none: one argmax per step); the
        end-of-generation bias of ``ignore_eos`` only for a ``free_text`` answer (a schema
        answer ends where its JSON does)."""
        s = self.settings
        if s.temperature <= 0:
            return None
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if self.eog.size and free_text:
            biases = (llama_cpp.llama_logit_bias * self.eog.size)(
                *(llama_cpp.llama_logit_bias(int(t), -float("inf")) for t in self.eog)
            )
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, self.eog.size, biases)
            )
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(s.seed))
        return chain

    def new_sequence(
        self, seq_id: int, frame: FrameInFlight[Any], index: int, position: int, pending: list[int]
    ) -> DecodeSequence:
        """A sequence for question ``index`` about ``frame`` whose next tokens are ``pending``
        (evaluated from ``position`` on), with what picking its tokens takes."""
        schema = self._schemas[index]
        seq = DecodeSequence(seq_id, frame, index, position, pending, self._new_sampler(free_text=schema is None))
        if schema is not None:
            assert self._grammars is not None
            seq.schema, seq.matcher = schema, self._grammars.matcher(schema)
        return seq

    @staticmethod
    def release(seq: DecodeSequence) -> None:
        """Free what picking the sequence's tokens took (its sampler chain, its matcher)."""
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.sampler = None
        seq.matcher = None

    def pick(self, ctx: object, outputs: list[tuple[DecodeSequence, int]]) -> list[int]:
        """The next token of each (sequence, batch row) output of the last decode on ``ctx``;
        a schema answer's only among the tokens its grammar allows (the others' logits are
        set to minus infinity in llama.cpp's own buffer, which the sampler chains read)."""
        constrained = [row for row, (seq, _) in enumerate(outputs) if seq.matcher is not None]
        allowed = self._allowed(outputs, constrained)
        if self.settings.temperature <= 0:
            # Greedy for all outputs at once: the logits of the outputs lie in batch order.
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(len(outputs), self.n_vocab))
            if self.settings.trace:
                self._keep_first_logits(outputs, lambda row, _: logits[row])
            if not constrained:
                if self.eog.size:
                    logits[:, self.eog] = -np.inf
            else:
                free = [row for row, (seq, _) in enumerate(outputs) if seq.matcher is None]
                if self.eog.size and free:
                    logits[np.ix_(np.array(free), self.eog)] = -np.inf
                masked = logits[constrained]
                masked[~allowed] = -np.inf
                logits[constrained] = masked
            tokens: list[int] = logits.argmax(axis=1).tolist()
            return tokens
        if self.settings.trace:
            self._keep_first_logits(outputs, lambda _, index: self._logits_ith(ctx, index))
        for row, ok in zip(constrained, allowed):
            self._logits_ith(ctx, outputs[row][1])[~ok] = -np.inf
        return [llama_cpp.llama_sampler_sample(seq.sampler, ctx, index) for seq, index in outputs]

    def _logits_ith(self, ctx: object, index: int) -> np.ndarray:
        """The logits of batch row ``index`` of the last decode, in llama.cpp's buffer."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))

    def _allowed(self, outputs: list[tuple[DecodeSequence, int]], constrained: list[int]) -> np.ndarray:
        """The tokens each ``constrained`` output's grammar allows next, a boolean row each."""
        if not constrained:
            return np.zeros((0, self.n_vocab), bool)
        assert self._grammars is not None
        return self._grammars.allowed([outputs[row][0].matcher for row in constrained])

    @staticmethod
    def _keep_first_logits(outputs: list[tuple[DecodeSequence, int]], logits_of: Any) -> None:
        for row, (seq, index) in enumerate(outputs):
            if not seq.generated and seq.first_logits is None:
                seq.first_logits = np.array(logits_of(row, index), dtype=np.float32)

    def accept(self, seq: DecodeSequence, token: int) -> bool:
        """Take a sampled token; True when the answer is complete (its reason set)."""
        seq.state = SequenceState.DECODING
        if seq.matcher is not None:
            return self._accept_json(seq, token)
        if self.model.is_eog(token):
            seq.finish(FinishReason.STOP)
            return True
        seq.generated.append(token)
        seq.text += self.model.piece(token)
        if self.settings.stop and self._cut_at_stop(seq):
            seq.finish(FinishReason.STOP_STRING)
            return True
        if len(seq.generated) >= self.settings.max_tokens:
            seq.finish(FinishReason.LENGTH)
            return True
        seq.pending = [token]
        return False

    def _accept_json(self, seq: DecodeSequence, token: int) -> bool:
        """:meth:`accept` for a schema answer: no stop string cuts it; it ends where its JSON is
        complete (``STOP`` once it validates, else ``INVALID``), at ``max_tokens``
        (``LENGTH``), or ``INVALID`` should a token its grammar refused come (then the token
        is never evaluated)."""
        matcher = seq.matcher
        if self.model.is_eog(token):  # allowed only where the JSON may end
            return self._end_json(seq, complete=matcher.is_accepting())
        if not matcher.consume_token(token):
            return self._end_json(seq, complete=False)
        seq.generated.append(token)
        seq.text += self.model.piece(token)
        if matcher.is_stopped():  # nothing can follow
            return self._end_json(seq, complete=matcher.is_accepting())
        if len(seq.generated) >= self.settings.max_tokens:
            seq.finish(FinishReason.LENGTH)
            return True
        seq.pending = [token]
        return False

    @staticmethod
    def _end_json(seq: DecodeSequence, complete: bool) -> bool:
        assert seq.schema is not None
        if complete:
            seq.value_json = seq.schema.value_json(seq.text.decode("utf-8", errors="replace"))
        seq.finish(FinishReason.STOP if seq.value_json is not None else FinishReason.INVALID)
        return True

    def _cut_at_stop(self, seq: DecodeSequence) -> bool:
        text = seq.text.decode("utf-8", errors="ignore")
        hits = [text.find(stop) for stop in self.settings.stop if stop and stop in text]
        if hits:
            seq.text = text[: min(hits)].encode()
            return True
        return False
