"""``dry_run=true``: what a run would do, from its plan alone.

The plan reads only what is committed in ``output_dir`` and each video's container header
(:class:`~pipeline.run.Pipeline` with ``read_only``); no model is loaded, nothing is locked or
written (not even ``output_dir``): no error record is removed, no damaged chunk moved aside.
Frames are counted as the progress bar estimates them: from each video's duration and the
sampler (exact for ``sampler=all`` and ``interval`` on a constant frame rate, known only once
decoded for ``sampler=scene``), less the frames already answered.
"""

from __future__ import annotations

from pipeline.run import Pipeline, VideoTask


def plan_lines(pipeline: Pipeline, tasks: list[VideoTask], retry_failed: bool, model_name: str) -> list[str]:
    """One line per video (what would happen to it and why), then a total."""
    lines = [f"dry run: nothing is captioned or written, and model {model_name} is not loaded"]
    frames: list[int | None] = []
    asked = f"{len(pipeline.questions)} prompt{'s' if len(pipeline.questions) != 1 else ''}"
    for task in tasks:
        outcome = task.outcome
        if outcome.status == "todo":
            expected = pipeline.expected_frames(task)
            frames.append(expected)
            count = "frames known once decoded (sampler=scene)" if expected is None else f"{expected} frames"
            lines.append(f"caption  {outcome.path}: {count}, {asked} each")
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
    counted = [n for n in frames if n is not None]
    unknown = len(frames) - len(counted)
    what = f"{sum(counted)} frames" + (f" + those of {unknown} known once decoded" if unknown else "")
    lines.append(f"{len(tasks)} videos, {len(frames)} to caption: {what}, {asked} each -> {pipeline.output_dir}")
    return lines
