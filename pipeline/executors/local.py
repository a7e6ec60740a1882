"""``executor=local``: a decode thread feeding one in-process captioner."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Generator, Iterator
from typing import Any

from pipeline.caption import Captioner, CaptionSpec, Question
from pipeline.executors.base import Captioned, Decoded, FrameJob, Work
from pipeline.executors.frames import answer_frames, this_process


class LocalExecutor:
    """Decodes on a thread and captions in this process.

    The thread decodes and samples the videos one after another into a bounded queue
    (``Work.prefetch_frames``), so decoding overlaps model work; the engine takes frames from
    that queue across video boundaries.

    Args:
        captioner: A set-up captioner to use (not closed here); ``None``: :meth:`start` loads
            one.
    """

    def __init__(self, captioner: Captioner | None = None) -> None:
        self.captioner = captioner
        self._owned = False
        self._process = this_process()

    @property
    def model_name(self) -> str:
        """The preset's name."""
        return self.captioner.model_name if self.captioner else ""

    @property
    def model_files(self) -> dict[str, str]:
        """The model files in use."""
        return self.captioner.files.as_dict() if self.captioner else {}

    @property
    def engine_choices(self) -> list[dict[str, Any]]:
        """What the engine decided on this machine (:meth:`Captioner.choices`)."""
        return [{"worker": "local", **self.captioner.choices()}] if self.captioner else []

    def describe(self) -> str:
        """The model's files, the device, threads and frames in flight."""
        return self.captioner.describe() if self.captioner else "no model loaded"

    def start(self, spec: CaptionSpec, questions: list[Question]) -> None:
        """Resolve (and if needed fetch) the weights, load the model and check that a frame
        with ``questions`` can fit.

        Raises:
            WeightsError: Files missing or not matching.
            EngineError: The model does not load.
            ConfigError: No frame can fit the context.
        """
        captioner = Captioner.from_spec(spec)
        captioner.setup()
        self.captioner, self._owned = captioner, True
        captioner.check_fits(questions)

    def close(self) -> None:
        """Free the model if :meth:`start` loaded it."""
        if self._owned and self.captioner is not None:
            self.captioner.close()
            self.captioner, self._owned = None, False

    def run(self, work: Work) -> Generator[Captioned | Decoded, None, None]:
        """Decode on a thread, caption here; yields each video's :class:`Decoded` no later than
        the answers that follow it."""
        if self.captioner is None:
            raise RuntimeError("LocalExecutor.start() was not called")
        producer = _Producer(work)
        producer.start()
        decoded: deque[Decoded] = deque()

        def frames() -> Iterator[FrameJob]:
            while not isinstance(item := producer.queue.get(), _End):
                if isinstance(item, Decoded):
                    decoded.append(item)
                else:
                    yield item

        try:
            for job, answers in answer_frames(self.captioner, frames(), work.questions):
                while decoded:
                    yield decoded.popleft()
                yield Captioned(job.without_pixels(), answers, "local", self._process)
            while decoded:
                yield decoded.popleft()
        finally:
            producer.stop.set()
            producer.join()
        if producer.error is not None:
            raise producer.error


class _End:
    """The producer's last queue item."""


class _Producer(threading.Thread):
    """Decodes and samples the videos in turn, queueing the frames that still need answers."""

    def __init__(self, work: Work) -> None:
        super().__init__(name="decode", daemon=True)
        self.work = work
        self.queue: queue.Queue[FrameJob | Decoded | _End] = queue.Queue(maxsize=work.prefetch_frames)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for job in self.work.jobs:
                for item in self.work.decoder.frames(job):
                    if not self._put(item):
                        return
        except BaseException as error:  # noqa: BLE001  (handed to the main thread, which re-raises it)
            self.error = error
        finally:
            self._put(_End())

    def _put(self, item: FrameJob | Decoded | _End) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
