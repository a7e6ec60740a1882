"""The command line before Hydra sees it: ``--help``, ``--version``, and overrides checked so
that a mistake ends in one line that shows the fix.

The checks themselves (:func:`argument_error`, :func:`config_error`, :func:`as_written`) live in
:mod:`pipeline.overrides`, which the library's :func:`~pipeline.presets.captioner_from_preset`
shares; :func:`command_line` puts them together with Hydra's options.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.config import config_dir
from pipeline.options import hydra_options
from pipeline.overrides import GROUPS, checked_overrides, group_choices

# The keys people set, with the form of their value and one line each (their defaults come
# from conf/, the one source of defaults).
KEYS = (
    ("video", "PATH", "a video, a folder (recursive), a glob, a manifest (.txt), or [a.mp4,b.mp4]"),
    ("output_dir", "DIR", "where the Parquet results and the run logs (_logs/) go"),
    ("prompt", "TEXT", "one question about every frame; replaces prompts"),
    ("prompts", "[Q1,Q2]", "questions about every frame ({text: Q, schema: {...}}: a JSON answer)"),
    ("prompts_file", "FILE", "one prompt per line as written, or a .yaml/.json list of entries; replaces prompts"),
    ("system_prompt", "TEXT", "replaces the model's system text"),
    ("model.dir", "DIR", "the weights' folder (null: the Hugging Face cache; tiny: the user cache)"),
    ("model.text", "FILE", "a text-model GGUF instead of the preset's (e.g. another quant)"),
    ("model.mmproj", "FILE", "an mmproj GGUF instead of the preset's"),
    ("model.n_gpu_layers", "N", "layers on the GPU (-1 all, 0 CPU only)"),
    ("sampler.interval_s", "S", "seconds between sampled frames (sampler=interval)"),
    ("max_frames", "N", "at most N sampled frames per video"),
    ("start_s", "S", "per video: only samples from S seconds on"),
    ("end_s", "S", "per video: only samples before S seconds"),
    ("dry_run", "BOOL", "list the videos and frames a run would caption; load and write nothing"),
    ("generation.max_tokens", "N", "longest answer in tokens"),
    ("engine.n_threads", "N", "llama.cpp CPU threads (null: physical cores less one)"),
    ("engine.parallel", "N", "frames in flight (null: engine.parallel_gpu or engine.parallel_cpu)"),
    ("retry_failed", "BOOL", "try again the videos and frames that failed before"),
    ("stall_timeout_s", "S", "end a run from which nothing came back for S seconds (exit 1; null: never)"),
    ("report", "BOOL", "write output_dir/_report.html at the end"),
    ("shard", "I", "with num_shards=N: do only this part of the videos"),
    ("num_shards", "N", "split the videos into N parts by content (one job per part)"),
    ("min_age_s", "S", "leave a found file changed in the last S seconds for the next run (0: take it now)"),
    ("progress_interval_s", "S", "off a terminal (cron, a pipe): a progress line every S seconds (null: none)"),
    ("export", "[vtt,srt,jsonl,csv]", "also write subtitle tracks and tables to output_dir/_export/ (all: every one)"),
    ("thumbnails.enabled", "BOOL", "a small JPEG of each sampled frame in the thumbnail column"),
    ("checkpoint_frames", "N", "frames per committed chunk: a killed run redoes at most this many per video"),
    ("video_extensions", "[.mp4,...]", "what a folder or glob search takes"),
)
SUBCOMMANDS = (
    ("python -m pipeline.download [model=PRESET] [model.dir=DIR]", "fetch a model's weights ahead of the first run"),
    ("python -m pipeline.export output_dir=DIR format=vtt,srt", "subtitle tracks and tables of the results"),
    ("python -m pipeline.report output_dir=DIR", "the HTML report of the results"),
    ("python -m pipeline.status output_dir=DIR", "how the nights went: runs, videos done, failing, waiting"),
    ("video-caption [key=value ...]", "the installed script: the same as python -m pipeline"),
)
EXAMPLES = (
    "python -m pipeline video=data/sample.mp4 model=tiny   # the generated test model, on CPU",
    "python -m pipeline video=/srv/incoming output_dir=/srv/captions prompts_file=questions.txt",
    "python -m pipeline video=talk.mp4 sampler=scene 'prompts=[Who is speaking?,What is on the slide?]'",
    "python -m pipeline video=talk.mp4 model=llava16_mistral_7b model.dir=/models/mistral",
)
QUOTING = (
    "Quoting: the shell and then Hydra read each argument. Hydra needs quotes around a value with",
    "spaces at its ends, quotes, commas, brackets, parentheses or non-ASCII letters:",
    "  \"prompt=\\\"What's shown?\\\"\"   'prompt=\"Describe the scene (one sentence).\"'",
    "  'video=\"clip (1).mp4\"'   'video=\"a,b.mp4\"'   'video=\"[2024] talk.mp4\"'   \"video='café.mp4'\"",
    "  'prompts=[What is shown?,\"Any text, e.g. signs?\"]'   (a bare comma separates prompts)",
    "or give prompts in a file (prompts_file=questions.txt) and videos in a manifest (video=list.txt).",
)


def version() -> str:
    """``video-caption-pipeline <version>``, then llama-cpp-python's version and whether this
    build can put layers on a GPU, with the devices llama.cpp sees."""
    import llama_cpp

    from pipeline.caption.engine.native import devices

    gpus, cpu = devices()
    if llama_cpp.llama_supports_gpu_offload():
        build = f"GPU build, devices: {', '.join(gpus) or 'none found'}"
    else:
        build = "CPU-only build (no GPU offload: model.n_gpu_layers=0)"
    return "\n".join([
        f"video-caption-pipeline {_package_version('video-caption-pipeline')}",
        f"llama-cpp-python {_package_version('llama-cpp-python')}: {build}" + (f"; CPU: {cpu}" if cpu else ""),
    ])


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def help_text() -> str:
    """The ``--help`` text: usage, the keys people set with their defaults, the config groups
    and their choices, quoting, examples and exit codes."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["video=VIDEO"], return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    width = max(len(f"{key}={form}") for key, form, _ in KEYS) + 2
    lines = [
        "usage: python -m pipeline video=PATH [key=value ...]",
        "       python -m pipeline --help | --version | --cfg job video=PATH [key=value ...]",
        "",
        "Captions sampled frames of videos with LLaVA 1.6 and writes every answer to Parquet in",
        "output_dir. A run does only what is missing there, so a re-run of a finished night does nothing.",
        "",
        "Settings (key=value; [default]):",
    ]
    for key, form, meaning in KEYS:
        default = _shown(OmegaConf.select(cfg, key)) if key != "video" else "required"
        lines.append(f"  {f'{key}={form}':<{width}}{meaning} [{default}]")
    lines += ["", "Groups (key=choice; [default]):"]
    for group in GROUPS:
        lines.append(f"  {group + '=':<{width}}{', '.join(group_choices(group))} [{choices[group]}]")
    lines += ["", *QUOTING, "", "Examples:", *(f"  {example}" for example in EXAMPLES), ""]
    command_width = max(len(command) for command, _ in SUBCOMMANDS) + 2
    lines += ["Sub-commands (key=value too; each has --help):"]
    lines += [f"  {command:<{command_width}}{meaning}" for command, meaning in SUBCOMMANDS]
    lines += [""]
    lines += [
        "Exit codes: 0 done or nothing to do, 1 bad input or config (one line says which) or a crash,",
        "2 some videos failed, 3 every video tried failed, 75 another run holds output_dir.",
        "Every key and its meaning: docs/configuration.md; the whole config: --cfg job video=PATH.",
    ]
    return "\n".join(lines)


def command_line(args: list[str]) -> list[str]:
    """The command line as Hydra is to read it: its options first (:func:`~pipeline.options.hydra_options`:
    Hydra takes no override after one), then the overrides, checked and their text values quoted
    (:func:`~pipeline.overrides.checked_overrides`).

    Raises:
        UserError: One line for the first mistake, with its fix.
    """
    options, overrides = hydra_options(args)
    return [*options, *checked_overrides(overrides, multirun="--multirun" in options)]


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if OmegaConf.is_list(value):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


