"""Caption stage: LLaVA 1.6 through llama-cpp-python.

:class:`Captioner` answers questions about RGB frames. It knows no config, no store and no
video: it is built from plain values (:class:`CaptionSpec`), which :mod:`pipeline.presets` makes
from a preset for library use::

    from pipeline.presets import captioner_from_preset
    with captioner_from_preset("tiny") as captioner:
        print(captioner.answer(rgb_frame, "What is shown?"))

:class:`CaptionSpec` is what a worker needs to build one (where the weights are, the engine
settings): built once, picklable, so that it travels to Ray actors.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar, overload

import llama_cpp
import numpy as np

from pipeline.caption.engine import (
    IMAGE_LAYOUTS,
    Answer,
    AnswerSettings,
    Engine,
    EngineError,
    EngineSettings,
    EngineStats,
    LoadSettings,
    Question,
)
from pipeline.caption.engine.grammar import answer_schema
from pipeline.caption.engine.lanes import lane_count, too_much_for_a_lane
from pipeline.caption.engine.native import runs_on_gpu
from pipeline.caption.formats import get_chat_format
from pipeline.caption.gpu_fit import TEXT_TYPES, frames_in_flight, pick_text_weights
from pipeline.caption.settings import EngineKnobs, GenerationSettings, ModelPreset
from pipeline.caption.weights import ModelFiles, ModelSource, check_pair
from pipeline.errors import BuildError, ConfigError, WeightsError
from pipeline.paths import user_cache_dir
from pipeline.ranges import Range, check_ranges
from pipeline.structured import PromptEntry, answer_shape, canonical_json, check_schemas, entry_parts

__all__ = [
    "Answer",
    "CaptionSpec",
    "Captioner",
    "Engine",
    "EngineError",
    "EngineSettings",
    "EngineKnobs",
    "EngineStats",
    "GenerationSettings",
    "ModelPreset",
    "Question",
    "WeightsError",
    "make_questions",
]

Tag = TypeVar("Tag")


def make_questions(prompts: Iterable[PromptEntry]) -> list[Question]:
    """Questions with stable ids, from prompt entries (a text, or ``{text: ..., schema: {...}}``:
    :mod:`pipeline.structured`).

    The id is a hash of the text, so it survives reordering; a schema prompt's covers the
    schema too (its canonical JSON, less what only documents it:
    :func:`pipeline.structured.answer_shape`), so adding or changing a schema makes a new
    question while a plain prompt keeps the id it always had.

    Each schema is checked as a run checks it (:func:`pipeline.structured.check_schemas`: an
    object, valid JSON Schema) and compiled to its grammar, so that what the grammar cannot do
    (``uniqueItems``, bounds no number meets) is refused here, by a dry run too, not when the
    model has loaded; what a run checks across its prompts (property names and types, which
    become result columns) is the run's.

    Raises:
        ConfigError: A prompt is empty, an entry has another shape, or a schema does not
            describe an object, is not valid JSON Schema or cannot constrain an answer.
    """
    parts = [entry_parts(entry) for entry in prompts]
    for text, schema in parts:
        if schema is not None:
            check_schemas([(text, schema)], reserved=())
    questions = []
    for text, schema in parts:
        schema_json = None if schema is None else canonical_json(schema)
        key = text if schema_json is None else canonical_json({"text": text, "schema": answer_shape(schema)})
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        questions.append(Question(prompt_id=digest, text=text, schema_json=schema_json))
        if schema_json is not None:
            answer_schema(questions[-1])  # compiled once a process: the engine's call finds it made
    return questions


# The README's GPU install command (tests/test_cli.py checks that the README shows it as is).
GPU_INSTALL_COMMAND = (
    'CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DGGML_CUDA_FORCE_CUBLAS=ON '
    '-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL" '
    f'pip install --no-cache-dir --force-reinstall "llama-cpp-python=={llama_cpp.__version__}"'
)


def check_gpu_build(n_gpu_layers: int) -> None:
    """Refuse layers on a GPU with a llama.cpp built without GPU offload, which would run
    them on the CPU without a word (a CPU build is what ``pip install .`` makes unless
    ``CMAKE_ARGS`` asks for CUDA).

    Raises:
        BuildError: ``n_gpu_layers`` is not 0 and the build has no GPU offload.
    """
    if n_gpu_layers != 0 and not runs_on_gpu(n_gpu_layers):
        raise BuildError(
            f"model.n_gpu_layers={n_gpu_layers} asks for layers on a GPU, but this llama-cpp-python "
            f"was built without GPU support; reinstall it for CUDA with: {GPU_INSTALL_COMMAND} "
            "(README, GPU install), or run on the CPU with model.n_gpu_layers=0"
        )


@dataclass(frozen=True)
class CaptionSpec:
    """What it takes to build a :class:`Captioner`, checked: the model preset, generation
    settings and engine knobs as plain values, the system text and the number of questions.

    Built once (from the config: :func:`pipeline.presets.caption_spec`); picklable, so an
    executor can hand it to workers on other machines. Null knobs (``engine.parallel``,
    ``engine.lanes``) and the text weights (``model.text_type``) are decided where the model
    loads, for that machine's device (:meth:`prepare`), and every executor reports them
    (:meth:`Captioner.choices`).

    Attributes:
        model: The preset, with ``dir``, ``text`` and ``mmproj`` absolute (workers may run in
            another folder).
        generation: How answers are generated.
        engine: The engine's knobs.
        system_prompt: The system text (the config's, else the preset's); ``None``: the chat
            format's default.
        max_questions: Most questions asked about one frame.
        identity: The content fingerprints of the model files that the run's ``config_id`` was
            made with (:meth:`ModelFiles.fingerprints`); a worker that finds other files refuses
            them. ``None``: not checked.

    Raises:
        ConfigError: A value is out of range or names no chat format.
    """

    model: ModelPreset
    generation: GenerationSettings
    engine: EngineKnobs
    system_prompt: str | None
    max_questions: int
    identity: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check(self)

    @property
    def source(self) -> ModelSource:
        """Where the preset's files are."""
        m = self.model
        return ModelSource(
            name=m.name, model_dir=_path(m.dir), text_file=m.text_file, mmproj_file=m.mmproj_file,
            repo_id=m.repo_id, download=m.download, generated=m.generated, quantized=m.quantized,
            text_path=_path(m.text), mmproj_path=_path(m.mmproj),
        )

    @property
    def most_frames_in_flight(self) -> int:
        """The most frames in flight a worker may decide on (the fit only lowers the default)."""
        eng = self.engine
        return eng.parallel if eng.parallel is not None else max(eng.parallel_gpu, eng.parallel_cpu)

    def prepare(self) -> tuple[ModelFiles, EngineSettings]:
        """The model files and engine settings for this machine, decided here and only here:
        the weights resolved (fetched when missing) and checked (also against
        :attr:`identity`), the F16 copy made where ``model.text_type`` takes it
        (:mod:`pipeline.caption.gpu_fit`), frames in flight fitted to the GPU's free memory
        when ``engine.parallel`` is null.

        Raises:
            WeightsError: Files missing, not matching, or not those the run planned with, or
                their F16 copy cannot be made (``model.text_type=f16``).
        """
        files = self.source.resolve()
        if self.identity is not None and files.fingerprints() != dict(self.identity):
            raise WeightsError(
                f"the model files on {socket.gethostname()} ({files.text_model}, {files.mmproj}) are not those "
                "the run planned with (their content differs); give every machine the same model files"
            )
        check_pair(files, self.model.image_layout)
        settings = self.engine_settings(files)
        copy_dir = self.source.model_dir or user_cache_dir() / "f16"
        files = pick_text_weights(files, self.model.text_type, settings, copy_dir)
        settings = replace(settings, text_model=str(files.loaded_text))
        if self.engine.parallel is None:
            settings = replace(settings, parallel=frames_in_flight(settings, files))
        return files, settings

    def engine_settings(self, files: ModelFiles) -> EngineSettings:
        """The engine's settings for ``files``, null knobs resolved for this process's device
        (a null ``engine.parallel``: ``engine.parallel_gpu`` or ``engine.parallel_cpu``, not
        yet fitted to the GPU's memory)."""
        model, eng = self.model, self.engine
        parallel = eng.parallel
        if parallel is None:
            parallel = eng.parallel_gpu if runs_on_gpu(model.n_gpu_layers) else eng.parallel_cpu
        load = LoadSettings(
            text_model=str(files.loaded_text),
            mmproj=str(files.mmproj),
            image_layout=model.image_layout,
            n_ctx=model.n_ctx,
            n_gpu_layers=model.n_gpu_layers,
            n_batch=eng.n_batch,
            n_ubatch=eng.n_ubatch,
            flash_attn=eng.flash_attn,
            n_threads=eng.n_threads,
            parallel=parallel,
            lanes=eng.lanes,
            lanes_gpu=eng.lanes_gpu,
            clip_threads=eng.clip_threads,
            prepare_ahead=eng.prepare_ahead,
            overlap_clip=eng.overlap_clip,
            kv_unified=eng.kv_unified,
            max_decode_seqs=eng.max_decode_seqs,
            max_questions=self.max_questions,
        )
        return EngineSettings.of(load, self.answer_settings())

    def answer_settings(self) -> AnswerSettings:
        """How each answer is asked and generated: the same on every machine."""
        gen = self.generation
        return AnswerSettings(
            chat_format=get_chat_format(self.model.chat_format),
            system_prompt=self.system_prompt,
            stop=self.model.stop,
            max_tokens=gen.max_tokens,
            temperature=gen.temperature,
            top_k=gen.top_k,
            top_p=gen.top_p,
            seed=gen.seed,
        )


