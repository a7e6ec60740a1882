"""A model is its content (issue 23 points 5, 11, 13, 17; issue 25 point 4): what goes into
``config_id``, the F16 copy keyed by the source's content, the SHA-256 of the user's file, a
read-only or moved cache, and model files that load but are wrong."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import gguf
import numpy as np
import pandas as pd
import pytest

from pipeline.caption import Captioner
from pipeline.caption.convert import llama_quantize
from pipeline.caption.tiny import FILE_TYPES, TINY_TEXT, ensure_tiny_model, write_text_model
from pipeline.caption.weights import model_fingerprint
from pipeline.config import (
    ANSWER_SETTINGS,
    OTHER_SETTINGS,
    EngineConfig,
    GenerationConfig,
    ModelConfig,
    compose_config,
)
from pipeline.errors import WeightsError
from pipeline.presets import caption_spec, captioner_from_config
from pipeline.store import read_metadata
from tests.conftest import SAMPLE_VIDEO, assert_one_line_error, last_run, mount_tmpfs, run_cli


def other_text_model(path: Path, seed: int, without: tuple[str, ...] = ()) -> Path:
    """A tiny-shaped text model with weights of its own (``without``: tensors left out)."""
    rng = np.random.default_rng(seed)

    def add(writer: gguf.GGUFWriter, name: str, shape: tuple[int, ...], layer: int, n_layer: int) -> None:
        if name not in without:
            weight = np.ones(shape, np.float32) if len(shape) == 1 else rng.normal(0, 0.2, shape).astype(np.float32)
            writer.add_tensor(name, weight)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_model(path, TINY_TEXT, "F32", f"other-{seed}", add)
    return path


def projector_header(path: Path, width: int, layers: int, out_dims: int) -> Path:
    """An mmproj that says it holds a CLIP ``width`` wide with ``layers`` stored layers, with
    only the projector's tensors (what the pair check reads)."""
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.block_count", layers)
    writer.add_tensor("mm.0.weight", np.zeros((out_dims, width), np.float32))
    writer.add_tensor("mm.2.weight", np.zeros((out_dims, out_dims), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def frames_captioned(out: Path) -> int:
    return int(last_run(out)["frames"])


# -- what goes into config_id -----------------------------------------------------------------


def test_every_setting_is_decided_in_or_out_of_config_id() -> None:
    for node, schema in (("model", ModelConfig), ("generation", GenerationConfig), ("engine", EngineConfig)):
        keys = {f.name for f in fields(schema)}
        inside, outside = set(ANSWER_SETTINGS.get(node, ())), set(OTHER_SETTINGS.get(node, {}))
        assert not inside & outside, node
        assert inside | outside == keys, f"{node}: {sorted(keys ^ (inside | outside))} not decided"


def test_settings_that_cannot_change_an_answer_do_not_redo_a_night(cli_base: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = [f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2"]
    first = run_cli(*run)
    assert first.returncode == 0, first.stderr
    # The advice of "frame needs N KV cells", batch sizes, frames in flight, threads, lanes;
    # with greedy decoding (temperature 0) the sampling settings it never reads.
    same = ["model.n_ctx=2048", "engine.n_batch=512", "engine.n_ubatch=256", "engine.parallel=2",
            "engine.n_threads=1", "engine.lanes=2", "engine.lanes_gpu=3", "engine.clip_threads=2",
            "generation.top_k=5", "generation.seed=7",
            "generation.temperature=-0.0", "start_s=-0.0"]  # a zero with a sign is zero
    again = run_cli(*run, *same)
    assert again.returncode == 0, again.stderr
    assert frames_captioned(out) == 0 and last_run(out)["videos_skipped"] == 1
    # Settings that change answers: another config, captioned again.
    longer = run_cli(*run, "generation.max_tokens=6")
    assert longer.returncode == 0, longer.stderr
    assert frames_captioned(out) == 2
    sampled = run_cli(*run, "generation.temperature=0.7", "generation.seed=7")
    assert sampled.returncode == 0, sampled.stderr
    assert frames_captioned(out) == 2
    assert pd.read_parquet(out).config_id.nunique() == 3


def test_two_models_of_one_file_name_are_two_models(
    tiny_model_dir: Path, cli_base: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    tiny_text, _ = ensure_tiny_model(tiny_model_dir)
    first = tmp_path / "a" / "model.gguf"
    first.parent.mkdir()
    shutil.copyfile(tiny_text, first)
    second = other_text_model(tmp_path / "b" / "model.gguf", seed=5)
    run = [f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=2"]
    assert run_cli(*run, f"model.text={first}").returncode == 0
    other = run_cli(*run, f"model.text={second}")
    assert other.returncode == 0, other.stderr
    assert frames_captioned(out) == 2  # not "done" by the first model
    assert pd.read_parquet(out).config_id.nunique() == 2
    # The first model's bytes under another folder, copied later (a new mtime): the same model.
    copied = tmp_path / "c" / "model.gguf"
    copied.parent.mkdir()
    shutil.copyfile(first, copied)
    same = run_cli(*run, f"model.text={copied}")
    assert same.returncode == 0, same.stderr
    assert frames_captioned(out) == 0 and "nothing to do" in same.stderr


def quantized(folder: Path, seed: int) -> Path:
    """A Q8_0 text model named ``model.Q8_0.gguf`` in ``folder``, of weights drawn with ``seed``."""
    source = other_text_model(folder / "model.gguf", seed)
    target = folder / "model.Q8_0.gguf"
    llama_quantize(source, target, FILE_TYPES["Q8_0"])
    return target


def test_same_named_models_get_an_f16_copy_each(tiny_model_dir: Path, tmp_path: Path) -> None:
    _, mmproj = ensure_tiny_model(tiny_model_dir)

    def loaded(text: Path) -> Path:
        cfg = compose_config([
            "model=tiny", f"model.text={text}", f"model.mmproj={mmproj}", "model.text_type=f16", "video=x",
        ])
        files = captioner_from_config(cfg).files
        assert files.text_model == text and files.f16_copy is not None
        return files.f16_copy

    first, second = quantized(tmp_path / "a", seed=1), quantized(tmp_path / "b", seed=2)
    copy_a, copy_b = loaded(first), loaded(second)  # both kept in the user cache's f16/ folder
    assert copy_a != copy_b and copy_a.parent == copy_b.parent
    assert loaded(first) == copy_a and copy_a.is_file()  # the first model loads its own copy again


def test_the_recorded_hash_is_of_the_users_file(
    tiny_model_dir: Path, cli_base: list[str], tmp_path: Path
) -> None:
    done = run_cli(
        f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=1", "model.quantized=true", "model.text_type=f16"
    )
    assert done.returncode == 0, done.stderr
    user_file = tiny_model_dir / "tiny-llava-text-v2.Q8_0.gguf"
    (part,) = (tmp_path / "out").glob("*/part-*.parquet")
    metadata = read_metadata(part)
    assert metadata["model_files"]["text_model"] == str(user_file)
    assert metadata["model_sha256"]["text_model"] == hashlib.sha256(user_file.read_bytes()).hexdigest()
    (engine,) = last_run(tmp_path / "out")["engines"]
    assert engine["text_weights"] == "f16" and engine["text_loaded"].endswith(".F16.gguf")
    assert engine["frames_in_flight"] == 4 and engine["worker"] == "local"  # engine.parallel_cpu
    assert engine["lanes"] == 1  # on a CPU


def test_frames_in_flight_default_comes_from_the_config(cli_base: list[str], tmp_path: Path) -> None:
    done = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, "max_frames=1", "engine.parallel_cpu=3")
    assert done.returncode == 0, done.stderr
    assert last_run(tmp_path / "out")["engines"][0]["frames_in_flight"] == 3
    assert "3 frames in flight" in done.stderr


# -- the cache ----------------------------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder that can be filled, then made read-only (``remount``)."""
    folder = tmp_path / "ro"
    assert mount_tmpfs(folder, "64m"), "mounting a tmpfs needs root"
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def test_a_read_only_cache_is_one_line(
    cli_base: list[str], read_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remount_read_only(read_only)
    monkeypatch.setenv("VIDEO_CAPTION_CACHE", str(read_only))
    args = [a for a in cli_base if not a.startswith("model.dir=")]  # the tiny model in the cache
    result = run_cli(f"video={SAMPLE_VIDEO}", *args, "max_frames=1")
    assert_one_line_error(
        result, 1, f"into {read_only / 'tiny'}", "must be writable", "set VIDEO_CAPTION_CACHE to a writable folder"
    )


def test_a_moved_cache_with_every_file_is_used_as_it_is(
    cli_base: list[str], tmp_path: Path, read_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [f"video={SAMPLE_VIDEO}", *[a for a in cli_base if not a.startswith("model.dir=")], "max_frames=1"]
    first_cache = tmp_path / "cache"
    monkeypatch.setenv("VIDEO_CAPTION_CACHE", str(first_cache))
    assert run_cli(*args).returncode == 0  # the tiny model and the projector's copies, written
    moved = read_only / "cache"
    shutil.copytree(first_cache, moved, copy_function=shutil.copy)  # new paths, new mtimes
    remount_read_only(read_only)
    monkeypatch.setenv("VIDEO_CAPTION_CACHE", str(moved))
    again = run_cli(*args, f"output_dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr
    assert frames_captioned(tmp_path / "again") == 1


# -- files that load but are wrong ----------------------------------------------------------


def test_a_text_model_without_its_output_layer_is_refused(
    tiny_model_dir: Path, cli_base: list[str], tmp_path: Path
) -> None:
    text = other_text_model(tmp_path / "untied.gguf", seed=3, without=("output.weight",))
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"model.text={text}")
    assert_one_line_error(result, 1, f"text model {text} has no output.weight", "convert the model again")
    assert not list((tmp_path / "out").rglob("*.parquet"))


def test_a_vit_l_projector_with_another_layer_count_is_refused(cli_base: list[str], tmp_path: Path) -> None:
    all_layers = projector_header(tmp_path / "all-layers.gguf", width=1024, layers=24, out_dims=TINY_TEXT.n_embd)
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"model.mmproj={all_layers}")
    assert_one_line_error(
        result, 1, f"mmproj {all_layers} stores 24 CLIP layers", "stores 23", "model.image_layout=llamacpp"
    )
    fewer = projector_header(tmp_path / "fewer.gguf", width=1024, layers=22, out_dims=TINY_TEXT.n_embd)
    assert_one_line_error(
        run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"model.mmproj={fewer}"), 1, "stores 22 CLIP layers"
    )


def test_a_worker_whose_files_differ_from_the_plan_refuses_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The run plans with the files' content; a worker (a Ray actor on another machine) that
    finds other bytes under the same names does not answer under that plan's config_id."""
    cfg = compose_config(["model=tiny", f"model.dir={tiny_model_dir}", "video=x"])
    spec = caption_spec(cfg)
    planned = spec.source.resolve().fingerprints()
    assert Captioner.from_spec(replace(spec, identity=planned)).files.text_model.parent == tiny_model_dir
    elsewhere = {**planned, "text_model": model_fingerprint(other_text_model(tmp_path / "other.gguf", seed=9))}
    with pytest.raises(WeightsError, match="are not those the run planned with"):
        Captioner.from_spec(replace(spec, identity=elsewhere))
