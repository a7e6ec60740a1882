"""The package's layering: imports point down cli → run → executors → stages → store, so no
stage imports the command line or the run loop, and there is no import circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, RUN_TIMEOUT_S

PACKAGE = ROOT / "pipeline"

# Higher imports lower or equal, never the other way.
LAYERS = [
    ("pipeline.__main__", "pipeline.cli", "pipeline.download", "pipeline.arguments", "pipeline.dry_run"),
    ("pipeline.run",),
    ("pipeline.executors",),
    (
        "pipeline.caption", "pipeline.decode", "pipeline.sampling", "pipeline.scenes",
        "pipeline.thumbnails", "pipeline.inputs", "pipeline.lock", "pipeline.report",
        "pipeline.results", "pipeline.export", "pipeline.checksums",
    ),
    ("pipeline.store",),
    (
        "pipeline.config", "pipeline.errors", "pipeline.paths", "pipeline.runlog", "pipeline.listfile",
        "pipeline.watchdog", "pipeline",
    ),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that names ``module`` (0 is the top)."""
    best = (-1, 0)
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best[0]:
                best = (len(name), index)
    assert best[0] > 0, f"{module} is in no layer; add it to LAYERS"
    return best[1]


def imports_of(path: Path) -> set[str]:
    """The ``pipeline`` modules that the file at ``path`` imports, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "pipeline" or name.startswith("pipeline.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_point_down() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for imported in imports_of(path):
            if layer_of(imported) < layer_of(module):
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_library_use_does_not_import_the_command_line(tiny_model_dir: Path) -> None:
    # In a fresh interpreter: this one has imported pipeline.cli for other tests.
    script = (
        "import sys, numpy as np\n"
        "import pipeline.caption\n"
        "assert 'pipeline.cli' not in sys.modules, 'importing pipeline.caption imported the CLI'\n"
        "from pipeline.caption import Captioner\n"
        f"with Captioner.from_preset('tiny', 'model.dir={tiny_model_dir}', 'generation.max_tokens=4') as c:\n"
        "    assert c.answer(np.zeros((64, 64, 3), np.uint8), 'What is shown?')\n"
        "assert 'pipeline.cli' not in sys.modules, 'Captioner.from_preset imported the CLI'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
