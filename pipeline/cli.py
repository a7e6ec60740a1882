"""Command line: ``python -m pipeline video=PATH [key=value ...]`` (Hydra).

Exit codes: 0 all videos done (or nothing to do), 2 finished but some videos failed, 1 bad
input, full disk or crash, 75 another run holds the lock on ``output_dir``.
Every expected failure prints one line naming the problem and the fix, never a traceback.
Under ``-m`` (a sweep, e.g. shards through a launcher) each job's code is in its run summary,
and a job that exits 1 or 75 fails the sweep.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.caption import EngineError, WeightsError
from pipeline.config import register_configs
from pipeline.lock import LockHeld, RunLock
from pipeline.run import (
    Executor,
    ExecutorError,
    InputError,
    Pipeline,
    RunSummary,
    find_videos,
    settings_id,
    shard_videos,
)
from pipeline.store import StoreError, prepare_output_dir, write_json_atomic
from pipeline.thumbnails import make_thumbnail

log = logging.getLogger("pipeline")

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_SOME_FAILED = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later


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
        sampler = _instantiate(cfg.sampler)
        executor = _instantiate(cfg.executor)
        videos = shard_videos(find_videos(cfg.video, list(cfg.video_extensions)), cfg.shard, cfg.num_shards)
        output_dir = prepare_output_dir(cfg.output_dir)
        with RunLock(output_dir, name=f"_lock{_shard_suffix(cfg)}"):
            return _run_locked(cfg, prompts, sampler, executor, videos, output_dir)
    except LockHeld as error:
        log.error("%s", error)
        return EXIT_LOCKED
    except (InputError, WeightsError, StoreError, EngineError, ExecutorError, ValueError) as error:
        log.error("%s", error)
        return EXIT_CRASH
    except OmegaConfBaseException as error:
        log.error("bad config: %s", str(error).splitlines()[0])
        return EXIT_CRASH
    except Exception as error:  # a bug: one line here, the traceback in the run's log file
        log.error("crashed: %s: %s (traceback in the run's log file)", type(error).__name__, error)
        logging.getLogger("pipeline.crash").debug("traceback", exc_info=True)
        return EXIT_CRASH


def _run_locked(
    cfg: DictConfig,
    prompts: list[str],
    sampler: Any,
    executor: Executor,
    videos: list[Path],
    output_dir: Path,
) -> int:
    started = time.time()
    export_formats: list[str] = []
    if cfg.export:  # pandas loads only when an export is due; a bad format fails before the model
        from pipeline.export import parse_formats

        export_formats = parse_formats(cfg.export)
    config = OmegaConf.to_container(cfg, resolve=True)
    pipeline = Pipeline(
        sampler,
        prompts,
        output_dir,
        config_id=settings_id(
            {k: config[k] for k in ("model", "generation", "sampler", "system_prompt")}
        ),
        max_frames=cfg.max_frames,
        checkpoint_frames=cfg.checkpoint_frames,
        retry_failed=cfg.retry_failed,
        prefetch_frames=cfg.engine.prefetch_frames,
        metadata={"config": config},
        thumbnail=_thumbnailer(cfg),
    )
    tasks = pipeline.plan(videos)
    summary = None
    code = EXIT_CRASH
    try:
        if any(t.outcome.status == "todo" for t in tasks):
            try:
                executor.start(cfg, max_questions=len(prompts))
                summary = pipeline.run(tasks, executor)
            finally:
                executor.close()
        else:
            summary = pipeline.run(tasks, None)
        code = EXIT_SOME_FAILED if summary.count("error") else EXIT_OK
    finally:
        summary_record = summary or RunSummary(videos=[t.outcome for t in tasks])
        _write_summary(output_dir, started, code, summary_record, _shard_suffix(cfg))
    failed_before = sum(1 for t in tasks if t.outcome.status == "skipped" and t.outcome.error)
    if not summary.count("done") and not summary.count("error"):
        log.info("nothing to do: %d videos already done in %s", len(tasks), output_dir)
    else:
        log.info(
            "finished: %d done, %d skipped, %d failed; %d frames in %.1f s -> %s",
            summary.count("done"), summary.count("skipped"), summary.count("error"),
            summary.frames, summary.wall_s, output_dir,
        )
    if failed_before:
        log.info("%d videos failed in earlier runs; retry_failed=true tries them again", failed_before)
    if export_formats and summary.count("done"):
        try:
            from pipeline.export import export

            log.info("export: %s", export(output_dir, export_formats).folder)
        except (OSError, StoreError) as error:
            log.warning("export not written: %s", error)
    if cfg.report and summary.count("done"):
        try:
            from pipeline.report import write_report  # pandas: loaded only when a report is due

            log.info("report: %s", write_report(output_dir))
        except (OSError, StoreError) as error:
            log.warning("report not written: %s", error)
    return code


def _thumbnailer(cfg: DictConfig) -> Callable[[np.ndarray], bytes] | None:
    """``make_thumbnail`` with the configured settings, checked now; ``None`` when off."""
    settings = cfg.thumbnails
    if not settings.enabled:
        return None
    make = partial(make_thumbnail, long_side_px=settings.long_side_px, quality=settings.quality)
    make(np.zeros((2, 2, 3), np.uint8))  # a bad setting fails before the model loads
    return make


def _shard_suffix(cfg: DictConfig) -> str:
    """``-shard<i>of<n>`` when the videos are sharded (for the lock and summary names), else ""."""
    return f"-shard{cfg.shard}of{cfg.num_shards}" if cfg.num_shards > 1 else ""


def _write_summary(
    output_dir: Path, started: float, code: int, summary: RunSummary, suffix: str = ""
) -> None:
    """``_runs/<start time><suffix>.json`` and ``_last_run<suffix>.json``: what the run did, for
    machines (``suffix`` names the shard)."""
    record = {
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "exit_code": code,
        **summary.as_dict(),
    }
    stamp = datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    try:
        write_json_atomic(output_dir / "_runs" / f"{stamp}{suffix}.json", record)
        write_json_atomic(output_dir / f"_last_run{suffix}.json", record)
    except StoreError as error:
        log.warning("run summary not written: %s", error)


def _instantiate(node: DictConfig) -> Any:
    """A sampler or executor from its config node; its own error becomes one line."""
    try:
        return instantiate(node)
    except Exception as error:  # Hydra wraps the object's own ValueError or ExecutorError
        cause = error.__cause__ or error
        kind = ExecutorError if isinstance(cause, ExecutorError) else ValueError
        raise kind(str(cause).splitlines()[0]) from error


def _check_group_choices(argv: list[str]) -> None:
    """Fail in one line on ``model=``/``sampler=``/``executor=`` choices that do not exist.

    Hydra's own message for these spans a dozen lines with its search path.
    """
    for arg in argv:
        key, _, value = arg.partition("=")
        group = key.lstrip("+~")
        if group in ("model", "sampler", "executor") and value:
            choices = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
            if value not in choices:
                print(
                    f"error: unknown {group}={value}; choose one of: {', '.join(choices)}",
                    file=sys.stderr,
                )
                sys.exit(EXIT_CRASH)


register_configs()


class JobFailed(Exception):
    """A job of a sweep (``-m``) exited 1 or 75; raised so that the sweep reports it."""


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> int:
    code = run_from_config(cfg)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(code)
    # sys.exit would end the whole sweep (or, under a launcher, the job without its result).
    if code in (EXIT_CRASH, EXIT_LOCKED):
        raise JobFailed(f"job {HydraConfig.get().job.num} exited {code}; see its log")
    return code


def main() -> None:
    """Entry point of ``python -m pipeline`` and the ``video-caption`` script."""
    _check_group_choices(sys.argv[1:])
    _hydra_main()
