"""Sampling stage: interval and all samplers, shot detection, picks, fallback, dedup, config."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate

from pipeline.config import compose_config
from pipeline.decode import VideoReader
from pipeline.errors import ConfigError
from pipeline.sampling import AllSampler, Dedup, IntervalSampler, Sample, Sampler, SceneSampler, expected_samples
from tests.conftest import ROOT, RUN_TIMEOUT_S, run_cli, write_video

SIZE = (160, 90)
FPS = 25.0


def picture(seed: int, index: int) -> np.ndarray:
    """Frame ``index`` of scene ``seed``: a smooth random texture with a small drifting disc."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), SIZE, interpolation=cv2.INTER_CUBIC)
    cv2.circle(texture, (20 + index % 120, 45), 5, (255, 255, 255), -1)
    return texture


def shot(seed: int, count: int) -> list[np.ndarray]:
    return [picture(seed, i) for i in range(count)]


def mix(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    return cv2.addWeighted(a, 1 - alpha, b, alpha, 0)


def dissolve(a: list[np.ndarray], b: list[np.ndarray], length: int) -> list[np.ndarray]:
    """``a`` then ``b``, their last and first ``length`` frames cross-faded."""
    middle = [mix(x, y, (k + 1) / (length + 1)) for k, (x, y) in enumerate(zip(a[-length:], b[:length]))]
    return a[:-length] + middle + b[length:]


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, SIZE)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def run(sampler: Sampler, path: Path) -> list[Sample]:
    with VideoReader(path) as reader:
        return list(sampler.sample(reader))


def start_frames(samples: list[Sample], fps: float = FPS) -> list[int]:
    """Frame index of each shot's start, one per shot."""
    return sorted({round(s.shot_start_s * fps) for s in samples if s.shot_start_s is not None})


def from_yaml(name: str) -> Any:
    """The sampler exactly as ``sampler=<name>`` configures it (``conf/sampler/<name>.yaml``)."""
    return instantiate(compose_config(["video=x.mp4", f"sampler={name}"]).sampler)


SCENE: SceneSampler = from_yaml("scene")
INTERVAL: IntervalSampler = from_yaml("interval")


def scene(**options: Any) -> SceneSampler:
    """The configured scene sampler with dedup and fallback off unless asked for."""
    return replace(SCENE, **{"dedup": None, "fallback_interval_s": None, **options})


def interval(**options: Any) -> IntervalSampler:
    """The configured interval sampler (dedup off), with ``options``."""
    return replace(INTERVAL, **options)


def dedup(**options: Any) -> Dedup:
    """The scene sampler's configured dedup (on), with ``options``."""
    assert SCENE.dedup is not None
    return replace(SCENE.dedup, **options)


# --- interval and all ------------------------------------------------------------------------


def test_interval_first_frame_and_exact_grid(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n_frames=30, fps=10.0)
    samples = run(interval(interval_s=1.0), path)
    assert [s.frame.index for s in samples] == [0, 10, 20]
    assert [s.frame.timestamp_s for s in samples] == pytest.approx([0.0, 1.0, 2.0], abs=1e-3)
    assert {s.reason for s in samples} == {"interval"}
    assert run(interval(interval_s=60.0), path)[0].frame.index == 0


@pytest.mark.parametrize("interval_s", [0.001, 0.05, 0.1, 0.3, 0.7, 1.0, 2.05, 7.0, 1e308])
@pytest.mark.parametrize(("start_s", "end_s"), [(0.0, None), (0.45, 1.6), (1.0, 2.0)])
def test_the_frames_counted_ahead_are_the_frames_taken(
    tmp_path: Path, interval_s: float, start_s: float, end_s: float | None
) -> None:
    path = write_video(tmp_path / "clip.mp4", n_frames=21, fps=10.0)  # 2.1 s: an interval shorter than a frame too
    sampler = interval(interval_s=interval_s)
    with VideoReader(path) as reader:
        counted = expected_samples(sampler, reader.info, start_s, end_s)
        taken = [s for s in sampler.sample(reader) if start_s <= s.frame.timestamp_s < (end_s or 1e9)]
    assert counted == len(taken)
    assert len({s.frame.index for s in taken}) == len(taken)


