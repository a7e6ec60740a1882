"""``executor=ray``: spread a night's videos over every GPU of every machine of a Ray cluster.

The driver (``python -m pipeline ... executor=ray``) keeps all the bookkeeping of a local run
(:class:`pipeline.run.Pipeline`: plan, per-frame skips, chunked commits, done markers, error
records, summary, lock). This module only moves the work:

- **Decoding** runs as Ray CPU tasks, one streaming task per video. Each yields, per frame to
  caption, a small object (the sample without pixels, and its thumbnail) and then the RGB
  array, which goes from the object store straight to an actor, never through the driver.
  A task runs at most ``prefetch_frames`` frames ahead of the driver.
- **Captioning** runs in long-lived actors, one per GPU (``num_gpus=1``: Ray gives each its own
  ``CUDA_VISIBLE_DEVICES``), each loading the model once. An actor takes one frame per call
  and feeds every call it holds to one continuously batched engine loop, so the engine sees
  ``engine.parallel`` frames at once across calls and videos.
- **Faults.** A dead actor is restarted (``max_restarts``) and its calls retried
  (``max_task_retries``); a dead decode task is retried (``max_retries``). Answers are
  committed only by the driver, so a worker's death loses nothing; the driver's death loses
  at most the uncommitted chunk of each video in flight, as in a local run.

Ray is imported only here, and only when ``executor=ray`` is chosen.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from pipeline.caption import Answer, Captioner, EngineError, Question, WeightsError
from pipeline.run import (
    Captioned,
    Decoded,
    DecodeJob,
    ExecutorError,
    VideoDecoder,
    Work,
    model_files_of,
    without_pixels,
)

log = logging.getLogger(__name__)

NAMESPACE = "video-caption"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError('executor=ray needs Ray: pip install ".[ray]"') from None
    return ray


class RayExecutor:
    """Decode tasks and captioner actors on a Ray cluster (see the module's docstring).

    Args:
        address: ``auto``: the running cluster (``ray start``, ``RAY_ADDRESS``), else a new
            local one; ``local``: always a new local one; ``HOST:PORT``: that cluster.
        num_actors: Captioner actors; ``None``: one per GPU (``gpus_per_actor`` each), or on a
            cluster without GPUs as many as fit in half its CPUs.
        gpus_per_actor: GPUs per actor; ``None``: 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPUs reserved per actor; also its llama.cpp threads when
            ``engine.n_threads`` is null.
        frames_per_actor: Frames queued at each actor; ``None``: ``2 * engine.parallel + 2``
            (a null ``engine.parallel`` counting as 16), enough to keep its engine full between
            calls.
        decode_tasks: Videos decoded at once; ``None``: ``num_actors + 1``.
        cpus_per_decode: CPUs reserved per decode task.
        retries: Restarts of a dead actor, retries of its calls and of decode tasks.

    Raises:
        ExecutorError: Ray is not installed.
        ValueError: A bad setting.
    """

    def __init__(
        self,
        address: str = "auto",
        num_actors: int | None = None,
        gpus_per_actor: float | None = None,
        cpus_per_actor: float = 1.0,
        frames_per_actor: int | None = None,
        decode_tasks: int | None = None,
        cpus_per_decode: float = 1.0,
        retries: int = 3,
    ) -> None:
        at_least = {
            "num_actors": (num_actors, 1), "gpus_per_actor": (gpus_per_actor, 0),
            "frames_per_actor": (frames_per_actor, 1), "decode_tasks": (decode_tasks, 1),
            "retries": (retries, 0),
        }
        for key, (value, low) in at_least.items():
            if value is not None and value < low:
                raise ValueError(f"executor.{key} must be >= {low}, got {value}")
        for key, value in (("cpus_per_actor", cpus_per_actor), ("cpus_per_decode", cpus_per_decode)):
            if not value > 0:
                raise ValueError(f"executor.{key} must be > 0, got {value}")
        self._ray = _import_ray()
        self.address = address
        self.num_actors = num_actors
        self.gpus_per_actor = gpus_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.frames_per_actor = frames_per_actor
        self.decode_tasks = decode_tasks
        self.cpus_per_decode = cpus_per_decode
        self.retries = retries
        self.model_name = ""
        self.model_files: dict[str, str] = {}
        self._actors: list[Any] = []
        self._connected = False

    # -- life cycle -------------------------------------------------------------------------

    def start(self, cfg: Any, max_questions: int) -> None:
        """Connect to (or start) the cluster, start the actors and wait until each has loaded
        the model.

        Raises:
            ExecutorError: No cluster, or it cannot hold the actors.
            WeightsError: An actor found the weights missing or not matching.
            EngineError: An actor could not load the model.
        """
        self._connect()
        resources = self._ray.cluster_resources()
        cluster_gpus, cluster_cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
        gpus = self.gpus_per_actor if self.gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
        if self.num_actors is not None:
            n_actors = self.num_actors
        elif gpus:
            n_actors = max(1, int(cluster_gpus // gpus))
        else:
            n_actors = max(1, int(cluster_cpus // 2 // self.cpus_per_actor))
        cpus_needed = n_actors * self.cpus_per_actor + self.cpus_per_decode
        if n_actors * gpus > cluster_gpus or cpus_needed > cluster_cpus:
            raise ExecutorError(
                f"{n_actors} captioner actors with {gpus:g} GPU and {self.cpus_per_actor:g} CPU each, "
                f"plus a decode task with {self.cpus_per_decode:g} CPU, do not fit in the cluster's "
                f"{cluster_gpus:g} GPUs and {cluster_cpus:g} CPUs; lower executor.num_actors or the "
                "per-actor resources"
            )
        parallel = 16 if cfg.engine.parallel is None else cfg.engine.parallel
        self._frames_per_actor = self.frames_per_actor or 2 * parallel + 2
        self._decode_tasks = self.decode_tasks or n_actors + 1

        settings = OmegaConf.to_container(cfg, resolve=True)
        # Actors and decode tasks run elsewhere (another cwd, maybe another machine sharing the
        # file system): relative paths are made absolute here.
        settings["model"]["dir"] = os.path.abspath(settings["model"]["dir"])
        if settings["engine"]["n_threads"] is None:
            settings["engine"]["n_threads"] = max(1, int(self.cpus_per_actor))
        actor_class = self._ray.remote(_CaptionActor)
        tag = f"{socket.gethostname()}-{os.getpid()}"
        self._actors = [
            actor_class.options(
                name=f"captioner-{i}-{tag}",
                num_cpus=self.cpus_per_actor,
                num_gpus=gpus,
                max_restarts=self.retries,
                max_task_retries=self.retries,
                # Calls wait on the engine thread; two more leave room for ready()/pid().
                max_concurrency=self._frames_per_actor + 2,
            ).remote(settings, max_questions)
            for i in range(n_actors)
        ]
        log.info(
            "Ray: %d captioner actors (%g GPU, %g CPU each), up to %d videos decoding at once",
            n_actors, gpus, self.cpus_per_actor, self._decode_tasks,
        )
        for state in self._get([actor.ready.remote() for actor in self._actors]):
            if state["error"] is not None:
                kind = {"weights": WeightsError, "engine": EngineError}.get(state["kind"], ValueError)
                raise kind(state["error"])
            self.model_name, self.model_files = state["model_name"], state["model_files"]

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():  # a library caller's connection: used, and left open
            return
        options = {"namespace": NAMESPACE, "logging_level": logging.WARNING}
        try:
            if self.address == "auto":
                try:
                    ray.init(address="auto", **options)
                except ConnectionError:
                    log.info("no Ray cluster running; starting a local one")
                    ray.init(address="local", **options)
            else:
                ray.init(address=self.address, **options)
            self._connected = True
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ExecutorError(
                f"cannot connect to a Ray cluster at executor.address={self.address}: "
                f"{str(error).splitlines()[0]}; start one with `ray start --head` or fix the address"
            ) from error

    def close(self) -> None:
        """Stop the actors and disconnect (a local cluster this run started stops too)."""
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []
        if self._connected:
            self._ray.shutdown()
            self._connected = False

    # -- the work ---------------------------------------------------------------------------

    def run(self, work: Work) -> Iterator[Captioned | Decoded]:
        """Stream the jobs through decode tasks into the actors; yield events as they finish.

        Raises:
            ExecutorError: A worker kept dying past ``retries``.
        """
        ray = self._ray
        decode = ray.remote(_decode_stream).options(
            num_cpus=self.cpus_per_decode,
            num_returns="streaming",
            max_retries=self.retries,
            # Two objects per frame: its description, then its pixels.
            _generator_backpressure_num_objects=2 * max(work.prefetch_frames, 1),
        )
        decoder = ray.put(work.decoder)
        questions = ray.put(work.questions)
        waiting = [replace(job, path=Path(os.path.abspath(job.path))) for job in reversed(work.jobs)]
        streams: dict[Any, int] = {}  # decode task → video index
        calls: dict[Any, tuple[int, Any, bytes | None, int]] = {}  # call → video, sample, thumbnail, actor
        load = [0] * len(self._actors)
        while waiting or streams or calls:
            while waiting and len(streams) < self._decode_tasks:
                job = waiting.pop()
                streams[decode.remote(decoder, job)] = job.index
            has_room = min(load) < self._frames_per_actor
            ready, _ = ray.wait([*calls, *(streams if has_room else ())], num_returns=1, fetch_local=False)
            (item,) = ready
            if item in calls:
                index, sample, thumbnail, actor = calls.pop(item)
                load[actor] -= 1
                answers, process = self._get(item)
                yield Captioned(index, sample, thumbnail, answers, f"actor-{actor}", process)
                continue
            try:
                described = self._get(next(item))
            except StopIteration:
                del streams[item]
                continue
            if isinstance(described, Decoded):
                del streams[item]
                yield described
                continue
            sample, thumbnail = described
            actor = load.index(min(load))
            load[actor] += 1
            asked = work.asked(streams[item], sample.frame.index)
            calls[self._actors[actor].caption.remote(next(item), questions, asked)] = (
                streams[item], sample, thumbnail, actor,
            )

    def _get(self, refs: Any) -> Any:
        """``ray.get``, with a worker's own exception re-raised as itself and Ray's failures
        as one line."""
        ray = self._ray
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as error:
            raise error.cause from None
        except ray.exceptions.RayError as error:
            raise ExecutorError(
                f"a Ray worker failed past executor.retries={self.retries}: "
                f"{str(error).splitlines()[0]}; committed results are intact, run again to finish"
            ) from error


def _decode_stream(decoder: VideoDecoder, job: DecodeJob) -> Iterator[Any]:
    """Ray decode task: per frame, ``(sample without pixels, thumbnail)`` then the RGB array;
    finally the video's :class:`Decoded`."""
    for item in decoder.frames(job):
        if isinstance(item, Decoded):
            yield item
        else:
            sample, thumbnail = item
            yield without_pixels(sample), thumbnail
            yield sample.frame.rgb


# A queued call: its future, the frame, the run's questions, the indices to ask (None: all).
_Call = tuple[Future, np.ndarray, list[Question], "tuple[int, ...] | None"]


class _CaptionActor:
    """A Ray actor that loads the model once and captions one frame per call.

    Calls run on Ray's threads and wait for their answers; one engine thread feeds every frame
    the actor holds through the batched engine, so frames of different calls are decoded
    together. The engine's input ends whenever the queue runs dry (its frames then finish),
    and a new loop starts with the next call.

    Args:
        settings: The resolved config, as a plain dict.
        max_questions: Prompts per frame.
    """

    def __init__(self, settings: dict[str, Any], max_questions: int) -> None:
        # As in conf/hydra/job_logging: llama.cpp's warnings are expected noise.
        logging.getLogger("pipeline.llama_cpp").setLevel(logging.ERROR)
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.captioner: Captioner | None = None
        self.error: str | None = None
        self.error_kind = ""
        self._queue: queue.Queue[tuple[Future, np.ndarray, list[Question]]] = queue.Queue()
        try:
            captioner = Captioner.from_config(OmegaConf.create(settings), max_questions=max_questions)
            captioner.setup()
        except (WeightsError, EngineError, ValueError) as error:
            # Reported by ready(): raising here would only make Ray restart the actor in vain.
            self.error = str(error)
            self.error_kind = {WeightsError: "weights", EngineError: "engine"}.get(type(error), "value")
            return
        self.captioner = captioner
        threading.Thread(target=self._serve, name="engine", daemon=True).start()

    def ready(self) -> dict[str, Any]:
        """The model this actor loaded, or why it could not."""
        return {
            "error": self.error,
            "kind": self.error_kind,
            "model_name": self.captioner.model_name if self.captioner else "",
            "model_files": model_files_of(self.captioner),
        }

    def pid(self) -> int:
        """This actor's process id (tests kill it)."""
        return os.getpid()

    def caption(
        self, rgb: np.ndarray, questions: list[Question], asked: tuple[int, ...] | None = None
    ) -> tuple[list[Answer], str]:
        """Answers to ``questions`` (only those at the indices ``asked``, if given) about one
        frame, and ``host:pid`` of this process. Calls of one run share ``questions``.

        Raises:
            EngineError: The engine failed.
        """
        future: Future[list[Answer]] = Future()
        self._queue.put((future, rgb, questions, asked))
        return future.result(), self.process

    def _serve(self) -> None:
        assert self.captioner is not None
        while True:
            first = self._queue.get()
            taken: list[Future] = []
            try:
                for future, answers in self.captioner.caption(self._queued(first, taken), first[2]):
                    future.set_result(answers)
            except Exception as error:  # noqa: BLE001  (handed to the calls waiting on it)
                for future in taken:
                    if not future.done():
                        future.set_exception(error)

    def _queued(self, first: _Call, taken: list[Future]) -> Iterator[tuple[Any, ...]]:
        """``first``, then the frames of the calls queued meanwhile, until none is waiting."""
        item: _Call | None = first
        while item is not None:
            future, rgb, _, asked = item
            taken.append(future)
            yield future, rgb, asked
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
