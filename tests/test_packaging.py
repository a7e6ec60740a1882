"""What ``pip install .`` installs is the whole package: every subpackage of ``pipeline/`` is
listed in ``pyproject.toml`` and every file beside the modules that the code loads (the report's
templates, the YAML of ``conf/``) is taken as package data. The tests import the checkout, so
without this check a package the list leaves out works here and fails for every user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _setuptools() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folder(package: str, package_dir: dict[str, str]) -> Path:
    return ROOT / package_dir.get(package, package.replace(".", "/"))


def test_every_subpackage_is_installed() -> None:
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pipeline").rglob("__init__.py")}
    listed = set(_setuptools()["packages"])
    assert found - listed == set(), "add them to [tool.setuptools] packages in pyproject.toml"


def test_every_data_file_is_installed() -> None:
    config = _setuptools()
    package_dir = config.get("package-dir", {})
    folders = {package: _folder(package, package_dir) for package in config["packages"]}
    taken = {
        path
        for package, globs in config.get("package-data", {}).items()
        for pattern in globs
        for path in folders[package].glob(pattern)
    }
    data_files = [
        path
        for folder in folders.values()
        for path in folder.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert data_files, "no data files found: the check looks in the wrong place"
    assert sorted(str(p.relative_to(ROOT)) for p in data_files if p not in taken) == []


def test_every_script_names_a_function_that_stops_in_one_line() -> None:
    """Each ``[project.scripts]`` entry names a function that exists; the command line's is the
    one ``python -m pipeline`` runs, under which a stop while loading is one line."""
    import importlib

    import pipeline.__main__

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target
    assert scripts["video-caption"] == f"pipeline.__main__:{pipeline.__main__.run.__name__}"
