"""Command line: ``python -m pipeline video=PATH [key=value ...]`` (Hydra).

Exit codes: 0 all videos done (or nothing to do), 2 finished but some videos failed, 1 bad
input, full disk or crash, 75 another run holds the lock on ``output_dir``, 130 / 143 stopped
by Ctrl-C / SIGTERM (what was committed stays; the run summary records the code).
Every expected failure (a :class:`~pipeline.errors.UserError`) prints one line naming the
problem and the fix, never a traceback; anything else is a crash, printed as one line with its
traceback in the run's log file. Under ``-m`` (a sweep, e.g. shards through a launcher) each
job's code is in its run summary, and a job that exits 1 or 75 fails the sweep.

The command line builds the typed pieces once from the config (the sampler, the executor, the
:class:`~pipeline.caption.CaptionSpec`) and hands them to :class:`pipeline.run.Pipeline`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.caption import CaptionSpec, EngineError
from pipeline.config import config_dir
from pipeline.errors import LockHeld, StoreError, UserError
from pipeline.executors.base import Executor
from pipeline.inputs import find_videos, names_one_file, shard_videos
from pipeline.lock import RunLock
from pipeline.run import Pipeline, RunSummary, settings_id, unique_prompts, write_summary
from pipeline.sampling import Sampler
from pipeline.signals import Stopped, stop_on_signals
from pipeline.store import prepare_output_dir, remove_temporaries, write_json_atomic
from pipeline.thumbnails import check_thumbnail_settings, make_thumbnail

log = logging.getLogger("pipeline")

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_SOME_FAILED = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later
# Made when a run with a report due starts captioning, removed once the report is written: a
# run killed before its report leaves it, and the next run writes the report.
REPORT_DUE = "_report-due"


def run_from_config(cfg: DictConfig) -> int:
    """Run the pipeline for a composed config; returns the exit code."""
    try:
        prompts = unique_prompts([cfg.prompt] if cfg.prompt is not None else list(cfg.prompts))
        spec = CaptionSpec.from_config(cfg, max_questions=len(prompts))
        sampler: Sampler = _instantiate(cfg.sampler)
        executor: Executor = _instantiate(cfg.executor)
        videos = shard_videos(find_videos(cfg.video, list(cfg.video_extensions)), cfg.shard, cfg.num_shards)
        output_dir = prepare_output_dir(cfg.output_dir)
        # Temporary files of killed runs go while no other run can be writing.
        with RunLock(output_dir, cfg.shard, cfg.num_shards, when_alone=partial(remove_temporaries, output_dir)):
            return _run_locked(cfg, prompts, spec, sampler, executor, videos, output_dir)
    except LockHeld as error:
        log.error("%s", error)
        return EXIT_LOCKED
    except Stopped as stop:
        log.warning("%s; what was committed is kept, the next run does the rest", stop)
        return stop.exit_code
    except (UserError, EngineError) as error:
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
    spec: CaptionSpec,
    sampler: Sampler,
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
    assert isinstance(config, dict)
    pipeline = Pipeline(
        sampler,
        prompts,
        output_dir,
        config_id=settings_id({k: config[k] for k in ("model", "generation", "sampler", "system_prompt")}),
        prefetch_frames=cfg.engine.prefetch_frames,
        max_frames=cfg.max_frames,
        checkpoint_frames=cfg.checkpoint_frames,
        retry_failed=cfg.retry_failed,
        metadata={"config": config},
        thumbnail=_thumbnailer(cfg),
        min_age_s=0.0 if names_one_file(cfg.video) else cfg.min_age_s,
    )
    summary = RunSummary(log_file=_log_file())
    code = EXIT_CRASH
    try:
        tasks = pipeline.plan(videos)
        summary.videos = [t.outcome for t in tasks]
        report_due = output_dir / REPORT_DUE
        if any(t.outcome.status == "todo" for t in tasks):
            try:
                executor.start(spec, pipeline.questions)
                if cfg.report:
                    write_json_atomic(report_due, {"since": started})
                pipeline.run(tasks, executor, summary)
            finally:
                executor.close()
        else:
            pipeline.run(tasks, None, summary)
        _log_outcome(summary, output_dir)
        if export_formats and summary.count("done"):
            _export(output_dir, export_formats)
        if cfg.report and report_due.exists():
            _write_report(output_dir, report_due)
        code = EXIT_SOME_FAILED if summary.count("error") else EXIT_OK
    except Stopped as stop:
        code = stop.exit_code
        raise
    finally:
        write_summary(output_dir, summary, started, code, _shard_suffix(cfg))
    return code


def _log_outcome(summary: RunSummary, output_dir: Path) -> None:
    """One line for the run, and one for what earlier runs left failed."""
    waiting = summary.count("waiting")
    if not summary.count("done") and not summary.count("error"):
        log.info("nothing to do: %d videos already done in %s", summary.count("skipped"), output_dir)
    else:
        log.info(
            "finished: %d done, %d skipped, %d failed; %d frames in %.1f s -> %s",
            summary.count("done"), summary.count("skipped"), summary.count("error"),
            summary.frames, summary.wall_s, output_dir,
        )
    if waiting:
        log.info("%d videos modified in the last min_age_s seconds are left for the next run", waiting)
    failed_before = sum(1 for v in summary.videos if v.status == "skipped" and v.error)
    if failed_before:
        log.info("%d videos failed in earlier runs; retry_failed=true tries them again", failed_before)


def _write_report(output_dir: Path, report_due: Path) -> None:
    """Write the HTML report, then drop the marker that said it was due."""
    from pipeline.report import write_report  # pandas: loaded only when a report is due

    try:
        log.info("report: %s", write_report(output_dir))
        report_due.unlink(missing_ok=True)
    except (OSError, StoreError) as error:
        log.warning("report not written: %s", error)


def _export(output_dir: Path, export_formats: list[str]) -> None:
    """Write the subtitle tracks and exports of ``output_dir``; a failure is a warning."""
    from pipeline.export import export

    try:
        log.info("export: %s", export(output_dir, export_formats).folder)
    except (OSError, StoreError) as error:
        log.warning("export not written: %s", error)


def _log_file() -> str | None:
    """The run's log file (Hydra's), if logging writes to one."""
    files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return files[0] if files else None


def _thumbnailer(cfg: DictConfig) -> Callable[[np.ndarray], bytes] | None:
    """``make_thumbnail`` with the configured settings, checked now; ``None`` when off."""
    settings = cfg.thumbnails
    if not settings.enabled:
        return None
    check_thumbnail_settings(settings.long_side_px, settings.quality)
    return partial(make_thumbnail, long_side_px=settings.long_side_px, quality=settings.quality)


def _shard_suffix(cfg: DictConfig) -> str:
    """``-shard<i>of<n>`` when the videos are sharded (for the run summary's name), else ""."""
    return f"-shard{cfg.shard}of{cfg.num_shards}" if cfg.num_shards > 1 else ""


def _instantiate(node: DictConfig) -> Any:
    """A sampler or executor from its config node, with the object's own error unwrapped
    (Hydra wraps it in an ``InstantiationException``)."""
    try:
        return instantiate(node)
    except Exception as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


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


class JobFailed(Exception):
    """A job of a sweep (``-m``) exited 1 or 75; raised so that the sweep reports it."""


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> int:
    with stop_on_signals():
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