def test_all_sampler_takes_every_frame(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", n_frames=7)
    samples = run(AllSampler(), path)
    assert [s.frame.index for s in samples] == list(range(7))
    assert {s.reason for s in samples} == {"all"}


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: interval(interval_s=0), "sampler.interval_s"),
        (lambda: interval(interval_s=-1), "sampler.interval_s"),
        (lambda: interval(interval_s=1e-300), "sampler.interval_s"),  # stepping its grid never ended
        (lambda: interval(interval_s=float("inf")), "sampler.interval_s"),
        (lambda: replace(SCENE, threshold=-1), "sampler.threshold"),
        (lambda: replace(SCENE, threshold=300), "sampler.threshold"),
        (lambda: replace(SCENE, pick="last"), "sampler.pick"),
        (lambda: replace(SCENE, min_shot_s=-0.5), "sampler.min_shot_s"),
        (lambda: replace(SCENE, fallback_interval_s=0), "sampler.fallback_interval_s"),
        (lambda: replace(SCENE, analysis_width=8), "sampler.analysis_width"),
        (lambda: replace(SCENE, analysis_stride=0), "sampler.analysis_stride"),
        (lambda: dedup(threshold=65), "sampler.dedup.threshold"),
        (lambda: dedup(threshold=-1), "sampler.dedup.threshold"),
    ],
)
def test_bad_values_name_the_key_and_range(build: Callable[[], object], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + " must be"):
        build()


# --- shot detection --------------------------------------------------------------------------


def test_hard_cuts_one_sample_per_shot(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "cuts.mp4", shot(1, 40) + shot(2, 40) + shot(3, 40))
    samples = run(scene(), path)
    assert [s.shot_index for s in samples] == [0, 1, 2]
    assert {s.reason for s in samples} == {"scene_cut"}
    assert samples[0].frame.index == 0 and samples[0].shot_start_s == 0.0
    for found, cut in zip(start_frames(samples)[1:], [40, 80]):
        assert abs(found - cut) <= 2
    exact = run(scene(analysis_stride=1, pick="first"), path)
    assert [s.frame.index for s in exact] == [0, 40, 80]


def test_dissolve_is_one_boundary_inside_it(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "dissolve.mp4", dissolve(shot(1, 50), shot(2, 50), 12))
    samples = run(scene(), path)
    assert len(samples) == 2
    assert 38 - 2 <= start_frames(samples)[1] <= 49 + 2  # the mixed frames are 38..49
    assert samples[1].frame.index > 49  # the new shot's frame is past the mix


def test_fade_through_black_is_one_boundary(tmp_path: Path) -> None:
    a, b = shot(1, 48), shot(2, 48)
    black = np.zeros_like(a[0])
    fade = [mix(x, black, (k + 1) / 9) for k, x in enumerate(a[-8:])] + [black] * 6
    fade += [mix(black, y, (k + 1) / 9) for k, y in enumerate(b[:8])]
    path = write_clip(tmp_path / "fade.mp4", a[:-8] + fade + b[8:])  # fade frames 40..61
    samples = run(scene(), path)
    assert len(samples) == 2
    assert 38 <= start_frames(samples)[1] <= 63
    assert samples[1].frame.index > 61  # the picture is back, not black or dim


def test_a_flash_is_not_a_cut(tmp_path: Path) -> None:
    frames = shot(1, 60)
    frames[32] = mix(frames[32], np.full_like(frames[32], 255), 0.7)
    path = write_clip(tmp_path / "flash.mp4", frames)
    assert len(run(scene(), path)) == 1


