"""An HTML report of a run's results: the night at a glance, then thumbnails, timecodes and answers.

``python -m pipeline.report output_dir=DIR [video_id=ID] [out=PATH] [page_frames=N] [inline=true]``
writes ``DIR/_report.html`` (``DIR/_report-<video_id>.html`` for one video) and its files in
``DIR/_report_files/`` (named after the page); the leading underscore keeps Parquet readers
away. The pages have no script and load nothing from the network, so they open offline.

- **Header**: the run's context: model and the SHA-256 of its files, prompts, sampler and
  generation settings, counts (videos, frames, answers, answers cut by ``max_tokens``,
  failures); the last run (the run that wrote the report, when a run writes it), its wall time,
  frames/s and exit code, and the last run that captioned something where that is an earlier
  one, so a "nothing to do" night never hides it (:mod:`pipeline.summary`).
- **Overview**: a row per video: duration, frames, coverage, answers, errors, latency, its
  subtitle tracks and its pages.
- **Structured answers**: per prompt with a JSON Schema and settings (``config_id``), the
  share of its answers that ended stop, length and invalid, the counts of each boolean and
  enum value and the min, median and max of each number (:func:`pipeline.results.schema_summary`).
- **A section per video**: its summary, errors, a player (the video with its answers as
  subtitles, a track per prompt labelled with the prompt's number in the header, when the file
  is there, was read and its codec plays in browsers), and a contact sheet: a
  card per sampled frame with its thumbnail, timecode (an in-page anchor), a link that opens the
  video at that time (``file://…#t=``) and every prompt's answer.
- **Scale**: each thumbnail is stored once, as a file named by its content, and referenced
  (``loading="lazy"``); up to ``page_frames`` frames (default 500) all sections go on one page,
  above that each video gets its own pages of ``page_frames`` cards. ``inline=true`` makes one
  self-contained page instead (thumbnails inlined), for mailing a small report.

The report also writes each video's WebVTT tracks (:mod:`pipeline.export`) and links them.

The package: :mod:`~pipeline.report.data` gathers what the pages show, :mod:`~pipeline.report.pages`
turns it into HTML through the Jinja2 templates in ``templates/`` (autoescape on),
:mod:`~pipeline.report.write` writes the pages and their files, and
:mod:`~pipeline.report.command` is ``python -m pipeline.report``.
"""

from pipeline.report.command import main
from pipeline.report.write import PAGE_FRAMES, render_report, write_report
from pipeline.results import printable

__all__ = ["PAGE_FRAMES", "main", "printable", "render_report", "write_report"]
