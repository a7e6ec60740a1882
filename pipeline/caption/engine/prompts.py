"""A run's questions as the model sees them: the chat template split around the image, each
part tokenized and turned into input-embedding rows (so that one pass evaluates text, image and
question), and the KV cells a frame's prompt and answers take."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.caption.engine.native import TextModel
from pipeline.caption.engine.records import EngineSettings, EngineStats, Question
from pipeline.caption.engine.sequence import FrameInFlight
from pipeline.caption.engine.vision import Vision


class Prompts:
    """The questions of a run, tokenized around the image.

    Args:
        model: The loaded text model.
        settings: The engine's settings (chat format, system text, ``max_tokens``, KV layout).
        questions: Between 1 and ``settings.max_questions`` questions.

    Raises:
        EngineError: A prompt does not tokenize.
        ValueError: Not between 1 and ``max_questions`` questions.
    """

    def __init__(self, model: TextModel, settings: EngineSettings, questions: list[Question]) -> None:
        if not 0 < len(questions) <= settings.max_questions:
            raise ValueError(
                f"{len(questions)} prompts given; between 1 and "
                f"{settings.max_questions} (settings.max_questions) allowed"
            )
        self.questions = list(questions)
        self._settings = settings
        system, chat = settings.system_prompt, settings.chat_format
        self.prefix_tokens = model.tokenize(chat.split("", system)[0], add_special=True)
        self.suffix_tokens = [model.tokenize(chat.split(q.text, system)[1], add_special=False) for q in questions]
        self._prefix_rows = model.token_rows(self.prefix_tokens)  # their input embeddings
        self._suffix_rows = [model.token_rows(tokens) for tokens in self.suffix_tokens]

    def n_prompt(self, frame: FrameInFlight[Any], index: int) -> int:
        """Tokens of the frame's prompt for question ``index``: text, image and question."""
        return frame.n_prefix + len(self.suffix_tokens[index])

    def kv_need(self, n_image_tokens: int, asked: Iterable[int]) -> int:
        """KV cells a frame of ``n_image_tokens`` with the ``asked`` questions takes: with
        streams, the longest question's; in a unified cache, all of theirs."""
        n_prefix = len(self.prefix_tokens) + n_image_tokens
        suffixes = [len(self.suffix_tokens[i]) + self._settings.max_tokens for i in asked]
        return n_prefix + (sum(suffixes) if self._settings.kv_unified else max(suffixes))

    def prefill_rows(
        self, frame: FrameInFlight[Any], out: np.ndarray, vision: Vision, stats: EngineStats
    ) -> np.ndarray:
        """CLIP-encode the frame into its prefill rows (the first :meth:`n_prompt` rows of
        ``out``): the text before the image, the image and the first asked question, all as
        input embeddings, so that one embedding pass evaluates the three."""
        n_text, n_image = len(self.prefix_tokens), frame.image.n_tokens
        rows = out[: self.n_prompt(frame, frame.asked[0])]
        rows[:n_text] = self._prefix_rows
        vision.encode(frame.image, rows[n_text : n_text + n_image], stats)
        rows[n_text + n_image :] = self._suffix_rows[frame.asked[0]]
        return rows
