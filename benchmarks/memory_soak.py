"""Memory soak: host RSS over thousands of frames through the real pipeline (CPU, tiny model).

Runs :class:`pipeline.run.Pipeline` (decode thread, prefetch queue, batched engine, writer
thread, thumbnails) over a generated 640x360 video with ``sampler=all`` and prints the
process's resident set size every ``--every`` frames, then the growth after warm-up and the
slope of a least-squares line through the samples, in MB per 1000 frames. The exit status is
1 when the growth reaches ``--limit-mb``.

    python benchmarks/memory_soak.py                   # 2000 frames, limit 50 MB
    python benchmarks/memory_soak.py --frames 300 --every 50
    python benchmarks/memory_soak.py --engine-only     # Engine.run without the pipeline
"""

from __future__ import annotations

# llama_cpp before numpy/cv2: see BENCHMARKS.md (## GPU throughput, import order).
import llama_cpp  # noqa: F401

# isort: split
import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_throughput import make_video, rss_mb  # noqa: E402
from pipeline.caption import make_questions  # noqa: E402
from pipeline.caption.tiny import ensure_tiny_model  # noqa: E402
from pipeline.config import compose_config  # noqa: E402
from pipeline.presets import captioner_from_config  # noqa: E402

PROMPTS = ["Describe this frame in one sentence.", "What objects are visible?"]
T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    """Caption frames, print host memory as it goes; fails past the limit. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100, help="print RSS every N frames")
    parser.add_argument("--warmup", type=int, default=100, help="frames before the baseline")
    parser.add_argument("--limit-mb", type=float, default=50.0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="engine.n_threads (None: all cores)")
    parser.add_argument("--engine-only", action="store_true", help="Engine.run, no pipeline")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_tiny_model(workdir / "model")
    video = make_video(workdir / f"soak-{args.frames}.mp4", args.frames)
    threads = [] if args.threads is None else [f"engine.n_threads={args.threads}"]
    cfg = compose_config([
        "model=tiny", f"model.dir={workdir / 'model'}", "video=unused", f"engine.parallel={args.parallel}",
        f"generation.max_tokens={args.max_tokens}", *threads,
    ])
    captioner = captioner_from_config(cfg, max_questions=len(PROMPTS))
    captioner.setup()
    samples: list[tuple[int, float]] = []
    started = time.perf_counter()

    def watch(results: Iterable[T]) -> Iterator[T]:
        for n, item in enumerate(results, 1):
            yield item
            if n % args.every == 0 or n == args.warmup:
                gc.collect()
                samples.append((n, rss_mb()))
                print(
                    f"{n:6d} frames  RSS {samples[-1][1]:8.1f} MB  "
                    f"{n / (time.perf_counter() - started):6.2f} frames/s",
                    flush=True,
                )

    samples.append((0, rss_mb()))
    print(f"     0 frames  RSS {samples[0][1]:8.1f} MB (model loaded)", flush=True)
    try:
        if args.engine_only:
            from pipeline.decode import VideoReader

            def jobs() -> Iterator[tuple[int, np.ndarray]]:
                with VideoReader(video) as reader:
                    for frame in reader.frames():
                        yield frame.index, frame.rgb

            for _ in watch(captioner.caption(jobs(), make_questions(PROMPTS))):
                pass
        else:
            from pipeline.executors.local import LocalExecutor
            from pipeline.run import Pipeline
            from pipeline.sampling import AllSampler
            from pipeline.thumbnails import thumbnailer

            original = captioner.caption
            captioner.caption = lambda jobs, questions: watch(original(jobs, questions))  # type: ignore[method-assign]
            pipe = Pipeline(
                AllSampler(), PROMPTS, workdir / "out", config_id="soak",
                prefetch_frames=2 * args.parallel, checkpoint_frames=cfg.checkpoint_frames,
                thumbnail=thumbnailer(**cfg.thumbnails),
            )
            pipe.run(pipe.plan([video]), LocalExecutor(captioner))
    finally:
        captioner.close()

    frames = np.array([n for n, _ in samples if n >= args.warmup], dtype=np.float64)
    rss = np.array([r for n, r in samples if n >= args.warmup])
    growth = float(rss[-1] - rss[0]) if len(rss) else float("nan")
    slope = float(np.polyfit(frames, rss, 1)[0] * 1000) if len(rss) > 2 else float("nan")
    print(
        f"\nRSS {samples[0][1]:.1f} MB at start, {rss[0]:.1f} MB after {args.warmup} frames, "
        f"{rss[-1]:.1f} MB after {int(frames[-1])} frames: growth {growth:+.1f} MB after warm-up, "
        f"slope {slope:+.2f} MB/1000 frames ({time.perf_counter() - started:.0f} s)"
    )
    return 0 if growth < args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
