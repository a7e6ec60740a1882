"""Model files' SHA-256: computed once per file, cached by size and mtime, and recorded in every
Parquet file's metadata next to the files' names."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import pipeline.run
from pipeline import checksums
from pipeline.checksums import cache_path, file_sha256, model_sha256
from pipeline.executors.local import LocalExecutor
from pipeline.presets import captioner_from_preset
from pipeline.run import Pipeline
from pipeline.sampling import AllSampler
from pipeline.store import read_metadata
from tests.conftest import SAMPLE_VIDEO, run_cli


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIDEO_CAPTION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_digest_is_cached_by_size_and_mtime(tmp_path: Path, cache_dir: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights " * 1000)
    stat = model.stat()

    assert file_sha256(model) == sha256(model)
    assert cache_path() == cache_dir / "sha256.json"
    entry = json.loads(cache_path().read_text())[str(model.resolve())]
    assert entry == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256(model)}

    # Same size and mtime: the cached digest, without reading the file again.
    original = sha256(model)
    model.write_bytes(b"WEIGHTS " * 1000)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(model) == original

    # A new mtime (or size) hashes the file again.
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(model) == sha256(model) != original


def test_an_unwritable_cache_only_costs_the_rehash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("VIDEO_CAPTION_CACHE", str(blocker))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")

    assert file_sha256(model) == file_sha256(model) == sha256(model)


def test_an_unreadable_model_file_has_no_digest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    present = tmp_path / "a.gguf"
    present.write_bytes(b"a")

    with caplog.at_level(logging.WARNING, logger=checksums.__name__):
        digests = model_sha256({"text_model": str(present), "mmproj": str(tmp_path / "gone.gguf")})

    assert digests == {"text_model": sha256(present), "mmproj": None}
    assert "no SHA-256 for mmproj" in caplog.text


def test_parquet_metadata_has_the_model_files_sha256(
    cli_base: list[str], tmp_path: Path, tiny_model_dir: Path, cache_dir: Path
) -> None:
    done = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=1")  # inherits the cache dir
    assert done.returncode == 0, done.stderr

    (part,) = (tmp_path / "out").glob("*/part-*.parquet")
    metadata = read_metadata(part)
    files = metadata["model_files"]
    assert set(files) == {"text_model", "mmproj"}
    assert metadata["model_sha256"] == {name: sha256(Path(path)) for name, path in files.items()}
    assert Path(files["text_model"]).parent == tiny_model_dir
    cached = json.loads((cache_dir / "sha256.json").read_text())
    assert {entry["sha256"] for entry in cached.values()} == set(metadata["model_sha256"].values())


def test_hashing_does_not_hold_up_the_model(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run hashes its model files (gigabytes for a real model) beside the captioning,
    not before it, and every Parquet file still gets the digests."""
    answered = threading.Event()
    take_answers = Pipeline._take_answers

    def take(self: Pipeline, *args: Any) -> None:
        answered.set()
        take_answers(self, *args)

    def hash_after_the_first_answer(files: dict[str, str]) -> dict[str, str | None]:
        assert answered.wait(120), "the model waited for the hashing"
        return {name: "digest of " + name for name in files}

    monkeypatch.setattr(Pipeline, "_take_answers", take)
    monkeypatch.setattr(pipeline.run, "model_sha256", hash_after_the_first_answer)
    out = tmp_path / "out"
    out.mkdir()
    run = Pipeline(AllSampler(), ["What?"], out, config_id="c1", prefetch_frames=4, checkpoint_frames=32, max_frames=3)
    with captioner_from_preset("tiny", f"model.dir={tiny_model_dir}", "generation.max_tokens=4") as captioner:
        summary = run.run(run.plan([SAMPLE_VIDEO]), LocalExecutor(captioner))

    assert summary.frames == 3
    (part,) = out.glob("*/part-*.parquet")
    assert read_metadata(part)["model_sha256"] == {"text_model": "digest of text_model", "mmproj": "digest of mmproj"}
