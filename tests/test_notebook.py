"""``notebooks/analyze_captions.ipynb``: stored clean, and runs top to bottom with papermill (as
the README says) on a tiny-model run of two videos; its headline counts are checked against the
Parquet, read here with plain pandas, its one-prompt timeline against the answers, and the runs
it shows against the records of the runs that made the results and came after."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from tests.conftest import ROOT, SAMPLE_VIDEO, last_run, run_cli, write_video

NOTEBOOK = ROOT / "notebooks" / "analyze_captions.ipynb"
PROBE = 'import json\nprint("PROBE " + json.dumps({"headline": headline, "timeline_text": timeline_text}))'


def run_notebook(
    output_dir: Path, probe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[nbformat.NotebookNode], str]:
    """Run the notebook on ``output_dir`` (papermill, this checkout's pipeline), with the code
    ``probe`` as a last cell: the executed code cells, and all they printed."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(probe))
    nbformat.write(notebook, tmp_path / "probed.ipynb")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    papermill.execute_notebook(
        str(tmp_path / "probed.ipynb"), str(tmp_path / "executed.ipynb"),
        parameters={"output_dir": str(output_dir)}, cwd=str(NOTEBOOK.parent), kernel_name="python3", progress_bar=False,
    )
    cells = [c for c in nbformat.read(tmp_path / "executed.ipynb", as_version=4).cells if c.cell_type == "code"]
    return cells, "".join(o.get("text", "") for c in cells for o in c.outputs if o.output_type == "stream")


def parameters_index(notebook: nbformat.NotebookNode) -> int:
    """Index of the one cell tagged ``parameters``."""
    (index,) = [
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    ]
    return index


def test_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert (
        notebook.cells[parameters_index(notebook)].source.splitlines()[-1]
        == 'output_dir = "../data/output"'
    )


def test_notebook_runs_on_a_tiny_run_and_counts_right(
    cli_base: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "sample.mp4").symlink_to(SAMPLE_VIDEO)
    write_video(videos / "bars.mp4", n_frames=20, fps=10.0)
    # Frames 0, 25, 50 of the sample and 0, 10 of bars: 5 frames, 4 distinct frame indices.
    done = run_cli(*cli_base, f"video={videos}", "max_frames=3")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    captioning_run = last_run(out)
    # A night with nothing to do after it must not hide the night that made the results.
    idle = run_cli(*cli_base, f"video={videos}", "max_frames=3")
    assert "nothing to do" in idle.stderr, idle.stderr
    idle_run = last_run(out)
    # Relative, as the README runs it; raises PapermillExecutionError, with the cell and its
    # traceback, if any cell fails.
    cells, printed = run_notebook(Path(os.path.relpath(out, NOTEBOOK.parent)), PROBE, tmp_path, monkeypatch)

    probe = json.loads(printed.split("PROBE ", 1)[1].splitlines()[0])
    df = pd.read_parquet(out)
    frames = len(df[["video_id", "frame_index"]].dropna().drop_duplicates())
    ok = df[df.status == "ok"]
    assert (len(df), df.video_id.nunique(), frames) == (5, 2, 5)
    assert probe["headline"] == {
        "rows": len(df),
        "videos": df.video_id.nunique(),
        "frames": frames,
        "prompts": df.prompt_id.nunique(),
        "answers": len(ok),
        "cut_answers": int(ok.finish_reason.eq("length").sum()),
        "failed_answers": int((df.status == "error").sum()),
        "failed_videos": 0,
    }
    headline = (
        f"{len(df)} rows, 2 videos, 5 frames, {len(ok)} answers "
        f"({probe['headline']['cut_answers']} cut at max_tokens), 0 failed answers, 0 failed videos in {out}"
    )
    assert headline in printed
    assert f"last run: started {idle_run['started']}, 0 videos done, 2 skipped, 0 failed; 0 frames in" in printed
    assert (
        f"last run that captioned: started {captioning_run['started']}, 2 videos done, 0 skipped, 0 failed; "
        "5 frames in"
    ) in printed
    # One prompt: each video's timeline carries its answers' text, in time order.
    for video_id, rows in ok.sort_values("timestamp_s").groupby("video_id"):
        expected = [textwrap.shorten(" ".join(a.split()), 70, placeholder=" …") for a in rows.answer]
        assert probe["timeline_text"][video_id] == expected
    assert any("image/png" in o.get("data", {}) for c in cells for o in c.outputs), "no figure was drawn"
