"""Frames/s of executor=ray with 1 and 2 captioner actors over the same videos (tiny model, CPU).

Each run starts its own local Ray cluster (``executor.address=local``, on loopback) and
captions the same generated videos into a fresh output folder; the figures come from the run
summary, whose wall time starts after the actors have loaded the model. A local run
(``executor=local``, one engine thread) is printed for reference.

    python benchmarks/ray_scaling.py [--videos 8] [--frames 24] [--max-tokens 16] [--repeats 3]

On a 2-core machine the actors share two cores with the decode tasks, Ray's own processes and
the driver, so expect little scaling; the point is that the path works and is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.caption.tiny import ensure_tiny_model  # noqa: E402
from tests.conftest import tinted, write_video  # noqa: E402

# Loopback only (Ray otherwise binds the machine's outward address), no usage reports, and no
# token authentication (a new local cluster would write ~/.ray/auth_token, which later
# `ray start` commands pick up).
ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
}


def run(label: str, work: Path, common: list[str], extra: list[str], index: int) -> dict:
    """One pipeline run into a fresh folder; its run summary."""
    out = work / f"out-{label}-{index}"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *common, f"output_dir={out}", f"hydra.run.dir={work / 'hydra'}", *extra],
        cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((out / "_last_run.json").read_text())


def main() -> None:
    """Time the local and the Ray executor on the same videos and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=24, help="frames per video (all are captioned)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ray-scaling-") as tmp:
        work = Path(tmp)
        videos = work / "videos"
        videos.mkdir()
        for v in range(args.videos):
            write_video(videos / f"v{v}.mp4", n_frames=args.frames, size=(320, 180),
                        colour_of=tinted(25 * v % 255))
        ensure_tiny_model(work / "tiny")
        common = [
            f"video={videos}", "model=tiny", f"model.dir={work / 'tiny'}", "sampler=all",
            f"generation.max_tokens={args.max_tokens}", "engine.parallel=4", "report=false",
            "thumbnails.enabled=true",
            "min_age_s=0",  # the clips were just written: not files still being copied in
        ]
        # Half a logical CPU per actor and decode task, so two actors and a decoder fit in a
        # 2-CPU local cluster; each actor's engine then runs one thread.
        ray = ["executor=ray", "executor.address=local", "executor.cpus_per_actor=0.5", "executor.cpus_per_decode=0.5"]
        configs = [
            ("local, 1 thread", ["engine.n_threads=1"]),
            ("ray, 1 actor", [*ray, "executor.num_actors=1"]),
            ("ray, 2 actors", [*ray, "executor.num_actors=2"]),
        ]
        print(f"{args.videos} videos x {args.frames} frames, max_tokens={args.max_tokens}, "
              f"{os.cpu_count()} CPUs, {args.repeats} runs each")
        print(f"{'executor':<16} {'frames':>6} {'frames/s median':>15}  {'runs':<20} per worker frames/s (median run)")
        for label, extra in configs:
            name = label.replace(", ", "-").replace(" ", "")
            summaries = sorted((run(name, work, common, extra, i) for i in range(args.repeats)),
                               key=lambda s: s["frames_per_s"])
            median = summaries[len(summaries) // 2]
            runs = ", ".join(f"{s['frames_per_s']:.1f}" for s in summaries)
            workers = ", ".join(f"{w['worker']} {w['frames_per_s']:.1f} ({w['frames']} fr)" for w in median["workers"])
            print(f"{label:<16} {median['frames']:>6} {median['frames_per_s']:>15.2f}  {runs:<20} {workers}")

if __name__ == "__main__":
    main()
