"""``executor=ray``: spread a night's videos over every GPU of every machine of a Ray cluster.

The driver (``python -m pipeline ... executor=ray``) keeps all the bookkeeping of a local run
(:class:`pipeline.run.Pipeline`: plan, per-frame skips, chunked commits, done markers, error
records, summary, lock). This module only moves the work:

- **Decoding** runs as Ray CPU tasks, one streaming task per video, yielding the same records
  as a local decode (:meth:`VideoDecoder.frames`): a :class:`FrameJob` per frame to caption,
  with its pixels, then the video's :class:`Decoded`. The driver passes each frame's object
  reference to an actor unopened, so pixels go from the object store straight to the actor,
  never through the driver. It holds back the latest item of each stream until the next one
  arrives: the one left when the stream ends is its :class:`Decoded`, the only item the driver
  reads. A task runs at most ``prefetch_frames`` frames ahead of the driver.
- **Captioning** runs in long-lived actors, one per GPU (``num_gpus=1``: Ray gives each its own
  ``CUDA_VISIBLE_DEVICES``), each loading the model once. Each decides its frames in flight and
  text weights on its own machine, as a local run does (:meth:`CaptionSpec.prepare`), and
  reports them (the run summary's ``engines``). An actor takes one frame per call,
  feeds every call it holds to one continuously batched engine loop (so the engine sees
  ``engine.parallel`` frames at once across calls and videos), and answers with the frame's
  :class:`Captioned`.
- **Faults.** A dead actor is restarted (``max_restarts``) and its calls retried
  (``max_task_retries``); a dead decode task is retried (``max_retries``). Answers are
  committed only by the driver, so a worker's death loses nothing; the driver's death loses
  at most the uncommitted chunk of each video in flight, as in a local run.

Ray is imported only by ``executor=ray`` (:mod:`.ray_cluster` imports it and connects to the
cluster).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.caption import Answer, Captioner, CaptionSpec, EngineError, Question
from pipeline.errors import ExecutorError, UserError
from pipeline.executors.base import Captioned, Decoded, DecodeJob, Decoder, FrameJob, Work
from pipeline.executors.frames import answer_frames, this_process
from pipeline.executors.ray_cluster import connect, import_ray
from pipeline.ranges import Range, check_ranges

log = logging.getLogger(__name__)

_RANGES = {
    "executor.num_actors": Range(1, null="for one per GPU"),
    "executor.gpus_per_actor": Range(0, null="for 1 where the cluster has GPUs, else 0"),
    "executor.cpus_per_actor": Range(0, strict=True),
    "executor.frames_per_actor": Range(1, null="for twice an actor's frames in flight plus 2"),
    "executor.decode_tasks": Range(1, null="for num_actors + 1"),
    "executor.cpus_per_decode": Range(0, strict=True),
    "executor.retries": Range(0),
    "executor.connect_timeout_s": Range(0, strict=True, high=86400),
}


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
        frames_per_actor: Frames queued at each actor; ``None``: twice its frames in flight
            plus 2, enough to keep its engine full between calls (each actor decides its frames
            in flight on its machine and reports them).
        decode_tasks: Videos decoded at once; ``None``: ``num_actors + 1``.
        cpus_per_decode: CPUs reserved per decode task.
        retries: Restarts of a dead actor, retries of its calls and of decode tasks.
        connect_timeout_s: Most seconds to reach the cluster (Ray itself retries an
            unreachable address for many minutes).

    Raises:
        ExecutorError: Ray is not installed.
        ConfigError: A bad setting.
    """

    def __init__(
        self,
        address: str,
        num_actors: int | None,
        gpus_per_actor: float | None,
        cpus_per_actor: float,
        frames_per_actor: int | None,
        decode_tasks: int | None,
        cpus_per_decode: float,
        retries: int,
        connect_timeout_s: float,
    ) -> None:
        values = {
            "num_actors": num_actors, "gpus_per_actor": gpus_per_actor, "frames_per_actor": frames_per_actor,
            "decode_tasks": decode_tasks, "retries": retries, "cpus_per_actor": cpus_per_actor,
            "cpus_per_decode": cpus_per_decode, "connect_timeout_s": connect_timeout_s,
        }
        check_ranges(_RANGES, lambda key: values[key.removeprefix("executor.")])
        self._ray = import_ray()
        self.address = address
        self.num_actors = num_actors
        self.gpus_per_actor = gpus_per_actor
        self.cpus_per_actor = cpus_per_actor
        self.frames_per_actor = frames_per_actor
        self.decode_tasks = decode_tasks
        self.cpus_per_decode = cpus_per_decode
        self.retries = retries
        self.connect_timeout_s = connect_timeout_s
        self.model_name = ""
        self.model_files: dict[str, str] = {}
        self.engine_choices: list[dict[str, Any]] = []
        self._actors: list[Any] = []
        self._connected = False
        self._frames_per_actor: list[int] = []
        self._decode_tasks = 0
        self._description = "no actors started"

    # -- life cycle -------------------------------------------------------------------------

    def start(self, spec: CaptionSpec, questions: list[Question]) -> None:
        """Connect to (or start) the cluster, start the actors and wait until each has loaded
        the model and found that a frame with ``questions`` fits.

        Raises:
            ExecutorError: No cluster, or it cannot hold the actors.
            WeightsError: An actor found the weights missing or not matching.
            EngineError: An actor could not load the model.
            ConfigError: No frame can fit the context.
        """
        if connect(self._ray, self.address, self.connect_timeout_s):
            self._connected = True
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
        # An actor's threads: its CPUs. Its frames in flight are its own decision, on its
        # machine; calls are bounded by the most it may decide until it says.
        engine = spec.engine
        n_threads = engine.n_threads if engine.n_threads is not None else max(1, int(self.cpus_per_actor))
        spec = replace(spec, engine=replace(engine, n_threads=n_threads))
        most_queued = self.frames_per_actor or 2 * spec.most_frames_in_flight + 2
        self._decode_tasks = self.decode_tasks or n_actors + 1

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
                max_concurrency=most_queued + 2,
            ).remote(spec, questions, f"actor-{i}")
            for i in range(n_actors)
        ]
        log.info(
            "Ray: %d captioner actors (%g GPU, %g CPU each), up to %d videos decoding at once",
            n_actors, gpus, self.cpus_per_actor, self._decode_tasks,
        )
        descriptions = []
        self.engine_choices, self._frames_per_actor = [], []
        for i, ready in enumerate(self._get([actor.ready.remote() for actor in self._actors])):
            if isinstance(ready, Exception):
                raise ready
            self.model_name, self.model_files, description, choices = ready
            descriptions.append(description)
            self.engine_choices.append({"worker": f"actor-{i}", **choices})
            self._frames_per_actor.append(self.frames_per_actor or 2 * choices["frames_in_flight"] + 2)
        self._description = (
            f"Ray: {n_actors} captioner actors ({gpus:g} GPU, {self.cpus_per_actor:g} CPU each), "
            f"each {'; '.join(dict.fromkeys(descriptions))}"
        )

    def describe(self) -> str:
        """The actors, and each one's model files, device, threads and frames in flight."""
        return self._description

    def close(self) -> None:
        """Stop the actors and disconnect (a local cluster this run started stops too)."""
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []
        if self._connected:
            self._ray.shutdown()
            self._connected = False

    # -- the work ---------------------------------------------------------------------------

    def run(self, work: Work) -> Generator[Captioned | Decoded, None, None]:
        """Stream the jobs through decode tasks into the actors; yield events as they finish.

        Raises:
            ExecutorError: A worker kept dying past ``retries``.
        """
        ray = self._ray
        decode = ray.remote(_decode_stream).options(
            num_cpus=self.cpus_per_decode,
            num_returns="streaming",
            max_retries=self.retries,
            _generator_backpressure_num_objects=work.prefetch_frames,
        )
        decoder = ray.put(work.decoder)
        questions = ray.put(work.questions)
        waiting = [replace(job, path=Path(os.path.abspath(job.path))) for job in reversed(work.jobs)]
        held: dict[Any, Any] = {}  # decode stream → its latest item, not yet known to be a frame
        calls: dict[Any, int] = {}  # caption call → the actor it went to
        load = [0] * len(self._actors)
        while waiting or held or calls:
            while waiting and len(held) < self._decode_tasks:
                held[decode.remote(decoder, waiting.pop())] = None
            room = [limit - queued for limit, queued in zip(self._frames_per_actor, load, strict=True)]
            ready, _ = ray.wait([*calls, *(held if max(room) > 0 else ())], num_returns=1, fetch_local=False)
            (item,) = ready
            if item in calls:
                load[calls.pop(item)] -= 1
                yield self._get(item)
                continue
            try:
                latest = next(item)
            except StopIteration:  # the item held back is the video's Decoded
                yield self._get(held.pop(item))
                continue
            frame, held[item] = held[item], latest
            if frame is not None:  # the stream went on: what it held was a FrameJob
                actor = room.index(max(room))
                load[actor] += 1
                calls[self._actors[actor].caption.remote(frame, questions)] = actor

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