class Captioner:
    """A loaded LLaVA 1.6 model pair that answers questions about RGB frames.

    Args:
        settings: Resolved engine settings (see :meth:`from_spec` for the usual way in).
        model_name: The preset's name, recorded with every answer.
        files: The model files in use.
    """

    def __init__(self, settings: EngineSettings, model_name: str, files: ModelFiles) -> None:
        self.model_name = model_name
        self.files = files
        self.engine = Engine(settings)
        self._fitted: tuple[str, ...] | None = None  # the prompt ids that check_fits last took

    def choices(self) -> dict[str, Any]:
        """What was decided for this machine (:meth:`CaptionSpec.prepare`), for the run
        summary: the host, the text weights loaded (``as is`` or ``f16`` copy), the frames in
        flight, the lanes and the CLIP threads (known once the model is loaded)."""
        return {
            "host": socket.gethostname(),
            "text_weights": "f16" if self.files.f16_copy else "as is",
            "text_loaded": str(self.files.loaded_text),
            "frames_in_flight": self.engine.settings.parallel,
            "lanes": self.engine.lanes,
            "clip_threads": self.engine.clip_threads,
        }

    @classmethod
    def from_spec(cls, spec: CaptionSpec) -> Captioner:
        """Resolve (and if needed fetch) the weights and check that the pair fits. The model
        is loaded by :meth:`setup` or ``with``.

        Raises:
            BuildError: Layers asked on a GPU of a llama.cpp built without GPU support.
            WeightsError: Files missing or not matching, or their F16 copy cannot be made
                (``model.text_type=f16``).
        """
        check_gpu_build(spec.model.n_gpu_layers)
        files, settings = spec.prepare()
        return cls(settings, spec.model.name, files)

    def describe(self) -> str:
        """The model's files and where it runs, in words (a run's start line)."""
        text, mmproj = self.files.loaded_text, self.files.mmproj
        files = (
            f"{text.name} + {mmproj.name} in {text.parent}" if text.parent == mmproj.parent else f"{text} + {mmproj}"
        )
        return f"model {self.model_name} ({files}) on {self.engine.describe()}"

    def setup(self) -> None:
        """Load the model (once per process; frames and videos reuse it)."""
        self.engine.setup()

    def close(self) -> None:
        """Free the model and its memory."""
        self.engine.close()

    def check_fits(self, questions: list[Question]) -> None:
        """Refuse, before any frame, settings under which even the smallest frame with these
        questions cannot fit the context (:meth:`Engine.check_fits`).

        Raises:
            ConfigError: It cannot fit.
        """
        self.engine.check_fits(questions)

    def __enter__(self) -> Captioner:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def answer(self, image: np.ndarray, prompt: str) -> str: ...

    @overload
    def answer(self, image: np.ndarray, prompt: Mapping[str, Any]) -> Answer: ...

    def answer(self, image: np.ndarray, prompt: str | Mapping[str, Any]) -> str | Answer:
        """The seed's contract: one RGB frame and one prompt in, the answer text out. A prompt
        with a schema (``{"text": ..., "schema": {...}}``) gives its :class:`Answer`: the text,
        and beside it the parsed ``value`` (``None`` unless it is complete and valid:
        ``finish_reason`` says why).

        Raises:
            ConfigError: The prompt is empty or of another shape, its schema cannot constrain
                an answer, or no frame fits the context with it (:meth:`ask`'s checks).
            ValueError: The image is not an ``HxWx3`` uint8 array, or the answer is an error
                (this frame does not fit the context with the prompt: the message says so).
        """
        (answer,) = self.ask(image, [prompt])
        return answer.text if isinstance(prompt, str) else answer

    def ask(self, image: np.ndarray, prompts: PromptEntry | Sequence[PromptEntry]) -> list[Answer]:
        """Several prompts about one frame, the image evaluated once: an answer per prompt, in
        their order. A prompt is a text, or ``{"text": ..., "schema": {...}}`` for an answer
        that must be JSON of that schema (an object): its answer carries the parsed ``value``
        beside the text. One prompt given alone (a text or a dict, not in a list) is one
        prompt: a list of one answer.

        The prompts are checked as a run checks its own: their shape and schemas
        (:func:`make_questions`), their number, and whether they fit the context
        (:meth:`check_fits`, once per set of prompts: one that fits no frame is logged and
        answered with an error, the others go on).

        Raises:
            ConfigError: No prompt, more than the captioner's ``max_questions``, a prompt empty
                or of another shape, a schema that cannot constrain an answer, or prompts with
                which no frame fits the context.
            ValueError: The image is not an ``HxWx3`` uint8 array, or the first prompt's
                answer is an error (the others' errors are in their answers).
        """
        questions = make_questions([prompts] if isinstance(prompts, (str, Mapping)) else prompts)
        most = self.engine.settings.max_questions
        if not questions:
            raise ConfigError("no prompt to ask; give one, or a list of them")
        if len(questions) > most:
            raise ConfigError(
                f"{len(questions)} prompts asked about one frame, but this captioner takes at most {most}; "
                f"make it with max_questions={len(questions)} (captioner_from_preset's keyword)"
            )
        asked = tuple(q.prompt_id for q in questions)
        if asked != self._fitted:
            self.check_fits(questions)
            self._fitted = asked
        ((_, answers),) = list(self.engine.run([(None, image)], questions))
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


