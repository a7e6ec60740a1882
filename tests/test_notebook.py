"""``notebooks/analyze_captions.ipynb``: stored clean, and runs top to bottom on a tiny-model run.

The run's ``output_dir`` is injected as papermill does: a cell tagged ``injected-parameters``
right after the cell tagged ``parameters``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT, SAMPLE_VIDEO, run_cli

NOTEBOOK = ROOT / "notebooks" / "analyze_captions.ipynb"


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


def test_notebook_runs_on_a_tiny_run(
    cli_base: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=3")
    assert done.returncode == 0, done.stderr
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Relative to notebooks/, the kernel's folder, as the default output_dir is.
    output_dir = os.path.relpath(tmp_path / "out", NOTEBOOK.parent)
    notebook.cells.insert(
        parameters_index(notebook) + 1,
        nbformat.v4.new_code_cell(
            f"output_dir = {output_dir!r}", metadata={"tags": ["injected-parameters"]}
        ),
    )

    # The kernel imports this checkout's pipeline, as the tests do, not an installed copy.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    # Raises CellExecutionError, with the cell and its traceback, if any cell fails.
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    printed = "".join(
        output.get("text", "") for output in outputs if output.output_type == "stream"
    )
    assert f"3 frames in {tmp_path / 'out'}" in printed
    assert any("image/png" in output.get("data", {}) for output in outputs), "no figure was drawn"
