"""``dry_run=true``: what a run would do, from its plan alone.

The plan reads only what is committed in ``output_dir`` and each video's container header
(:class:`~pipeline.run.Pipeline` with ``read_only``); no model is loaded, nothing is locked or
written (not even ``output_dir``): no error record is removed, no damaged chunk moved aside.
Frames are counted as the progress bar estimates them: from each video's duration and the
sampler (exact for ``sampler=all`` and ``interval`` on a constant frame rate, known only once
decoded for ``sampler=scene``), less the frames already answered; the prompts counted are
those that would be asked: a frame answered before is asked only the prompts it lacks. A file
that does not open as a video (a text file named ``x.mp4``, an empty file) is listed as the
failure the run would record for it, with the run's reason. Every line is one line, whatever a
file name holds (:func:`pipeline.words.visible`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.decode import VideoError, VideoReader
from pipeline.run import Pipeline, VideoTask
from pipeline.words import plural, visible


def plan_lines(pipeline: Pipeline, tasks: list[VideoTask], retry_failed: bool, model_name: str) -> list[str]:
    """One line per video (what would happen to it and why), then a total."""
    lines = [f"dry run: nothing is captioned or written, and model {model_name} is not loaded"]
    frames: list[int | None] = []
    questions = 0
    for task in tasks:
        outcome = task.outcome
        if outcome.status == "todo":
            expected = pipeline.expected_frames(task)
            failure = _unreadable(task.path) if expected == 0 else None
            if failure is not None:
                lines.append(f"fail     {outcome.path}: {failure}")
                continue
            frames.append(expected)
            if expected is None:
                lines.append(f"caption  {outcome.path}: frames known once decoded (sampler=scene), {_asked(pipeline)}")
            else:
                asked, counted = _asked_of(pipeline, task, expected)
                questions += counted
                lines.append(f"caption  {outcome.path}: {plural(expected, 'frame')}, {asked}")
        elif outcome.status == "error":
            lines.append(f"fail     {outcome.path}: {outcome.error}")
        elif outcome.status == "waiting":
            lines.append(f"wait     {outcome.path}: {outcome.note}")
        elif outcome.error and retry_failed:
            frames.append(None)
            lines.append(f"retry    {outcome.path}: {outcome.error}")
        elif outcome.error:
            lines.append(f"skip     {outcome.path}: {outcome.error} (retry_failed=true tries it again)")
        else:
            lines.append(f"skip     {outcome.path}: {outcome.note}")
    counted_frames = [n for n in frames if n is not None]
    unknown = len(frames) - len(counted_frames)
    what = f"{plural(sum(counted_frames), 'frame')}, {plural(questions, 'question')}"
    what += f" + those of {unknown} known once decoded" if unknown else ""
    lines.append(f"{plural(len(tasks), 'video')}, {len(frames)} to caption: {what} -> {pipeline.output_dir}")
    return [visible(line) for line in lines]


def _unreadable(path: Path) -> str | None:
    """Why the run would record ``path`` as failed without asking anything (it does not open as
    a video: :class:`~pipeline.decode.VideoReader`'s reason, the error record's), or ``None``."""
    try:
        with VideoReader(path):
            return None
    except VideoError as error:
        return str(error)


def _asked(pipeline: Pipeline) -> str:
    """``2 prompts each``: every prompt of the run, asked of every frame."""
    return f"{plural(len(pipeline.questions), 'prompt')} each"


def _asked_of(pipeline: Pipeline, task: VideoTask, expected: int) -> tuple[str, int]:
    """The prompts a video's ``expected`` frames would be asked, in words, and how many
    questions that is: a frame that earlier runs answered some of the prompts is asked only
    the others."""
    prompt_ids = {q.prompt_id for q in pipeline.questions}
    if expected == 0:
        return "nothing to ask", 0
    lacking = [
        len(prompt_ids - answered)
        for answered in task.committed.answered.values()
        if prompt_ids & answered and not prompt_ids <= answered
    ][:expected]
    new_frames = expected - len(lacking)
    questions = new_frames * len(prompt_ids) + sum(lacking)
    per_frame = set(lacking) | ({len(prompt_ids)} if new_frames else set())
    if len(per_frame) == 1 and len(prompt_ids) in per_frame:
        return _asked(pipeline), questions
    if len(per_frame) == 1:
        (count,) = per_frame
        before = f"{len(prompt_ids) - count} of {len(prompt_ids)} answered before"
        return f"{plural(count, 'prompt')} each ({before})", questions
    return f"{plural(questions, 'question')} (prompts answered before are not asked again)", questions
