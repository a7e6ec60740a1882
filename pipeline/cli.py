"""Command line: ``python -m pipeline video=PATH [key=value ...]`` (Hydra).

Exit codes: 0 all videos done (or nothing to do), 2 finished but some videos failed, 3 every
video it tried failed (none done), 1 bad input, full disk, an export that could not be written
(it stays owed) or crash, 75 another run holds the lock on ``output_dir``, 130 / 143 / 129
stopped by Ctrl-C / SIGTERM / SIGHUP (what was committed stays; the run summary records the
code).
Every expected failure (a :class:`~pipeline.errors.UserError`) prints one line naming the
problem and the fix, never a traceback; anything else is a crash, printed as one line with its
traceback in the run's log file. Under ``-m`` (a sweep, e.g. shards through a launcher) each
job's code is in its run summary, and a job that exits 1, 3 or 75 fails the sweep: one line, and
the sweep exits with that code.

The command line builds the typed pieces once from the config (the sampler, the executor, the
:class:`~pipeline.caption.CaptionSpec`) and hands them to :class:`pipeline.run.Pipeline`.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pipeline.arguments import command_line, help_text, version
from pipeline.caption import CaptionSpec, EngineError
from pipeline.config import check_values, config_dir, config_id, prompts_of
from pipeline.dry_run import plan_lines
from pipeline.errors import ConfigError, InputError, LockHeld, UserError
from pipeline.executors.base import Executor
from pipeline.inputs import check_shard, find_videos, names_one_file, searched_by
from pipeline.lock import RunLock
from pipeline.owed import last_to_finish, owe_export, owe_report, owed, pay_export, pay_report
from pipeline.paths import user_path
from pipeline.presets import caption_spec
from pipeline.run import CHANGED_NOTE, Pipeline, unique_prompts
from pipeline.runlog import EarlyRecords, crash_line, log_folder, run_log, run_stamp, say_error
from pipeline.sampling import Sampler
from pipeline.signals import (
    Stopped,
    defer_stops,
    end_quietly_when_the_reader_stops,
    exit_with,
    resume_stops,
    say_stopped,
    stop_on_signals,
    stops_deferred,
)
from pipeline.store import prepare_output_dir, remove_temporaries
from pipeline.structured import PromptEntry
from pipeline.summary import RunRecord, RunSummary
from pipeline.sweeps import JobFailed
from pipeline.thumbnails import thumbnailer
from pipeline.watchdog import StallWatch
from pipeline.words import plural

log = logging.getLogger("pipeline")

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_SOME_FAILED = 2
EXIT_ALL_FAILED = 3  # a night where nothing could be done: a service manager sees a failure
EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later
# What to give a key that conf/ leaves without a value (???), when a run lacks it.
_REQUIRED = {"video": "a video file, a folder, a glob or a manifest, e.g. python -m pipeline video=clip.mp4 (--help)"}


def run_from_config(cfg: DictConfig) -> int:
    """Run the pipeline for a composed config; returns the exit code.

    Once ``output_dir`` is ready and locked, everything logged also goes to the run's log file
    (:mod:`pipeline.runlog`), errors included.
    """
    started = time.time()
    log_file: Path | None = None
    with ExitStack() as stack:
        early = EarlyRecords()
        stack.callback(early.stop)
        try:
            check_values(cfg)
            prompts = unique_prompts(prompts_of(cfg))
            spec = caption_spec(cfg, max_questions=len(prompts))
            sampler: Sampler = _instantiate(cfg.sampler)
            executor: Executor = _instantiate(cfg.executor)
            check_shard(cfg.shard, cfg.num_shards)
            # Built now, as the dry run would not need them, so that both refuse the same settings.
            export_formats = _export_formats(cfg)
            thumbnail = thumbnailer(**cfg.thumbnails)
            # The videos of all shards: the plan takes this shard's (reading them, under the stall watch).
            found = [v for entry in video_specs(cfg.video) for v in find_videos(entry, list(cfg.video_extensions))]
            # A path found twice (video=[a.mp4,./a.mp4], a folder and a glob over it) is one video.
            by_path: dict[str, Path] = {}
            for video in found:
                by_path.setdefault(os.path.abspath(video), video)
            videos = list(by_path.values())
            if cfg.dry_run:
                located = spec.source.locate()  # a dry run fetches nothing
                return _dry_run(cfg, prompts, sampler, videos, located.fingerprints() if located else None)
            output_dir = prepare_output_dir(cfg.output_dir)
            # Temporary files of killed runs go while no other run can be writing.
            lock = stack.enter_context(
                RunLock(output_dir, cfg.shard, cfg.num_shards, when_alone=partial(remove_temporaries, output_dir))
            )
            log_name = f"{run_stamp(started)}{_shard_suffix(cfg)}.log"
            log_file = stack.enter_context(run_log(log_folder(output_dir) / log_name, early.stop()))
            return _run_locked(
                cfg, prompts, spec, sampler, executor, videos, export_formats, thumbnail, output_dir, started,
                log_file, lock,
            )
        except LockHeld as error:
            log.error("%s", error)
            return EXIT_LOCKED
        except Stopped as stop:
            log.warning("%s; what was committed is kept, the next run does the rest", stop)
            return stop.exit_code
        except (UserError, EngineError) as error:
            log.error("%s", error)
            return EXIT_CRASH
        except MissingMandatoryValue as error:
            log.error("%s= is required: %s", error.full_key, _REQUIRED.get(str(error.full_key), "give it a value"))
            return EXIT_CRASH
        except OmegaConfBaseException as error:
            log.error("bad config: %s", str(error).splitlines()[0])
            return EXIT_CRASH
        except Exception as error:  # noqa: BLE001  (a bug: one line here, the traceback in the run's log file)
            log.error("%s", crash_line(error, log_file))
            return EXIT_CRASH


def _run_locked(
    cfg: DictConfig,
    prompts: list[PromptEntry],
    spec: CaptionSpec,
    sampler: Sampler,
    executor: Executor,
    videos: list[Path],
    export_formats: list[str],
    thumbnail: Callable[[np.ndarray], bytes] | None,
    output_dir: Path,
    started: float,
    log_file: Path,
    lock: RunLock,
) -> int:
    """The night under the lock: its record says ``running`` from the start and is finished with
    the exit code whatever ends it (:mod:`pipeline.summary`); the report it writes shows it."""
    summary = RunSummary(log_file=str(log_file))
    record = RunRecord(output_dir, started, _shard_suffix(cfg), {
        "command": _command or sys.argv, "prompts": prompts, "model": spec.model.name, "model_files": None,
        "config_id": None, "work_id": None, "min_age_s": _min_age_s(cfg),
    }, holds_lock=lock.held)
    record.start(summary)
    code = EXIT_CRASH
    try:
        owed(output_dir)  # a marker that cannot be kept (a folder at its name) stops the night before it starts
        # The model is its content: its files are found (fetched when missing) before the plan,
        # which needs config_id; the workers then check that they load the same content.
        identity = spec.source.resolve().fingerprints()
        spec = replace(spec, identity=identity)
        pipeline = _pipeline(
            cfg, prompts, sampler, output_dir, identity, cfg.retry_failed, thumbnail,
            before_write=lock.check,
        )
        record.learn(summary, config_id=pipeline.config_id, work_id=pipeline.work_id)
        pipeline.on_commit = partial(record.progress, summary)
        stalled = partial(_end_stalled_run, pipeline, summary, record, cfg)
        with StallWatch(lambda: pipeline.last_progress_s, cfg.stall_timeout_s, stalled):
            tasks = pipeline.plan(videos, cfg.shard, cfg.num_shards)
        summary.videos = [t.outcome for t in tasks]
        record.update(summary)
        todo = sum(t.outcome.status == "todo" for t in tasks)
        if todo:
            log.info(
                "%d of %s to caption; loading model %s (model.n_gpu_layers=%d)",
                todo, plural(len(tasks), "video"), spec.model.name, spec.model.n_gpu_layers,
            )
            try:
                executor.start(spec, pipeline.questions)
                record.facts["model_files"] = executor.model_files
                log.info("started: %s -> %s", executor.describe(), output_dir)
                if cfg.report:
                    owe_report(output_dir, started)
                if export_formats:
                    owe_export(output_dir, export_formats, started)
                with StallWatch(lambda: pipeline.last_progress_s, cfg.stall_timeout_s, stalled):
                    pipeline.run(tasks, executor, summary)
            finally:
                executor.close()
        else:
            pipeline.run(tasks, None, summary)
        _log_outcome(summary, output_dir, cfg)
        failed = summary.count("error")
        outcome = (EXIT_ALL_FAILED if not summary.count("done") else EXIT_SOME_FAILED) if failed else EXIT_OK
        # What is owed, written by the last shard to finish (every shard's videos in it).
        if (looked := last_to_finish(output_dir, record, summary, cfg.shard, cfg.num_shards, cfg.report)) is not None:
            if not pay_export(output_dir, looked, partial(_export, output_dir)):
                outcome = EXIT_CRASH
            if cfg.report:
                pay_report(output_dir, looked, partial(_report, output_dir, record.record(summary, outcome)))
        code = outcome  # only now: a crash in the export or the report is recorded as exit 1
    except Stopped as stop:
        code = stop.exit_code
        raise
    finally:
        record.finish(summary, code)
    return code


def _export_formats(cfg: DictConfig) -> list[str]:
    """The formats of ``export=``; a bad one fails before anything is written."""
    if not cfg.export:
        return []
    from pipeline.export import parse_formats  # pandas loads only when an export is asked for

    try:
        return parse_formats(cfg.export)
    except ValueError as error:  # the library's argument error is the user's setting here
        raise ConfigError(str(error)) from error


def _end_stalled_run(
    pipeline: Pipeline, summary: RunSummary, record: RunRecord, cfg: DictConfig, idle_s: float
) -> None:
    """The way out of a run whose model or decoder stopped answering (:mod:`pipeline.watchdog`):
    its thread waits inside llama.cpp or the decoder for good, where no exception reaches it, so
    the process ends from the watching thread, after one line, the writes already under way and
    the run summary. Exit 1; the next run goes on from what was committed. The wrap-up gets
    at most 3 minutes: on a mount that stopped answering, writing the log or the summary can
    hang too, and the process must end all the same (its summary then still says running)."""

    def wrap_up() -> None:
        log.error(
            "stalled: nothing came back from %s for %.0f s (stall_timeout_s=%s): "
            "a GPU or a mount stopped responding; the run ends, what it committed is kept and the next "
            "run goes on from there",
            pipeline.waiting_on, idle_s, cfg.stall_timeout_s,
        )
        pipeline.finish_writes(timeout_s=120)
        record.finish(summary, EXIT_CRASH)
        logging.shutdown()

    helper = threading.Thread(target=wrap_up, name="stall-wrap-up", daemon=True)
    helper.start()
    helper.join(timeout=180)
    os._exit(EXIT_CRASH)


def _log_outcome(summary: RunSummary, output_dir: Path, cfg: DictConfig) -> None:
    """One line for the run, one for the videos left waiting, and one for what earlier runs
    left failed. "Nothing to do" only where the run had none: no video done, failed or found
    changed under it, no frame committed; else "finished", with what it did. "Already done"
    counts only videos done before: not those that failed before, nor a second path to the
    content of another."""
    changed = sum(1 for v in summary.videos if v.status == "waiting" and v.note == CHANGED_NOTE)
    waiting = summary.count("waiting") - changed
    failed_before = sum(1 for v in summary.videos if v.status == "skipped" and v.error)
    done_before = sum(1 for v in summary.videos if v.status == "skipped" and v.note == "done")
    if not summary.videos:
        where = f"shard {cfg.shard} of {cfg.num_shards} of video=" if cfg.num_shards > 1 else "video="
        log.info("nothing to do: no videos in %s%s", where, ", ".join(video_specs(cfg.video)))
    elif not (summary.count("done") or summary.count("error") or changed or summary.frames):
        parts = [f"{plural(done_before, 'video')} already done"]
        parts += [f"{failed_before} failed before"] if failed_before else []
        parts += [f"{waiting} waiting"] if waiting else []
        log.info("nothing to do: %s in %s", ", ".join(parts), output_dir)
    else:
        log.info(
            "finished: %d done, %d skipped, %d failed%s; %s in %.1f s -> %s",
            summary.count("done"), summary.count("skipped"), summary.count("error"),
            f", {waiting + changed} waiting" if waiting + changed else "",
            plural(summary.frames, "frame"), summary.wall_s, output_dir,
        )
    if waiting:
        them, they_have = ("it", "it has") if waiting == 1 else ("them", "they have")
        log.info(
            "%s waiting: not yet seen unchanged for min_age_s=%g s (a copy may be under way); a later run "
            "takes %s once %s been, min_age_s=0 takes %s now",
            plural(waiting, "video"), cfg.min_age_s, them, they_have, them,
        )
    if changed:
        log.info("%s changed while the night ran (a copy under way?); the next run takes %s",
                 plural(changed, "video"), "it as it is then" if changed == 1 else "them as they are then")
    if failed_before:
        log.info("%s failed in earlier runs; retry_failed=true tries %s again",
                 plural(failed_before, "video"), "it" if failed_before == 1 else "them")


def _report(output_dir: Path, run: dict[str, Any]) -> Path:
    """Write the HTML report, showing ``run`` (this run's record); its page."""
    from pipeline.report import write_report  # pandas: loaded only when a report is due

    return write_report(output_dir, run=run)


def _export(output_dir: Path, formats: list[str]) -> Path:
    """Write the exports of ``formats``; their folder."""
    from pipeline.export import export  # pandas: loaded only when an export is owed

    return export(output_dir, formats).folder


def _pipeline(
    cfg: DictConfig,
    prompts: list[PromptEntry],
    sampler: Sampler,
    output_dir: Path,
    model_identity: dict[str, str],
    retry_failed: bool,
    thumbnail: Callable[[np.ndarray], bytes] | None,
    read_only: bool = False,
    before_write: Callable[[], None] | None = None,
) -> Pipeline:
    """The run loop for this config and model (``read_only``: for a dry run's plan)."""
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    return Pipeline(
        sampler,
        prompts,
        output_dir,
        config_id=config_id(config, model_identity),
        prefetch_frames=cfg.engine.prefetch_frames,
        max_frames=cfg.max_frames,
        start_s=cfg.start_s,
        end_s=cfg.end_s,
        checkpoint_frames=cfg.checkpoint_frames,
        retry_failed=retry_failed,
        metadata={"config": config, "model_fingerprint": model_identity},
        thumbnail=thumbnail,
        min_age_s=_min_age_s(cfg),
        read_only=read_only,
        before_write=before_write,
        progress_interval_s=cfg.progress_interval_s,
        searched=searched_by(video_specs(cfg.video), list(cfg.video_extensions)),
    )


def _min_age_s(cfg: DictConfig) -> float:
    """How long a found video must have been left alone to be taken: a file named on its own
    is taken however new; found ones must have settled (``min_age_s``)."""
    return 0.0 if all(names_one_file(entry) for entry in video_specs(cfg.video)) else cfg.min_age_s


def _dry_run(
    cfg: DictConfig, prompts: list[PromptEntry], sampler: Sampler, videos: list[Path], identity: dict[str, str] | None
) -> int:
    """``dry_run=true``: print what a run would do; no model, no lock, nothing written (nor
    fetched: without the model files here, no video can be known done with them)."""
    end_quietly_when_the_reader_stops()  # dry_run=true | head
    output_dir = user_path(cfg.output_dir).resolve()
    known = identity or {"text_model": "not here", "mmproj": "not here"}
    pipeline = _pipeline(cfg, prompts, sampler, output_dir, known, retry_failed=False, thumbnail=None, read_only=True)
    tasks = pipeline.plan(videos, cfg.shard, cfg.num_shards)
    for line in plan_lines(pipeline, tasks, cfg.retry_failed, cfg.model.name):
        print(line)
    if identity is None:
        print(
            f"model {cfg.model.name}'s files are not here: a run fetches them first, then skips what is done "
            "with the same model content; this plan counts no video as done"
        )
    return EXIT_OK


def video_specs(value: Any) -> list[str]:
    """``video=`` as a list: one file, folder, glob or manifest, or a list of them
    (``video=[a.mp4,b.mp4]``).

    Raises:
        InputError: It is an empty list or holds something other than paths.
    """
    specs = list(value) if isinstance(value, ListConfig) else [value]
    if not specs or not all(isinstance(spec, (str, int)) for spec in specs):
        raise InputError(f"video={value} names no videos; give a file, a folder, a glob, a manifest or a list of them")
    return [str(spec) for spec in specs]


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


# The failed jobs of the sweep that main() started in this process (Hydra's basic launcher),
# by its pid: a launcher's process of its own, which may get a copy, is not it. And the command
# line as typed (Hydra gets it rewritten), for the run's record.
_sweeps: dict[int, list[tuple[str, int]]] = {}
_command: list[str] | None = None


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> int:
    resume_stops()  # Hydra has composed the config: a stop noted meanwhile is said now
    with stop_on_signals():
        code = run_from_config(cfg)
    defer_stops()  # the run said its stop, if any; a sweep's next job is composed next
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        exit_with(code)  # the run's record holds this code: no signal may end it with another
    if code in (EXIT_OK, EXIT_SOME_FAILED):
        return code
    job, failed = f"job {HydraConfig.get().job.num}", _sweeps.get(os.getpid())
    if failed is None:  # sys.exit would end this job without the result its launcher hands back
        raise JobFailed(code, job)
    if code > 128:  # stopped by a signal (its line is said): the sweep stops with it
        sys.exit(code)
    failed.append((job, code))  # the next jobs still run; main() reports them all
    return code


def _sweep_code(failed: list[tuple[str, int]]) -> int:
    """The exit code of a sweep run in this process: the gravest code of the jobs that failed it
    (1, then 3, then 75), after one line naming them; 0 when none did."""
    if failed:
        jobs = ", ".join(f"{job} exited {code}" for job, code in failed)
        say_error(f"the sweep failed: {jobs}; Hydra's #<job> lines above name their settings, the jobs' lines say why")
    codes = {code for _, code in failed}
    return next((code for code in (EXIT_CRASH, EXIT_ALL_FAILED, EXIT_LOCKED) if code in codes), EXIT_OK)


# ``video-caption status ...`` is ``python -m pipeline.status ...``, and so on: the module whose
# main(argv) each sub-command runs.
SUBCOMMANDS = {
    "status": "pipeline.status",
    "report": "pipeline.report.command",
    "export": "pipeline.export",
    "download": "pipeline.download",
}


def main() -> None:
    """Entry point of ``python -m pipeline`` and the ``video-caption`` script: a sub-command
    (:data:`SUBCOMMANDS`), or a run: ``--help`` and ``--version`` here, the command line checked
    (:func:`~pipeline.arguments.command_line`), then Hydra. A stop (Ctrl-C, SIGTERM, SIGHUP)
    before the run begins is one line and its exit code too."""
    global _command
    args = sys.argv[1:]
    stopped = "" if args[:1] and args[0] in SUBCOMMANDS else " before the run began: nothing was written"
    try:
        with stop_on_signals():
            if not stopped:
                sys.exit(importlib.import_module(SUBCOMMANDS[args[0]]).main(args[1:]))
            if "-h" in args or "--help" in args or "--version" in args:
                end_quietly_when_the_reader_stops()  # --help | head, >/dev/full: as a sub-command's output
                print(help_text() if "-h" in args or "--help" in args else version())
                sys.exit(EXIT_OK)
            command = command_line(args)
            with ExitStack() as stack:
                if "--multirun" in command:
                    _sweeps[os.getpid()] = []
                    os.environ["HYDRA_FULL_ERROR"] = "1"  # a launcher's JobFailed comes here, not as Hydra's traceback
                    stopped = "; the jobs done are kept, the next run does the rest"
                    if "dry_run=true" in map(str.lower, command):  # a dry run writes nothing: not the sweep's files
                        elsewhere = stack.enter_context(tempfile.TemporaryDirectory(prefix="video-caption-dry-sweep-"))
                        command.append(f"hydra.sweep.dir={elsewhere}")
                _command, sys.argv[1:] = list(sys.argv), command
                with stops_deferred():
                    _hydra_main()
            exit_with(_sweep_code(_sweeps.get(os.getpid(), [])))
    except UserError as error:
        say_error(str(error))
        sys.exit(EXIT_CRASH)
    except JobFailed as failed:
        say_error(str(failed))
        sys.exit(failed.code)
    except (Stopped, KeyboardInterrupt) as stop:
        sys.exit(say_stopped(getattr(stop, "signum", signal.SIGINT), stopped))
    except Exception as error:  # noqa: BLE001  (a bug in Hydra or a launcher: one line, its traceback in a file)
        say_error(crash_line(error, None))
        sys.exit(EXIT_CRASH)
