"""Caption stage: LLaVA 1.6 through llama-cpp-python.

:class:`Captioner` is the library entry point, usable without Hydra::

    from pipeline.caption import Captioner
    with Captioner.from_preset("tiny") as captioner:
        print(captioner.answer(rgb_frame, "What is shown?"))
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import llama_cpp
import numpy as np

from pipeline.caption.engine import (
    IMAGE_LAYOUTS,
    Answer,
    Engine,
    EngineError,
    EngineSettings,
    EngineStats,
    Question,
)
from pipeline.caption.formats import get_chat_format
from pipeline.caption.weights import ModelFiles, WeightsError, check_pair, resolve_model_files

__all__ = [
    "Answer",
    "Captioner",
    "EngineError",
    "EngineStats",
    "Question",
    "WeightsError",
    "make_questions",
]

Tag = TypeVar("Tag")


def make_questions(prompts: Iterable[str]) -> list[Question]:
    """Questions with stable ids: the id is a hash of the text, so it survives reordering."""
    questions = []
    for text in prompts:
        if not text or not text.strip():
            raise ValueError("a prompt is empty; give every prompt some text")
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        questions.append(Question(prompt_id=digest, text=text))
    return questions


class Captioner:
    """A loaded LLaVA 1.6 model pair that answers questions about RGB frames.

    Args:
        settings: Resolved engine settings (see :meth:`from_config` for the usual way in).
        model_name: The preset's name, recorded with every answer.
        files: The model files in use.
    """

    def __init__(self, settings: EngineSettings, model_name: str, files: ModelFiles) -> None:
        self.model_name = model_name
        self.files = files
        self.engine = Engine(settings)

    @classmethod
    def from_config(cls, cfg: Any, max_questions: int | None = None) -> Captioner:
        """Build from a composed config (the ``Config`` schema: ``model``, ``generation``,
        ``engine``, ``system_prompt``); resolves (and if needed fetches) the weights and checks
        that the pair fits. The model is loaded by :meth:`setup` or ``with``.

        Raises:
            WeightsError: Files missing or not matching.
            ValueError: A bad setting.
        """
        model, gen, eng = cfg.model, cfg.generation, cfg.engine
        files = resolve_model_files(
            name=model.name,
            model_dir=model.dir,
            text_file=model.text_file,
            mmproj_file=model.mmproj_file,
            repo_id=model.repo_id,
            download=model.download,
            generated=model.generated,
            quantized=model.quantized,
        )
        check_pair(files)
        system = cfg.get("system_prompt")
        settings = EngineSettings(
            text_model=str(files.text_model),
            mmproj=str(files.mmproj),
            chat_format=get_chat_format(model.chat_format),
            system_prompt=model.system_prompt if system is None else system,
            stop=tuple(model.stop),
            image_layout=model.image_layout,
            n_ctx=model.n_ctx,
            n_gpu_layers=model.n_gpu_layers,
            n_batch=eng.n_batch,
            n_ubatch=eng.n_ubatch,
            flash_attn=eng.flash_attn,
            n_threads=eng.n_threads,
            parallel=(
                default_parallel(model.n_gpu_layers) if eng.parallel is None else eng.parallel
            ),
            lanes=eng.lanes,
            prepare_ahead=eng.prepare_ahead,
            overlap_clip=eng.overlap_clip,
            kv_unified=eng.kv_unified,
            max_decode_seqs=eng.max_decode_seqs,
            max_questions=max_questions or max(len(cfg.get("prompts") or []), 1),
            max_tokens=gen.max_tokens,
            temperature=gen.temperature,
            top_k=gen.top_k,
            top_p=gen.top_p,
            seed=gen.seed,
        )
        _validate(settings)
        return cls(settings, model.name, files)

    @classmethod
    def from_preset(cls, preset: str = "tiny", *overrides: str, max_questions: int = 8) -> Captioner:
        """Build from a preset in ``conf/model`` plus Hydra-style overrides, e.g.
        ``Captioner.from_preset("llava16_mistral_7b", "model.dir=/models", "engine.parallel=2")``.
        """
        from pipeline.cli import compose_config

        cfg = compose_config([f"model={preset}", "video=unused", *overrides])
        return cls.from_config(cfg, max_questions=max_questions)

    def setup(self) -> None:
        """Load the model (once per process; frames and videos reuse it)."""
        self.engine.setup()

    def close(self) -> None:
        """Free the model and its memory."""
        self.engine.close()

    def __enter__(self) -> Captioner:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answer(self, image: np.ndarray, prompt: str) -> str:
        """The seed's contract: one RGB frame and one prompt in, the answer text out.

        Raises:
            ValueError: The image is not an ``HxWx3`` uint8 array.
        """
        (answer,) = self.ask(image, [prompt])
        return answer.text

    def ask(self, image: np.ndarray, prompts: list[str]) -> list[Answer]:
        """Several prompts about one frame, the image evaluated once.

        Raises:
            ValueError: The image is not an ``HxWx3`` uint8 array.
        """
        ((_, answers),) = list(self.engine.run([(None, image)], make_questions(prompts)))
        if answers[0].error:
            raise ValueError(answers[0].error)
        return answers

    def caption(
        self,
        jobs: Iterable[tuple[Tag, np.ndarray] | tuple[Tag, np.ndarray, Sequence[int] | None]],
        questions: list[Question],
    ) -> Iterator[tuple[Tag, list[Answer]]]:
        """Stream many frames through the batched engine (see :meth:`Engine.run`)."""
        return self.engine.run(jobs, questions)


def default_parallel(n_gpu_layers: int) -> int:
    """Frames in flight when ``engine.parallel`` is null: 16 with layers on a GPU, else 4.

    16 kept an H100 busy with a 7B model (BENCHMARKS.md); on a CPU more frames in flight only
    make each answer wait longer.
    """
    return 16 if n_gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload() else 4


def _validate(settings: EngineSettings) -> None:
    checks = [
        (settings.parallel >= 1, f"engine.parallel must be >= 1, got {settings.parallel}"),
        (
            settings.lanes is None or settings.lanes >= 1,
            f"engine.lanes must be >= 1 or null, got {settings.lanes}",
        ),
        (
            settings.prepare_ahead >= 0,
            f"engine.prepare_ahead must be >= 0, got {settings.prepare_ahead}",
        ),
        (
            settings.max_decode_seqs is None or settings.max_decode_seqs >= 0,
            f"engine.max_decode_seqs must be >= 0 or null, got {settings.max_decode_seqs}",
        ),
        (settings.n_batch >= 1, f"engine.n_batch must be >= 1, got {settings.n_batch}"),
        (settings.n_ubatch >= 1, f"engine.n_ubatch must be >= 1, got {settings.n_ubatch}"),
        (settings.n_ctx >= 512, f"model.n_ctx must be >= 512, got {settings.n_ctx}"),
        (settings.max_tokens >= 1, f"generation.max_tokens must be >= 1, got {settings.max_tokens}"),
        (settings.temperature >= 0, f"generation.temperature must be >= 0, got {settings.temperature}"),
        (
            settings.image_layout in IMAGE_LAYOUTS,
            f"model.image_layout must be one of {', '.join(IMAGE_LAYOUTS)}, got {settings.image_layout!r}",
        ),
        (
            settings.flash_attn in ("auto", "on", "off"),
            f"engine.flash_attn must be auto, on or off, got {settings.flash_attn!r}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
