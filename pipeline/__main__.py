"""``python -m pipeline``: hands over to the command line (:func:`pipeline.cli.main`).

Loading it takes about half a second; Ctrl-C, SIGTERM or SIGHUP meanwhile is one line and exit
130, 143 or 129, as later.
"""

import sys

from pipeline.signals import Stopped, say_stopped, stop_on_signals


def run() -> None:
    """Load the command line and run it."""
    try:
        with stop_on_signals():
            from pipeline.cli import main

            main()
    except Stopped as stop:
        sys.exit(say_stopped(stop.signum, " before the run began: nothing was written"))


if __name__ == "__main__":
    run()