def test_a_pan_is_not_a_cut(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    canvas = cv2.resize(rng.integers(0, 256, (4, 16, 3), dtype=np.uint8), (SIZE[0] * 3, SIZE[1]))
    frames = [np.ascontiguousarray(canvas[:, 2 * i : 2 * i + SIZE[0]]) for i in range(150)]
    path = write_clip(tmp_path / "pan.mp4", frames)  # the view slides 300 px, 2 px a frame
    assert len(run(scene(), path)) == 1


def test_picks(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "two.mp4", shot(1, 60) + shot(2, 60))
    first = [s.frame.index for s in run(scene(pick="first"), path)]
    settled = [s.frame.index for s in run(scene(pick="first_settled"), path)]
    middle = [s.frame.index for s in run(scene(pick="middle"), path)]
    assert first[0] == 0 and 60 <= first[1] <= 62
    assert settled[0] == 0 and first[1] < settled[1] <= first[1] + 6
    assert abs(middle[0] - 30) <= 0.15 * 60 and abs(middle[1] - 90) <= 0.15 * 60


def test_every_shot_of_a_repeating_video_once_with_dedup(tmp_path: Path) -> None:
    # Shots A B A C A, 30 frames each: three distinct pictures.
    path = write_clip(tmp_path / "repeats.mp4", [f for seed in (1, 2, 1, 3, 1) for f in shot(seed, 30)])
    every = run(scene(), path)
    assert [s.shot_index for s in every] == [0, 1, 2, 3, 4]
    once = run(scene(dedup=dedup()), path)
    assert [s.shot_index for s in once] == [0, 1, 3]
    marked = run(scene(dedup=dedup(keep_duplicates=True)), path)
    assert [s.frame.index for s in marked] == [s.frame.index for s in every]
    first_a = every[0].frame.index
    assert [s.duplicate_of for s in marked] == [None, None, first_a, None, first_a]
    assert [s.shot_index for s in run(scene(dedup=dedup(enabled=False)), path)] == [0, 1, 2, 3, 4]


def test_interval_sampler_takes_dedup(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "still.mp4", [picture(1, 0)] * 50, fps=10.0)
    assert len(run(interval(interval_s=1.0), path)) == 5
    assert [s.frame.index for s in run(interval(interval_s=1.0, dedup=dedup()), path)] == [0]


def test_static_shot_yields_frames_at_the_fallback_interval(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "static.mp4", shot(1, 168), fps=24.0)  # 7 s, one shot
    samples = run(scene(fallback_interval_s=2.0), path)
    assert [s.frame.timestamp_s for s in samples] == pytest.approx([0.0, 2.0, 4.0, 6.0], abs=1e-3)
    assert [s.reason for s in samples] == ["scene_cut", "fallback", "fallback", "fallback"]
    assert {s.shot_index for s in samples} == {0} and {s.shot_start_s for s in samples} == {0.0}
    assert len(run(SCENE, path)) == 1  # defaults: the repeats are near-duplicates


def test_blank_video_still_yields_its_first_frame(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "black.mp4", [np.zeros((SIZE[1], SIZE[0], 3), np.uint8)] * 40)
    samples = run(SCENE, path)
    assert [(s.frame.index, s.reason, s.shot_index) for s in samples] == [(0, "scene_cut", 0)]


def test_memory_stays_flat_over_a_long_video(tmp_path: Path) -> None:
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    path = write_clip(tmp_path / "long.mp4", shot(1, 300) + [black] * 600 + shot(2, 300))
    for pick in ("first_settled", "middle"):
        tracemalloc.start()
        samples = run(replace(SCENE, pick=pick, dedup=None), path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert {s.shot_index for s in samples} == {0, 1}
        assert peak < 30 * black.nbytes  # a few frames held, not a shot's worth


# Samples a video with a pickled sampler; prints how many samples and a digest of them.
SAMPLE_DIGEST = """
import hashlib, pickle, sys
from pipeline.decode import VideoReader
with open(sys.argv[1], "rb") as file:
    sampler = pickle.load(file)
digest, count = hashlib.sha256(), 0
with VideoReader(sys.argv[2]) as reader:
    for s in sampler.sample(reader):
        count += 1
        digest.update(repr((s.frame.index, s.reason, s.shot_index, s.shot_start_s, s.duplicate_of)).encode())
        digest.update(s.frame.rgb.tobytes())
print(count, digest.hexdigest())
"""


def test_another_process_takes_the_same_samples(tmp_path: Path) -> None:
    # Separate interpreters with different hash seeds: nothing carried over within a process,
    # no set or dict order that depends on string hashing, changes what is sampled.
    frames = dissolve(shot(1, 50), shot(2, 50), 10) + shot(3, 40) + shot(1, 40)
    path = write_clip(tmp_path / "mixed.mp4", frames)
    sampler = tmp_path / "sampler.pickle"
    sampler.write_bytes(pickle.dumps(replace(SCENE, dedup=dedup(keep_duplicates=True), pick="middle")))
    outputs = []
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", SAMPLE_DIGEST, str(sampler), str(path)], cwd=ROOT, capture_output=True,
            text=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=RUN_TIMEOUT_S,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split())
    assert outputs[0] == outputs[1]
    assert int(outputs[0][0]) >= 4  # shots and their repeat: something to compare


# --- config and end to end -------------------------------------------------------------------


def test_yaml_builds_the_samplers_the_readme_documents() -> None:
    assert SCENE == SceneSampler(
        pick="first_settled", threshold=8.0, min_shot_s=0.5, fallback_interval_s=10.0,
        analysis_width=64, analysis_stride=4,
        dedup=Dedup(enabled=True, threshold=10, keep_duplicates=False),
    )
    assert INTERVAL == IntervalSampler(
        interval_s=1.0, dedup=Dedup(enabled=False, threshold=10, keep_duplicates=False)
    )


def test_cli_scene_sampler_end_to_end(cli_base: list[str], tmp_path: Path) -> None:
    # Shots A B A, 10 frames each at 10 fps: the third repeats the first.
    clip = write_clip(tmp_path / "three.mp4", [*shot(1, 10), *shot(2, 10), *shot(1, 10)], fps=10.0)
    result = run_cli(f"video={clip}", *cli_base, "sampler=scene", "sampler.dedup.keep_duplicates=true")
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert set(df.sample_reason) == {"scene_cut"}
    assert sorted(df.shot_index.unique()) == [0, 1, 2]
    shots = df.groupby("shot_index").agg(
        frame_index=("frame_index", "min"), shot_start_s=("shot_start_s", "min"),
        duplicate_of=("duplicate_of", "min"),
    )
    for shot_index, row in shots.iterrows():
        assert 10 * shot_index <= row.frame_index < 10 * shot_index + 10
        assert abs(row.shot_start_s - shot_index) <= 0.15  # 10 frames a shot at 10 fps
    assert shots.duplicate_of.isna().tolist() == [True, True, False]
    assert shots.duplicate_of[2] == shots.frame_index[0]


@pytest.mark.parametrize(
    ("fps", "lengths"), [(1.0, [3, 4, 3, 5, 3]), (4.0, [6, 3, 8, 4, 5]), (12.0, [9, 6, 12, 7, 8])]
)
def test_low_frame_rates_lose_no_shot_to_the_stride(tmp_path: Path, fps: float, lengths: list[int]) -> None:
    """Shots of 0.5-5 s in a 1 fps time-lapse, a 4 fps and a 12 fps camera are each found, with
    a frame of their own: the stride of 4 frames would skip 4 s at 1 fps (one shot in five found)."""
    frames = [picture(seed, i) for seed, count in enumerate(lengths, start=1) for i in range(count)]
    path = write_clip(tmp_path / "slow.mp4", frames, fps=fps)
    starts = [sum(lengths[:k]) for k in range(len(lengths))]
    samples = run(scene(pick="first"), path)
    assert len(samples) == len(lengths)
    placed = SCENE.stride(fps) // 2  # a cut is placed midway between analysed frames
    for found, start in zip(start_frames(samples, fps), starts, strict=True):
        assert abs(found - start) <= placed
    for sample, start, length in zip(samples, starts, lengths, strict=True):
        assert start <= sample.frame.index < start + length  # a frame of its shot
    rates = (1.0, 8.9, 9.0, 14.9, 15.0, 20.9, 21.0, 23.976, 60.0, 0.0)  # 0: the container tells none
    assert [SCENE.stride(rate) for rate in rates] == [1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