def _decode_stream(decoder: Decoder, job: DecodeJob) -> Iterator[FrameJob | Decoded]:
    """Ray decode task: the video's frame jobs, pixels included, then its :class:`Decoded`."""
    yield from decoder.frames(job)


@dataclass(frozen=True)
class _Call:
    """A frame waiting at an actor for its turn in the engine."""

    answers: Future[list[Answer]]
    job: FrameJob
    questions: list[Question]


class _CaptionActor:
    """A Ray actor that loads the model once and captions one frame per call.

    Calls run on Ray's threads and wait for their answers; one engine thread feeds every frame
    the actor holds through the batched engine, so frames of different calls are decoded
    together. The engine's input ends whenever the queue runs dry (its frames then finish),
    and a new loop starts with the next call.

    Args:
        spec: The captioner to load.
        questions: The run's questions (a frame with them must fit the context).
        worker: This actor's name in the run summary (``actor-<i>``; a restart keeps it).
    """

    def __init__(self, spec: CaptionSpec, questions: list[Question], worker: str) -> None:
        # As in conf/hydra/job_logging: llama.cpp's warnings are expected noise.
        logging.getLogger("pipeline.llama_cpp").setLevel(logging.ERROR)
        self.worker = worker
        self.process = this_process()
        self.captioner: Captioner | None = None
        self.error: Exception | None = None
        self._queue: queue.Queue[_Call] = queue.Queue()
        try:
            captioner = Captioner.from_spec(spec)
            captioner.setup()
        except (UserError, EngineError) as error:
            # Reported by ready(): raising here would only make Ray restart the actor in vain.
            self.error = error
            return
        try:
            captioner.check_fits(questions)
        except UserError as error:
            captioner.close()
            self.error = error
            return
        self.captioner = captioner
        threading.Thread(target=self._serve, name="engine", daemon=True).start()

    def ready(self) -> tuple[str, dict[str, str], str, dict[str, Any]] | Exception:
        """The model this actor loaded (name, files, where it runs, what it decided on its
        machine: :meth:`Captioner.choices`), or why it could not."""
        if self.captioner is None:
            return self.error or EngineError("the captioner did not load")
        c = self.captioner
        return c.model_name, c.files.as_dict(), c.describe(), c.choices()

    def pid(self) -> int:
        """This actor's process id (tests kill it)."""
        return os.getpid()

    def caption(self, job: FrameJob, questions: list[Question]) -> Captioned:
        """The answers about one frame. Calls of one run share ``questions``.

        Raises:
            EngineError: The engine failed.
        """
        call = _Call(Future(), job, questions)
        self._queue.put(call)
        return Captioned(job.without_pixels(), call.answers.result(), self.worker, self.process)

    def _serve(self) -> None:
        assert self.captioner is not None
        while True:
            first = self._queue.get()
            taken: dict[int, _Call] = {}
            try:
                for job, answers in answer_frames(self.captioner, self._queued(first, taken), first.questions):
                    taken[id(job)].answers.set_result(answers)
            except Exception as error:  # noqa: BLE001  (handed to the calls waiting on it)
                for call in taken.values():
                    if not call.answers.done():
                        call.answers.set_exception(error)

    def _queued(self, first: _Call, taken: dict[int, _Call]) -> Iterator[FrameJob]:
        """``first``'s frame, then those of the calls queued meanwhile, until none is waiting."""
        call: _Call | None = first
        while call is not None:
            taken[id(call.job)] = call
            yield call.job
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                call = None