def _path(path: str | None) -> Path | None:
    return None if path is None else Path(path)


# The captioner's numbers. llama.cpp takes several as C integers, where a larger value would wrap
# round to another (top_k 2^32 + 5 is 5) and change the answers under a config_id that names the
# value given; a seed of 2^32 - 1 is its "a random seed each time": answers no run could repeat.
_INT32_MAX = 2**31 - 1
_RANGES = {
    "model.n_ctx": Range(512),
    "model.n_gpu_layers": Range(-1, high=_INT32_MAX),
    "generation.max_tokens": Range(1),
    "generation.temperature": Range(0),
    "generation.top_k": Range(0, high=_INT32_MAX),
    "generation.top_p": Range(0, strict=True, high=1),
    "generation.seed": Range(0, high=2**32 - 2),
    "engine.parallel": Range(1, null="for parallel_gpu or parallel_cpu"),
    "engine.parallel_gpu": Range(1),
    "engine.parallel_cpu": Range(1),
    "engine.lanes": Range(1, null="for lanes_gpu on a GPU with one prompt, else 1"),
    "engine.lanes_gpu": Range(1),
    "engine.clip_threads": Range(1, null="for one per lane"),
    "engine.n_threads": Range(1, high=512, null="for the physical cores less one"),  # GGML_MAX_N_THREADS
    "engine.prepare_ahead": Range(0),
    "engine.max_decode_seqs": Range(0, null="for auto"),
    "engine.n_batch": Range(1),
    "engine.n_ubatch": Range(1, high=2**32 - 1),  # a uint32_t
}


