"""The house rules, executable: every module sits in a room of the table in
``tests/architecture.py``, imports only what its part may, never what :data:`NEVER` forbids,
takes no private name from another room, closes no circle and stays within
:data:`MAX_MODULE_LINES`; ``docs/architecture.md`` shows that same table. The checker is itself
tested: each planted violation below is reported."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.architecture import DOC, MAX_MODULE_LINES, PARTS, doc_part, generated_doc, room_of, violations
from tests.conftest import ROOT, RUN_TIMEOUT_S


def test_the_package_keeps_the_table() -> None:
    assert violations(ROOT) == []


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package, to plant violations in."""
    root = tmp_path_factory.mktemp("house")
    shutil.copytree(ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "conf"))
    return root


PLANTED = [
    # (file, line added at its end, what the checker must say)
    ("pipeline/decode.py", "import pipeline.sampling",
     "circle: pipeline.decode -> pipeline.sampling -> pipeline.decode"),
    ("pipeline/caption/engine/scheduler.py", "import pipeline.report",
     "scheduler.py:{line} imports pipeline.report: an arrow up the table (Caption -> Look)"),
    ("pipeline/caption/weights.py", "from pipeline.store import read_results",
     "weights.py:{line} imports pipeline.store: Caption never imports Store"),
    ("pipeline/caption/formats.py", "from ..store import SCHEMA", "Caption never imports Store"),
    ("pipeline/caption/__init__.py", "from pipeline.config import compose_config", "Caption never imports Settings"),
    ("pipeline/thumbnails.py", "from pipeline.config import ThumbnailsConfig", "Stages never imports Settings"),
    ("pipeline/sampling.py", "def later() -> None:\n    import pipeline.cli",
     "sampling.py:{line} imports pipeline.cli: Stages never imports Face"),
    ("pipeline/inputs.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.store import SCHEMA",
     "Stages never imports Store"),
    ("pipeline/run.py", "from pipeline.executors.local import LocalExecutor",
     "Loop never imports pipeline/executors/local.py"),
    ("pipeline/executors/base.py", "from pipeline.executors import ray", "never imports pipeline/executors/ray.py"),
    ("pipeline/dry_run.py", "from pipeline.run import _raise_first_error",
     "dry_run.py:{line} imports pipeline.run: private name _raise_first_error taken across rooms"),
    ("pipeline/results.py", "from pipeline.run import Pipeline", "Look may import only"),
    ("pipeline/paths.py", "from pipeline.store import SCHEMA", "an arrow up the table (Base -> Store)"),
]


@pytest.mark.parametrize(
    ("file", "line", "said"), PLANTED, ids=[f"{file}+{line.split()[-1]}" for file, line, _ in PLANTED]
)
def test_each_planted_violation_is_reported(clean_copy: Path, tmp_path: Path, file: str, line: str, said: str) -> None:
    root = tmp_path / "house"
    shutil.copytree(clean_copy, root)
    target = root / file
    text = target.read_text()
    target.write_text(f"{text}\n{line}\n")
    last_line = len(f"{text}\n{line}".splitlines())
    found = violations(root)
    assert any(said.format(line=last_line) in problem for problem in found), found


def test_imports_within_a_part_and_down_its_list_are_allowed(clean_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "house"
    shutil.copytree(clean_copy, root)
    planted = {
        "pipeline/errors.py": "from pipeline.paths import user_cache_dir\nimport pipeline.errors",
        "pipeline/export/__init__.py": "from pipeline.summary import RunRecord",
        "pipeline/presets.py": "from pipeline.caption.weights import ModelFiles",
    }
    for file, line in planted.items():
        (root / file).write_text(f"{(root / file).read_text()}\n{line}\n")
    assert violations(root) == []


def test_a_module_over_the_line_limit_is_reported(clean_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "house"
    shutil.copytree(clean_copy, root)
    module = root / "pipeline" / "words.py"
    lines = module.read_text().splitlines()
    padding = [f"# filler {i}" for i in range(MAX_MODULE_LINES - len(lines))]
    module.write_text("\n".join(lines + padding) + "\n")
    assert violations(root) == []  # exactly at the limit
    module.write_text(module.read_text() + "# one more\n")
    assert violations(root) == [
        f"pipeline/words.py has {MAX_MODULE_LINES + 1} lines, over {MAX_MODULE_LINES}: split it by reason to change"
    ]


def test_a_module_outside_the_table_is_reported(clean_copy: Path, tmp_path: Path) -> None:
    root = tmp_path / "house"
    shutil.copytree(clean_copy, root)
    (root / "pipeline" / "caption" / "engine" / "newroom.py").write_text("from pipeline.errors import ConfigError\n")
    source = root / "pipeline" / "caption" / "engine" / "source.py"
    source.write_text(source.read_text() + "\nfrom pipeline.caption.engine import newroom\n")
    assert violations(root) == [
        "pipeline/caption/engine/newroom.py is in no room of the table (tests/architecture.py PARTS)",
        f"pipeline/caption/engine/source.py:{len(source.read_text().splitlines())} imports "
        "pipeline.caption.engine.newroom, which is in no room of the table",
    ]


def test_a_module_outside_the_table_has_no_room() -> None:
    (look,) = [part for part in PARTS if part.name == "Look"]
    assert room_of("pipeline/report/pages.py") == (look, "pipeline/report/pages.py")
    assert room_of("pipeline/report.py") is None and room_of("pipeline/report/new.py") is None


def test_the_doc_shows_the_table_and_names_every_module() -> None:
    text = DOC.read_text()
    assert doc_part(text) == generated_doc(), "docs/architecture.md is stale: run python -m tests.architecture --write"
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        held = room_of(path.relative_to(ROOT).as_posix())
        assert held is not None and f"`{held[1]}`" in text, f"{path} is not named in {DOC}"


def test_every_room_in_the_table_exists() -> None:
    missing = [room for part in PARTS for room in part.rooms if not (ROOT / room).exists()]
    assert missing == [], f"rooms in tests/architecture.py with no module: {missing}"


def test_readme_links_the_map() -> None:
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


def test_the_core_loads_no_application() -> None:
    # In a fresh interpreter: this one has imported pyarrow and Hydra for other tests.
    done = subprocess.run(
        [sys.executable, "-c", "import sys, pipeline.caption; print('pyarrow' in sys.modules, 'hydra' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_library_use_does_not_import_the_command_line(tiny_model_dir: Path) -> None:
    script = (
        "import sys, numpy as np\n"
        "from pipeline.presets import captioner_from_preset\n"
        f"with captioner_from_preset('tiny', 'model.dir={tiny_model_dir}', 'generation.max_tokens=4') as c:\n"
        "    assert c.answer(np.zeros((64, 64, 3), np.uint8), 'What is shown?')\n"
        "assert 'pipeline.cli' not in sys.modules, 'captioner_from_preset imported the CLI'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
