"""``python -m pipeline.report output_dir=DIR [video_id=ID] [out=PATH] [page_frames=N] [inline=true]``."""

from __future__ import annotations

import sys

from pipeline.errors import UserError
from pipeline.options import asks_help, flag, number, parse_options
from pipeline.owed import settle_report
from pipeline.report.write import PAGE_FRAMES, write_report
from pipeline.runlog import console_logging, say_error
from pipeline.signals import printing_command, show
from pipeline.words import visible

USAGE = (
    "usage: python -m pipeline.report output_dir=DIR [video_id=ID] [out=PATH] [page_frames=N] "
    "[inline=true]"
)
_KEYS = ("output_dir", "video_id", "out", "page_frames", "inline")


@printing_command
def main(argv: list[str] | None = None) -> int:
    """Parse ``key=value`` arguments and write the report.

    Returns:
        0 when written, 1 on bad arguments or a failure (one line on stderr says which), the
        report's own or its line's (an output that cannot be written: the report stays written).
    """
    args = sys.argv[1:] if argv is None else argv
    if asks_help(args, USAGE):
        return 0
    console_logging()
    try:
        options = parse_options(args, _KEYS, ("output_dir",))
        page_frames = number(options, "page_frames", PAGE_FRAMES, minimum=1)
        inline = flag(options, "inline", default=False)
    except UserError as error:
        say_error(f"{error}; {USAGE}")
        return 1
    try:
        path = write_report(options["output_dir"], options.get("out"), options.get("video_id"), page_frames, inline)
        if "out" not in options and "video_id" not in options:  # the report a night writes
            settle_report(path.parent)
    except (UserError, OSError) as error:
        say_error(str(error))
        return 1
    return show(visible(f"wrote {path}"), visible(f"the report is written: {path}"))