def _check(spec: CaptionSpec) -> None:
    """Raise :class:`ConfigError` for the first value out of range."""
    check_ranges(_RANGES, lambda key: attrgetter(key)(spec))
    choices = [
        ("engine.flash_attn", spec.engine.flash_attn, ("auto", "on", "off")),
        ("model.text_type", spec.model.text_type, TEXT_TYPES),
        ("model.image_layout", spec.model.image_layout, IMAGE_LAYOUTS),
    ]
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    if spec.max_questions < 1:
        raise ConfigError(f"at least one prompt is needed, got {spec.max_questions}")
    get_chat_format(spec.model.chat_format)
    _check_lanes(spec)


def _check_lanes(spec: CaptionSpec) -> None:
    """Raise :class:`ConfigError` where the frames in flight, as a worker would take them, are
    more than a llama.cpp context holds (:func:`~pipeline.caption.engine.lanes.too_much_for_a_lane`):
    refused here, before anything is written, rather than where the model loads.

    A worker's lanes run on a GPU exactly when ``model.n_gpu_layers`` is not 0 (a llama.cpp
    without GPU offload refuses that: :func:`check_gpu_build`); a null ``engine.parallel`` is
    ``engine.parallel_gpu`` there, as set (the fit to the GPU's memory only lowers it), else
    ``engine.parallel_cpu``.
    """
    eng = spec.engine
    on_gpu = spec.model.n_gpu_layers != 0
    if eng.parallel is not None:
        parallel, setting = eng.parallel, "engine.parallel"
    elif on_gpu:
        parallel, setting = eng.parallel_gpu, "engine.parallel_gpu"
    else:
        parallel, setting = eng.parallel_cpu, "engine.parallel_cpu"
    n_lanes = lane_count(eng.lanes, eng.lanes_gpu, on_gpu, spec.max_questions, parallel)
    why = too_much_for_a_lane(
        parallel, n_lanes, spec.max_questions, spec.model.n_ctx, eng.kv_unified, eng.n_batch, setting
    )
    if why is not None:
        raise ConfigError(why)
