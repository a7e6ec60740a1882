"""A frame's way in: its image prepared (tiling and preprocessing, and CLIP too when it runs
ahead), checked against the KV cells a lane has, or turned into error answers when it cannot be
captioned. Runs on the engine's preparing threads when there are any.

Each question fits or fails on its own: a question whose prompt and answer do not fit a frame's
cells gets an error answer naming it and the setting as the user set it, and the questions that
fit are answered."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from pipeline.caption.engine.prompts import Prompts
from pipeline.caption.engine.records import Answer, EngineSettings, EngineStats
from pipeline.caption.engine.sequence import FrameInFlight
from pipeline.caption.engine.vision import Vision
from pipeline.errors import ConfigError

# A prepared job: the frame, or (when it cannot be captioned) its tag and error answers.
Prepared = tuple[FrameInFlight[Any] | None, tuple[Any, list[Answer]] | None]


class FramePreparation:
    """Prepares frames for lanes of ``kv_capacity`` cells per frame.

    Args:
        vision: The loaded projector.
        kv_capacity: KV cells a frame may use in any lane.
        settings: The engine's settings (``kv_unified``: one KV stream shared by a lane's
            sequences, a frame then reserves its cells; ``n_ctx`` and ``max_tokens``, named
            where a question does not fit).
        n_embd: The text model's input embedding size.
    """

    def __init__(self, vision: Vision, kv_capacity: int, settings: EngineSettings, n_embd: int) -> None:
        self.vision = vision
        self.kv_capacity = kv_capacity
        self._settings = settings
        self._kv_unified = settings.kv_unified
        self.n_embd = n_embd

    def kv_setting(self) -> str:
        """The cells a frame may take and the setting that sizes them, as the user set it
        (llama.cpp rounds a context up, so the cells may be more than ``model.n_ctx``)."""
        setting = f"model.n_ctx={self._settings.n_ctx}" + (" x frames in flight per lane" if self._kv_unified else "")
        return f"the {self.kv_capacity} cells of {setting}"

    def check_fits(self, prompts: Prompts) -> list[str]:
        """Refuse questions under which no frame can be answered: none of them fits even the
        smallest frame (its base tile alone) with ``max_tokens`` (in a unified cache, those
        that fit on their own must also fit together).

        Returns:
            Why each question that cannot fit even the smallest frame does not (its answers
            will be errors; the others go on).

        Raises:
            ConfigError: No question fits (one line: the cells needed and what to change).
        """
        smallest = self.vision.min_image_tokens
        every = range(len(prompts.questions))
        fitting = self.fitting(prompts, smallest, every)
        if not fitting or prompts.kv_need(smallest, fitting) > self.kv_capacity:
            raise ConfigError(
                f"no frame fits: even the smallest needs {prompts.kv_need(smallest, fitting or every)} KV cells "
                f"(image {smallest} + prompts + generation.max_tokens={self._settings.max_tokens}), more than "
                f"{self.kv_setting()}; raise model.n_ctx, lower generation.max_tokens or shorten the prompts"
            )
        return [self.too_long(prompts, i, smallest) for i in every if i not in fitting]

    def fitting(self, prompts: Prompts, n_image_tokens: int, asked: Iterable[int]) -> tuple[int, ...]:
        """The ``asked`` questions that fit a frame of ``n_image_tokens`` each on its own."""
        return tuple(i for i in asked if prompts.kv_need(n_image_tokens, (i,)) <= self.kv_capacity)

    def too_long(self, prompts: Prompts, index: int, n_image_tokens: int) -> str:
        """Why question ``index`` does not fit a frame of ``n_image_tokens``: the prompt and the
        setting, as the user set it."""
        text = prompts.questions[index].text
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        return (
            f"prompt {index + 1} ({shown!r}) needs {prompts.kv_need(n_image_tokens, (index,))} KV cells with this "
            f"frame (image {n_image_tokens} + prompt + generation.max_tokens={self._settings.max_tokens}), more "
            f"than {self.kv_setting()}"
        )

    def prepare(
        self, prompts: Prompts, tag: Any, rgb: np.ndarray, asked: tuple[int, ...], encode: bool, stats: EngineStats
    ) -> Prepared:
        """Prepare a frame's image (and with ``encode`` run CLIP on it); a frame that cannot
        be captioned becomes error answers."""
        try:
            image = self.vision.tokenize(rgb, stats)
        except ValueError as error:
            return None, (tag, _error_answers(prompts, str(error), asked))
        n_prefix = len(prompts.prefix_tokens) + image.n_tokens
        # Each question fits or fails on its own; in a unified cache those that fit must also
        # fit together.
        fitting = self.fitting(prompts, image.n_tokens, asked)
        too_long = {i: self.too_long(prompts, i, image.n_tokens) for i in asked if i not in fitting}
        kv_need = prompts.kv_need(image.n_tokens, fitting) if fitting else 0
        if fitting and kv_need > self.kv_capacity:
            reason = (
                f"frame needs {kv_need} KV cells (image {image.n_tokens} + prompts + generation.max_tokens="
                f"{self._settings.max_tokens}), more than {self.kv_setting()}"
            )
            too_long.update((i, reason) for i in fitting)
            fitting = ()
        if not fitting:
            self.vision.free(image)
            return None, (tag, [Answer(question=prompts.questions[i], text="", error=too_long[i]) for i in asked])
        frame = FrameInFlight(tag, image, n_prefix, kv_need if self._kv_unified else 0, fitting)
        frame.answers = [None] * len(prompts.questions)
        for i, why in too_long.items():
            frame.answers[i] = Answer(question=prompts.questions[i], text="", error=why)
        if encode:
            try:
                out = np.empty((prompts.n_prompt(frame, frame.asked[0]), self.n_embd), np.float32)
                frame.rows = prompts.prefill_rows(frame, out, self.vision, stats)
            except BaseException:
                self.vision.free(image)
                raise
        return frame, None

    def release(self, prepared: Prepared) -> None:
        """Free a prepared frame's image."""
        frame, _ = prepared
        if frame is not None:
            self.vision.free(frame.image)


def _error_answers(prompts: Prompts, reason: str, asked: Sequence[int]) -> list[Answer]:
    return [Answer(question=prompts.questions[i], text="", error=reason) for i in asked]
