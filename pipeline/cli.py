"""Command line: ``python -m pipeline video=PATH [key=value ...]`` (Hydra).

Exit codes: 0 all videos done, 2 finished but some videos failed, 1 bad input or crash.
Every expected failure prints one line naming the problem and the fix, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.caption import Captioner, EngineError, WeightsError
from pipeline.config import register_configs
from pipeline.run import InputError, Pipeline, find_videos
from pipeline.store import StoreError, prepare_output_dir

log = logging.getLogger("pipeline")

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_SOME_FAILED = 2


def config_dir() -> Path:
    """The ``conf/`` folder: the checkout's top-level one, or the copy installed in the package."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "conf"
    if checkout.is_dir() and (package.parent / "pyproject.toml").is_file():
        return checkout
    return package / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose the config as the command line would (for notebooks and tests)."""
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_from_config(cfg: DictConfig) -> int:
    """Run the pipeline for a composed config; returns the exit code."""
    try:
        prompts = [cfg.prompt] if cfg.prompt is not None else list(cfg.prompts)
        sampler = _build_sampler(cfg)
        videos = find_videos(cfg.video)
        output_dir = prepare_output_dir(cfg.output_dir)
        captioner = Captioner.from_config(cfg, max_questions=len(prompts))
        with captioner:
            pipeline = Pipeline(
                captioner,
                sampler,
                prompts,
                output_dir,
                max_frames=cfg.max_frames,
                prefetch_frames=cfg.engine.prefetch_frames,
                metadata={"config": OmegaConf.to_container(cfg, resolve=True)},
            )
            summary = pipeline.run(videos)
    except (InputError, WeightsError, StoreError, EngineError, ValueError) as error:
        log.error("%s", error)
        return EXIT_CRASH
    except OmegaConfBaseException as error:
        log.error("bad config: %s", str(error).splitlines()[0])
        return EXIT_CRASH
    log.info(
        "finished: %d videos, %d failed, %d frames in %.1f s -> %s",
        len(summary.videos),
        len(summary.failed),
        summary.frames,
        summary.wall_s,
        output_dir,
    )
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


def _build_sampler(cfg: DictConfig):  # noqa: ANN202  (any Sampler)
    try:
        return instantiate(cfg.sampler)
    except Exception as error:  # Hydra wraps the sampler's own ValueError
        cause = error.__cause__ or error
        raise ValueError(str(cause).splitlines()[0]) from error


def _check_group_choices(argv: list[str]) -> None:
    """Fail in one line on ``model=``/``sampler=`` choices that do not exist.

    Hydra's own message for these spans a dozen lines with its search path.
    """
    for arg in argv:
        key, _, value = arg.partition("=")
        group = key.lstrip("+~")
        if group in ("model", "sampler") and value:
            choices = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
            if value not in choices:
                print(
                    f"error: unknown {group}={value}; choose one of: {', '.join(choices)}",
                    file=sys.stderr,
                )
                sys.exit(EXIT_CRASH)


register_configs()


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    sys.exit(run_from_config(cfg))


def main() -> None:
    """Entry point of ``python -m pipeline`` and the ``video-caption`` script."""
    _check_group_choices(sys.argv[1:])
    _hydra_main()
