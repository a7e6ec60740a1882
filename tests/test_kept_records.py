"""Records the pipeline keeps in ``output_dir`` and reads back, changed into valid JSON of another
shape (by hand, another version, a damaged disk: a wrong type, an absurd number, a bare ``NaN``):
each reader treats one that does not fit as one that does not read, so no night crashes for
ever and no sub-command prints a traceback; a night's record says only what happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, assert_one_line_error, cli_env

# -- a sub-command's crash ---------------------------------------------------------------------


def test_a_sub_commands_crash_is_one_line_as_a_runs(tmp_path: Path) -> None:
    """``python -m pipeline.status`` (not through ``python -m pipeline``) printed a bug's bare
    traceback; now it is one line, as a run's crash, the traceback in a file."""
    # A bug stood in for: the status module's main, its work made to fail.
    command = [sys.executable, "-c", "import sys; import pipeline.status as s; "
               "s.status_lines = lambda *a, **k: 1 / 0; sys.exit(s.main(sys.argv[1:]))",
               f"output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, env=cli_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                            timeout=120)

    assert_one_line_error(result, 1, "ERROR] crashed: ZeroDivisionError: division by zero (traceback in ")
