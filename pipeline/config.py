"""Config schemas, their registration with Hydra, and composing a config without the CLI.

The YAML in ``conf/`` is the source of truth for every value; these dataclasses only say which
keys exist and of what type (``MISSING``: the YAML gives the value). Hydra merges
``conf/config.yaml`` with the chosen ``model/``, ``sampler/`` and ``executor/`` files onto
them, so a misspelt key or a wrong type fails before any work starts.

:func:`compose_config` composes the config as the command line would, for library use
(:func:`pipeline.presets.captioner_from_preset`), notebooks and tests.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline.errors import ConfigError
from pipeline.listfile import STRUCTURED_SUFFIXES, read_list_file, read_structured_list
from pipeline.paths import Chosen, not_a_folder, printable, unwritable, user_cache_dir, user_path
from pipeline.ranges import Range, check_ranges
from pipeline.structured import PromptEntry


@dataclass
class ModelConfig:
    """A model preset (``conf/model/*.yaml``; the keys every preset shares are in
    ``conf/config.yaml``)."""

    name: str = MISSING
    repo_id: str | None = MISSING
    text_file: str = MISSING
    mmproj_file: str = MISSING
    text: str | None = MISSING
    mmproj: str | None = MISSING
    dir: str | None = MISSING
    download: bool = MISSING
    generated: bool = MISSING
    quantized: bool = MISSING
    text_type: str = MISSING
    chat_format: str = MISSING
    image_layout: str = MISSING
    system_prompt: str | None = MISSING
    stop: list[str] = MISSING
    n_ctx: int = MISSING
    n_gpu_layers: int = MISSING


@dataclass
class GenerationConfig:
    """How answers are generated."""

    max_tokens: int = MISSING
    temperature: float = MISSING
    top_k: int = MISSING
    top_p: float = MISSING
    seed: int = MISSING


@dataclass
class EngineConfig:
    """Runtime knobs of the llama-cpp-python engine."""

    parallel: int | None = MISSING
    parallel_gpu: int = MISSING
    parallel_cpu: int = MISSING
    lanes: int | None = MISSING
    lanes_gpu: int = MISSING
    clip_threads: int | None = MISSING
    n_batch: int = MISSING
    n_ubatch: int = MISSING
    flash_attn: str = MISSING
    n_threads: int | None = MISSING
    prefetch_frames: int = MISSING
    prepare_ahead: int = MISSING
    overlap_clip: bool = MISSING
    kv_unified: bool = MISSING
    max_decode_seqs: int | None = MISSING


@dataclass
class DedupConfig:
    """``sampler.dedup``: drop samples that repeat an earlier one anywhere in the video."""

    _target_: str = "pipeline.sampling.Dedup"
    enabled: bool = MISSING
    threshold: int = MISSING
    keep_duplicates: bool = MISSING


@dataclass
class IntervalSamplerConfig:
    """``sampler=interval``: one frame every ``interval_s`` seconds."""

    _target_: str = "pipeline.sampling.IntervalSampler"
    interval_s: float = MISSING
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class AllSamplerConfig:
    """``sampler=all``: every frame."""

    _target_: str = "pipeline.sampling.AllSampler"


@dataclass
class SceneSamplerConfig:
    """``sampler=scene``: one frame per shot (and per ``fallback_interval_s`` of a long shot)."""

    _target_: str = "pipeline.sampling.SceneSampler"
    pick: str = MISSING
    threshold: float = MISSING
    min_shot_s: float = MISSING
    fallback_interval_s: float | None = MISSING
    analysis_width: int = MISSING
    analysis_stride: int = MISSING
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class ThumbnailsConfig:
    """A small JPEG of each sampled frame in every row (``thumbnail`` column)."""

    enabled: bool = MISSING
    long_side_px: int = MISSING
    quality: int = MISSING


@dataclass
class LocalExecutorConfig:
    """``executor=local``: decode on a thread, caption in this process."""

    _target_: str = "pipeline.executors.local.LocalExecutor"


@dataclass
class RayExecutorConfig:
    """``executor=ray``: decode tasks and long-lived captioner actors on a Ray cluster."""

    _target_: str = "pipeline.executors.ray.RayExecutor"
    address: str = MISSING
    num_actors: int | None = MISSING
    gpus_per_actor: float | None = MISSING
    cpus_per_actor: float = MISSING
    frames_per_actor: int | None = MISSING
    decode_tasks: int | None = MISSING
    cpus_per_decode: float = MISSING
    retries: int = MISSING
    connect_timeout_s: float = MISSING


@dataclass
class Config:
    """The whole run."""

    video: Any = MISSING  # a path, folder, glob or manifest, or a list of them
    video_extensions: list[str] = MISSING
    output_dir: str = MISSING
    checkpoint_frames: int = MISSING
    retry_failed: bool = MISSING
    stall_timeout_s: float | None = MISSING
    progress_interval_s: float | None = MISSING
    prompt: str | None = MISSING
    prompts: list[Any] = MISSING  # texts, or {text: ..., schema: {...}} (pipeline.structured)
    prompts_file: str | None = MISSING
    system_prompt: str | None = MISSING
    max_frames: int | None = MISSING
    min_age_s: float = MISSING
    start_s: float = MISSING
    end_s: float | None = MISSING
    dry_run: bool = MISSING
    model: ModelConfig = MISSING
    sampler: Any = MISSING
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    thumbnails: ThumbnailsConfig = field(default_factory=ThumbnailsConfig)
    report: bool = MISSING
    export: Any = MISSING  # formats: vtt, srt, jsonl, csv (a name or a list)
    executor: Any = MISSING
    shard: int = MISSING
    num_shards: int = MISSING


# What goes into ``config_id``: every setting of the model, generation and engine nodes is in
# exactly one of these two tables (tests/test_model_identity.py holds them to the schemas), so
# a new setting is a decision, not an accident. In: what can change an answer to a frame.
ANSWER_SETTINGS: dict[str, tuple[str, ...]] = {
    "model": ("chat_format", "image_layout", "stop"),
    "generation": ("max_tokens", "temperature", "top_k", "top_p", "seed"),
}
# Out, and why (the README's table says the same).
OTHER_SETTINGS: dict[str, dict[str, str]] = {
    "model": {
        "name": "a label; the rows' model column records it",
        "repo_id": "where the files come from; their content is in instead",
        "text_file": "a file name; the file's content is in instead",
        "mmproj_file": "a file name; the file's content is in instead",
        "text": "a path; the file's content is in instead",
        "mmproj": "a path; the file's content is in instead",
        "dir": "where the files are; moving them changes no answer",
        "download": "whether missing files are fetched",
        "generated": "which files; their content is in instead",
        "quantized": "which files; their content is in instead",
        "text_type": "the F16 copy holds the values the quantized file stands for: the same model",
        "system_prompt": "the system text in use is in (this or the run's system_prompt)",
        "n_ctx": "a frame that fits gets the same answer; one that does not gets an error, not an answer",
        "n_gpu_layers": "where layers run, not what they compute",
    },
    "engine": {
        "parallel": "frames in flight: how many are answered at once",
        "parallel_gpu": "frames in flight",
        "parallel_cpu": "frames in flight",
        "lanes": "contexts sharing the frames in flight",
        "lanes_gpu": "contexts sharing the frames in flight",
        "clip_threads": "frames CLIP-encoded at once; the same graph on each",
        "n_batch": "tokens per native call",
        "n_ubatch": "tokens per compute step",
        "flash_attn": "a kernel choice",
        "n_threads": "CPU threads",
        "prefetch_frames": "decoded frames queued",
        "prepare_ahead": "frames prepared ahead",
        "overlap_clip": "when CLIP runs",
        "kv_unified": "how the KV cache is laid out",
        "max_decode_seqs": "sequences per native call",
    },
}
# Sampling settings that greedy decoding (temperature 0) never reads.
_SAMPLING_ONLY = ("top_k", "top_p", "seed")


# The numeric settings the run reads itself; a sampler's, an executor's, the captioner's
# (``model.*``, ``generation.*``, ``engine.*`` but ``prefetch_frames``) and the thumbnails'
# settings are checked by what is built from them. null, where the schema allows it, means
# "none" (no cap, no end, never) and is always taken.
_RANGES = {
    "max_frames": Range(1, null="for no cap"),
    "min_age_s": Range(0),
    "start_s": Range(0),
    "end_s": Range(0, strict=True, null="for the end of each video"),
    "checkpoint_frames": Range(1),
    # A day at most between progress lines, a week for a stall: longer is null's "never" (and
    # beyond the longest wait a thread takes, 1e10 s, was a traceback).
    "stall_timeout_s": Range(0, strict=True, high=7 * 86400, null="to wait for ever"),
    "progress_interval_s": Range(1, high=86400, null="for no progress lines"),  # a second at least: lines, not a flood
    # Each queued frame is a decoded frame in host memory (6 MB at 1080p): a night's memory stays flat.
    "engine.prefetch_frames": Range(1, high=256),
}


# The settings that name a path, what each names and what null means where the schema takes
# it. Empty (an unset variable in a cron line: output_dir=$OUT) would mean the working folder.
_PATHS = {
    "output_dir": ("the folder for the results", ""),
    "model.dir": ("the weights' folder", "for the Hugging Face cache (the user cache for tiny)"),
    "model.text": ("a text-model GGUF file", "for the preset's"),
    "model.mmproj": ("an mmproj GGUF file", "for the preset's"),
    "model.text_file": ("the text model's file name", ""),
    "model.mmproj_file": ("the mmproj's file name", ""),
    "prompts_file": ("a file of prompts", "for prompts"),
}


def check_values(cfg: DictConfig) -> None:
    """Check every setting the run reads itself, before anything is written or loaded: the
    one check of a dry run and a real run alike (a negative ``max_frames`` would caption
    nothing and report success; an empty ``output_dir`` would write into the working folder).

    Raises:
        ConfigError: The first setting out of its range, an empty window, an empty path, a
            folder that a file stands in the way of, or a model file that is not there.
    """
    check_ranges(_RANGES, partial(OmegaConf.select, cfg))
    if cfg.end_s is not None and cfg.start_s >= cfg.end_s:
        raise ConfigError(
            f"start_s={cfg.start_s:g} end_s={cfg.end_s:g} is an empty window: start_s must be below end_s "
            "(end_s=null: to the end of each video)"
        )
    _check_paths(cfg, _PATHS)
    _check_places(cfg)


def check_caption_values(cfg: DictConfig) -> None:
    """The part of :func:`check_values` that a captioner's paths take: no empty model path
    (``model.dir=`` would be the working folder). :func:`pipeline.presets.caption_spec` runs
    it, for library use too, where no run calls :func:`check_values`; the captioner's numbers
    are its own to check (:class:`~pipeline.caption.CaptionSpec`).

    Raises:
        ConfigError: The first such path that is empty.
    """
    _check_paths(cfg, {key: words for key, words in _PATHS.items() if key.startswith("model.")})


def _check_paths(cfg: DictConfig, paths: Mapping[str, tuple[str, str]]) -> None:
    """Raise :class:`ConfigError` for the first of ``paths`` that is empty."""
    for key, (names, null) in paths.items():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and not value.strip():
            or_null = f", or {key}=null {null}" if null else ""
            raise ConfigError(f"{key}= is empty (an unset variable?); give {names}{or_null}")


def _check_places(cfg: DictConfig) -> None:
    """No path named is longer than the system takes; the folders a run writes into must be (or
    become) folders, the model files named must be files: found now, not after the night's
    record is written or the model is fetched."""
    named = {setting: value for setting in _PATHS if isinstance(value := OmegaConf.select(cfg, setting), str)}
    for setting, value in named.items():
        if (too_long := _longer_than_names_go(user_path(value))) is not None:
            raise ConfigError(f"{setting}={printable(value)}: {too_long}; choose another {setting}")
    folders = [(cfg.output_dir, "the results", "output_dir"), (user_cache_dir(), "the pipeline's cache", None)]
    if cfg.model.dir is not None:
        folders.append((cfg.model.dir, "the model files (model.dir)", "model.dir"))
    for folder, what, key in folders:  # the cache's fix is its variable (paths.unwritable)
        path = user_path(folder).absolute()
        if not_a_folder(path) is not None:
            chosen = Chosen(path, f"choose another {key}") if key is not None else None
            raise ConfigError(unwritable(user_path(folder), None, what, chosen))
    for key in ("text", "mmproj"):
        value = cfg.model[key]
        if value is not None and not user_path(value).is_file():
            path = user_path(value).absolute()
            raise ConfigError(f"model.{key}={path} is not a file; give the path of a GGUF file")


def _longer_than_names_go(path: Path) -> str | None:
    """What the system says of ``path`` where a name in it, or the whole, is longer than it
    takes (``File name too long``); ``None`` otherwise."""
    try:
        os.lstat(path)
    except OSError as error:
        return error.strerror if error.errno == errno.ENAMETOOLONG else None
    return None


def settings_id(settings: Mapping[str, Any]) -> str:
    """A short hash of JSON-able settings, each number by its value: ``-0.0`` is ``0.0``
    (``generation.temperature=-0.0`` decodes greedily as 0 does, and must not redo a night)."""
    return hashlib.sha256(json.dumps(_signless_zeros(settings), sort_keys=True, default=str).encode()).hexdigest()[:12]


def _signless_zeros(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _signless_zeros(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_signless_zeros(item) for item in value]
    return 0.0 if isinstance(value, float) and value == 0 else value


def answer_settings(config: Mapping[str, Any], model_identity: Mapping[str, str]) -> dict[str, Any]:
    """The settings that can change an answer to a frame, and only those: what ``config_id``
    is a hash of.

    Args:
        config: The composed config as plain values (``OmegaConf.to_container``).
        model_identity: The content fingerprints of the model files
            (:meth:`pipeline.caption.weights.ModelFiles.fingerprints`): a model is its
            content, not its file name or folder.

    In: the model files' content, :data:`ANSWER_SETTINGS` (with greedy decoding, temperature
    0, not the sampling settings it never reads), the system text in use and the sampler
    (which frames are asked, their sample reason and shot). Out: :data:`OTHER_SETTINGS`, the
    prompts (each row has its ``prompt_id``), where the videos and results are.
    """
    model, generation = config["model"], config["generation"]
    answer_generation = {key: generation[key] for key in ANSWER_SETTINGS["generation"]}
    if answer_generation["temperature"] <= 0:
        for key in _SAMPLING_ONLY:
            del answer_generation[key]
    system = config["system_prompt"] if config["system_prompt"] is not None else model["system_prompt"]
    return {
        "model": {"files": dict(model_identity), **{key: model[key] for key in ANSWER_SETTINGS["model"]}},
        "generation": answer_generation,
        "system_prompt": system,
        "sampler": config["sampler"],
    }


def config_id(config: Mapping[str, Any], model_identity: Mapping[str, str]) -> str:
    """The ``config_id`` of rows made under ``config`` with the model of ``model_identity``: a
    short hash of :func:`answer_settings`."""
    return settings_id(answer_settings(config, model_identity))


def prompts_of(cfg: DictConfig) -> list[PromptEntry]:
    """The run's prompt entries: ``prompt``, else those of ``prompts_file``, else ``prompts``.

    An entry is the prompt's text, or ``{text: ..., schema: {...}}`` for an answer that must be
    JSON of that schema (:mod:`pipeline.structured`; checked where the questions are made). A
    prompts file ending in ``.yaml``, ``.yml`` or ``.json`` holds a list of entries. Any other is
    UTF-8 text with one prompt per line, taken as written (only the spaces around it are
    dropped): commas, quotes, brackets and any letters need no escaping. Blank lines and lines
    starting with ``#`` are skipped.

    Raises:
        ConfigError: ``prompt`` and ``prompts_file`` are both set, or the file holds no prompt.
        InputError: The prompts file cannot be read (as UTF-8, or as YAML or JSON).
    """
    if cfg.prompt is not None and cfg.prompts_file is not None:
        raise ConfigError("prompt and prompts_file are both set; keep one of them")
    if cfg.prompt is not None:
        return [cfg.prompt]
    if cfg.prompts_file is not None:
        return _read_prompts_file(user_path(cfg.prompts_file))
    return cast(list[PromptEntry], OmegaConf.to_container(cfg.prompts, resolve=True))


def _read_prompts_file(path: Path) -> list[PromptEntry]:
    if path.suffix.lower() in STRUCTURED_SUFFIXES:
        prompts: list[PromptEntry] = read_structured_list(path, "prompts_file", "prompt")
        how = "a list of prompts, each a text or {text: ..., schema: {...}}"
    else:
        prompts = list(read_list_file(path, "prompts_file", "prompt"))
        how = "one prompt per line (# starts a comment line)"
    if not prompts:
        raise ConfigError(f"prompts_file={path} holds no prompt; write {how}")
    return prompts


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (the YAML files extend them).

    Done when this module is imported: a process that only unpickles a Hydra job (a submitit
    launcher's) composes its config too, and must find them. Doing it again is harmless.
    """
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="sampler", name="interval_schema", node=IntervalSamplerConfig)
    cs.store(group="sampler", name="all_schema", node=AllSamplerConfig)
    cs.store(group="sampler", name="scene_schema", node=SceneSamplerConfig)
    cs.store(group="executor", name="local_schema", node=LocalExecutorConfig)
    cs.store(group="executor", name="ray_schema", node=RayExecutorConfig)


def config_dir() -> Path:
    """The ``conf/`` folder: the checkout's top-level one, or the copy installed in the package."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "conf"
    if checkout.is_dir() and (package.parent / "pyproject.toml").is_file():
        return checkout
    return package / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose the config as ``python -m pipeline OVERRIDES`` would (for library use, notebooks
    and tests).

    Raises:
        omegaconf.errors.OmegaConfBaseException: A key or value does not fit the schemas.
        hydra.errors.HydraException: An override names no config group option.
    """
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


register_configs()
