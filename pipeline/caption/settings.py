"""What a :class:`~pipeline.caption.Captioner` is built from, as plain values: the model
preset, how answers are generated and the engine's knobs.

The caption package reads no config: :mod:`pipeline.presets` fills these records from a composed
config (``conf/`` holds every default), and a library caller may build them by hand. The field
names are the config keys under ``model``, ``generation`` and ``engine``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPreset:
    """A model preset (``conf/model/*.yaml``): where its files are, how it loads and how its
    prompts are written.

    Attributes:
        name: The preset's name, recorded with every answer.
        repo_id: Hugging Face repository to fetch missing files from (``None``: none).
        text_file: File name of the text GGUF.
        mmproj_file: File name of the CLIP projector GGUF.
        text: Path of the text GGUF, overriding ``dir``/``text_file`` (``None``: not set).
        mmproj: Path of the projector GGUF, overriding ``dir``/``mmproj_file``.
        dir: Folder of the files (``None``: the user cache).
        download: Fetch missing files from ``repo_id``.
        generated: The files are generated here (the tiny test model).
        quantized: The text weights are quantized.
        text_type: Which text weights to load (:data:`pipeline.caption.gpu_fit.TEXT_TYPES`).
        chat_format: The chat format's name (:mod:`pipeline.caption.formats`).
        image_layout: The image tokens' layout (:data:`pipeline.caption.engine.IMAGE_LAYOUTS`).
        system_prompt: The preset's system text (``None``: the chat format's default).
        stop: Strings that end an answer.
        n_ctx: KV cells for one frame's conversation.
        n_gpu_layers: Layers offloaded to the GPU (-1: all).
    """

    name: str
    repo_id: str | None
    text_file: str
    mmproj_file: str
    text: str | None
    mmproj: str | None
    dir: str | None
    download: bool
    generated: bool
    quantized: bool
    text_type: str
    chat_format: str
    image_layout: str
    system_prompt: str | None
    stop: tuple[str, ...]
    n_ctx: int
    n_gpu_layers: int


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are generated (see :class:`~pipeline.caption.engine.AnswerSettings`)."""

    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int


@dataclass(frozen=True)
class EngineKnobs:
    """The engine's knobs as configured: ``None`` for ``parallel``, ``lanes`` and ``n_threads``
    is settled where the model loads, for that machine (a null ``parallel``: ``parallel_gpu``
    with layers on a GPU, fitted to its free memory, else ``parallel_cpu``; see
    :class:`~pipeline.caption.engine.LoadSettings` for what each does)."""

    parallel: int | None
    parallel_gpu: int
    parallel_cpu: int
    lanes: int | None
    lanes_gpu: int
    clip_threads: int | None
    n_batch: int
    n_ubatch: int
    flash_attn: str
    n_threads: int | None
    prepare_ahead: int
    overlap_clip: bool
    kv_unified: bool
    max_decode_seqs: int | None
