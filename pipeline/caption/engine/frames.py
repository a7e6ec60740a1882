"""A frame's way in: its image prepared (tiling and preprocessing, and CLIP too when it runs
ahead), checked against the KV cells a lane has, or turned into error answers when it cannot be
captioned. Runs on the engine's background thread when there is one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.caption.engine.prompts import Prompts
from pipeline.caption.engine.records import Answer, EngineStats
from pipeline.caption.engine.sequence import FrameInFlight
from pipeline.caption.engine.vision import Vision

# A prepared job: the frame, or (when it cannot be captioned) its tag and error answers.
Prepared = tuple[FrameInFlight[Any] | None, tuple[Any, list[Answer]] | None]


class FramePreparation:
    """Prepares frames for lanes of ``kv_capacity`` cells per frame.

    Args:
        vision: The loaded projector.
        kv_capacity: KV cells a frame may use in any lane.
        kv_unified: One KV stream shared by a lane's sequences (a frame then reserves its cells).
        n_embd: The text model's input embedding size.
    """

    def __init__(self, vision: Vision, kv_capacity: int, kv_unified: bool, n_embd: int) -> None:
        self.vision = vision
        self.kv_capacity = kv_capacity
        self._kv_unified = kv_unified
        self.n_embd = n_embd

    def kv_setting(self) -> str:
        """The setting that sizes a frame's KV cells."""
        return "model.n_ctx x engine.parallel" if self._kv_unified else "model.n_ctx"

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
        kv_need = prompts.kv_need(image.n_tokens, asked)
        if kv_need > self.kv_capacity:
            self.vision.free(image)
            reason = (
                f"frame needs {kv_need} KV cells (image {image.n_tokens} + prompts + max_tokens), "
                f"more than the {self.kv_capacity} of {self.kv_setting()}"
            )
            return None, (tag, _error_answers(prompts, reason, asked))
        frame = FrameInFlight(tag, image, n_prefix, kv_need if self._kv_unified else 0, asked)
        frame.answers = [None] * len(prompts.questions)
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
