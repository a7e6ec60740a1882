"""Config schemas: the YAML in ``conf/`` is the source of truth, these dataclasses validate it.

Hydra merges ``conf/config.yaml`` with the chosen ``model/``, ``sampler/`` and ``executor/``
files onto these schemas, so a misspelt key or a wrong type fails before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    """A model preset (``conf/model/*.yaml``)."""

    name: str = MISSING
    repo_id: Optional[str] = None
    text_file: str = MISSING
    mmproj_file: str = MISSING
    dir: str = "artifacts"
    download: bool = True
    generated: bool = False
    quantized: bool = False
    chat_format: str = MISSING
    image_layout: str = MISSING
    system_prompt: Optional[str] = None
    stop: list[str] = field(default_factory=list)
    n_ctx: int = 4096
    n_gpu_layers: int = -1


@dataclass
class GenerationConfig:
    """How answers are generated."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    seed: int = 0


@dataclass
class EngineConfig:
    """Runtime knobs of the llama-cpp-python engine."""

    parallel: Optional[int] = None
    lanes: Optional[int] = None
    n_batch: int = 2048
    n_ubatch: int = 1024
    flash_attn: str = "auto"
    n_threads: Optional[int] = None
    prefetch_frames: int = 8
    prepare_ahead: int = 2
    overlap_clip: bool = True
    kv_unified: bool = False
    max_decode_seqs: Optional[int] = None


@dataclass
class DedupConfig:
    """``sampler.dedup``: drop samples that repeat an earlier one anywhere in the video."""

    _target_: str = "pipeline.sampling.Dedup"
    enabled: bool = False
    threshold: int = 10
    keep_duplicates: bool = False


@dataclass
class IntervalSamplerConfig:
    """``sampler=interval``: one frame every ``interval_s`` seconds."""

    _target_: str = "pipeline.sampling.IntervalSampler"
    interval_s: float = 1.0
    dedup: DedupConfig = field(default_factory=DedupConfig)


@dataclass
class AllSamplerConfig:
    """``sampler=all``: every frame."""

    _target_: str = "pipeline.sampling.AllSampler"


@dataclass
class SceneSamplerConfig:
    """``sampler=scene``: one frame per shot (and per ``fallback_interval_s`` of a long shot)."""

    _target_: str = "pipeline.sampling.SceneSampler"
    pick: str = "first_settled"
    threshold: float = 8.0
    min_shot_s: float = 0.5
    fallback_interval_s: Optional[float] = 10.0
    analysis_width: int = 64
    analysis_stride: int = 4
    dedup: DedupConfig = field(default_factory=lambda: DedupConfig(enabled=True))


@dataclass
class ThumbnailsConfig:
    """A small JPEG of each sampled frame in every row (``thumbnail`` column)."""

    enabled: bool = True
    long_side_px: int = 256
    quality: int = 80


@dataclass
class LocalExecutorConfig:
    """``executor=local``: decode on a thread, caption in this process."""

    _target_: str = "pipeline.run.LocalExecutor"


@dataclass
class RayExecutorConfig:
    """``executor=ray``: decode tasks and long-lived captioner actors on a Ray cluster."""

    _target_: str = "pipeline.ray_executor.RayExecutor"
    address: str = "auto"
    num_actors: Optional[int] = None
    gpus_per_actor: Optional[float] = None
    cpus_per_actor: float = 1.0
    frames_per_actor: Optional[int] = None
    decode_tasks: Optional[int] = None
    cpus_per_decode: float = 1.0
    retries: int = 3


@dataclass
class Config:
    """The whole run."""

    video: str = MISSING
    video_extensions: list[str] = field(
        default_factory=lambda: [".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"]
    )
    output_dir: str = "data/output"
    checkpoint_frames: int = 32
    retry_failed: bool = False
    prompt: Optional[str] = None
    prompts: list[str] = field(default_factory=lambda: ["Describe this frame in one sentence."])
    system_prompt: Optional[str] = None
    max_frames: Optional[int] = None
    model: ModelConfig = MISSING
    sampler: Any = MISSING
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    thumbnails: ThumbnailsConfig = field(default_factory=ThumbnailsConfig)
    report: bool = True
    export: Any = field(default_factory=list)  # formats: vtt, srt, jsonl, csv (a name or a list)
    executor: Any = MISSING
    shard: int = 0
    num_shards: int = 1


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (the YAML files extend them)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="sampler", name="interval_schema", node=IntervalSamplerConfig)
    cs.store(group="sampler", name="all_schema", node=AllSamplerConfig)
    cs.store(group="sampler", name="scene_schema", node=SceneSamplerConfig)
    cs.store(group="executor", name="local_schema", node=LocalExecutorConfig)
    cs.store(group="executor", name="ray_schema", node=RayExecutorConfig)
