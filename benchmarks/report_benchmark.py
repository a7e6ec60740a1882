"""Report at scale: size of the HTML report of a large run, and how long headless Chromium takes
to open its pages.

Makes (or reuses) a real run through ``python -m pipeline`` with the tiny model on CPU:
``--videos`` generated 320x180 clips of ``--frames-per-video`` frames, ``sampler=all``, two
prompts, ``generation.max_tokens=4``. Then it writes the report (timed), measures the main page,
the largest video page and the thumbnails, and opens each page in headless Chromium
``--repeat`` times. Each open is a fresh browser; a probe script copied beside the page records,
at the ``load`` event, ``performance.now()`` (navigation start to load) and the navigation
entry's ``domContentLoadedEventEnd``; the browser's own wall time (start to exit, including its
start-up) is measured too, and an empty page's wall time is the baseline. ``--eager`` also
times the pages with every thumbnail loaded before ``load`` (the report's thumbnails are lazy).
``--inline`` also measures the same run as one self-contained page (the report before paging).
``--synthetic`` writes the rows with the store instead of running the model (for sizes a CPU
run would take hours to make): a 256x144 thumbnail per frame (a smooth random colour field with
a little grain, 3-6 KB as JPEG, like real ones), answers of 25 words.
``--screenshot PATH`` saves a PNG of the main page's top.

    python benchmarks/report_benchmark.py --workdir /tmp/report-bench          # 4 x 500 frames
    python benchmarks/report_benchmark.py --output-dir DIR --repeat 5          # an existing run
    python benchmarks/report_benchmark.py --synthetic --videos 2 --frames-per-video 5000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.report import write_report  # noqa: E402
from pipeline.results import counts, load_results  # noqa: E402

PROMPTS = "prompts=[Describe this frame in one sentence.,What colours dominate?]"

PROBE = """<script>
%s
window.addEventListener("load", () => {
  const navigation = performance.getEntriesByType("navigation")[0];
  const paint = performance.getEntriesByType("paint").find((p) => p.name === "first-contentful-paint");
  const pre = document.createElement("pre");
  pre.id = "timing";
  pre.textContent = JSON.stringify({
    load_ms: performance.now(),
    dom_content_loaded_ms: navigation.domContentLoadedEventEnd,
    first_contentful_paint_ms: paint ? paint.startTime : null,
    cards: document.querySelectorAll(".frame").length,
    images: document.images.length,
    images_loaded: Array.from(document.images).filter((i) => i.complete && i.naturalWidth > 0).length,
  });
  document.body.append(pre);
});
</script>"""
EAGER = 'document.querySelectorAll("img").forEach((image) => { image.loading = "eager"; });'


def _camera_colour(camera: int, index: int) -> tuple[int, int, int]:
    """Frame ``index``'s colour in camera ``camera``'s clip: changes every 50 frames."""
    return ((60 * camera + index // 50 * 20) % 255, (9 * index) % 255, 90 + 30 * camera)


def make_run(workdir: Path, videos: int, frames: int, threads: int) -> Path:
    """Caption ``videos`` generated clips of ``frames`` frames each with the tiny model."""
    from tests.conftest import write_video

    folder = workdir / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        path = folder / f"cam{v}.mp4"
        if not path.exists():
            write_video(path, n_frames=frames, fps=25.0, size=(320, 180), colour_of=partial(_camera_colour, v))
    out = workdir / "out"
    command = [
        sys.executable, "-m", "pipeline", f"video={folder}", "model=tiny", f"model.dir={workdir / 'model'}",
        f"output_dir={out}", "sampler=all", "generation.max_tokens=4", PROMPTS, "report=false",
        f"engine.n_threads={threads}", f"hydra.run.dir={workdir / 'hydra'}",
        "min_age_s=0",  # the clips were just written: not files still being copied in
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, check=False)
    print(f"run: exit {done.returncode} in {time.perf_counter() - started:.1f} s", flush=True)
    if done.returncode != 0:
        raise SystemExit(done.returncode)
    return out


def make_synthetic(workdir: Path, videos: int, frames: int) -> Path:
    """Rows of ``videos`` x ``frames`` frames x two prompts, written as the pipeline writes them."""
    import cv2
    import numpy as np

    from pipeline.config import compose_config
    from pipeline.decode import format_timecode
    from pipeline.store import ResultRow, write_chunk
    from pipeline.thumbnails import thumbnailer

    make_thumbnail = thumbnailer(**compose_config(["video=unused"]).thumbnails)
    assert make_thumbnail is not None
    out = workdir / "synthetic"
    if out.exists():
        return out
    building = workdir / ".synthetic-partial"  # renamed when complete: a killed build is not reused
    shutil.rmtree(building, ignore_errors=True)
    rng = np.random.default_rng(0)
    words = "a person walks past the red car near the door while light falls on the street".split()
    for v in range(videos):
        video_id = f"{v:016x}"
        chunk: list[ResultRow] = []
        for i in range(frames):
            # A smooth colour field with a little grain: JPEGs of the size real thumbnails have.
            field = rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)
            image = cv2.resize(field, (256, 144), interpolation=cv2.INTER_CUBIC)
            image = np.minimum(image + rng.integers(0, 12, image.shape), 255).astype(np.uint8)
            thumbnail = make_thumbnail(image)
            for p, prompt in enumerate(("Describe this frame in one sentence.", "What colours dominate?")):
                answer = " ".join(rng.choice(words, 25))
                chunk.append(ResultRow(
                    video_path=f"/videos/cam{v}.mp4", video_id=video_id, frame_index=i, timestamp_s=i / 25,
                    timecode=format_timecode(i / 25), prompt_id=f"p{p}", prompt=prompt, answer=answer,
                    model="synthetic", status="ok", prompt_tokens=2900, completion_tokens=30,
                    latency_ms=float(rng.integers(50, 900)), sample_reason="all", config_id="synthetic",
                    thumbnail=thumbnail, finish_reason="stop",
                ))
            if len(chunk) >= 64 or i == frames - 1:
                write_chunk(building, video_id, "part", "synthetic", chunk, {})
                chunk = []
    building.rename(out)
    return out


def open_page(chromium: str, page: Path, eager: bool, profile: Path) -> dict[str, Any]:
    """Open ``page`` (through a probe copy beside it) in a fresh headless Chromium."""
    probe = page.with_name(f".timing-{page.name}")
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", PROBE % (EAGER if eager else "") + "</body>"),
        encoding="utf-8",
    )
    shutil.rmtree(profile, ignore_errors=True)
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--window-size=1280,900", "--dump-dom", probe.as_uri(),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    wall_ms = (time.perf_counter() - started) * 1000
    probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="timing">(.*?)</pre>', done.stdout, re.DOTALL)
    if not found:
        raise RuntimeError(f"no timing from {page}: {done.stderr[-500:]}")
    import html

    return {**json.loads(html.unescape(found.group(1))), "browser_wall_ms": wall_ms}


def measure(chromium: str, page: Path, repeat: int, eager: bool, profile: Path) -> dict[str, Any]:
    """Medians over ``repeat`` opens."""
    runs = [open_page(chromium, page, eager, profile) for _ in range(repeat)]
    keys = ("load_ms", "dom_content_loaded_ms", "first_contentful_paint_ms", "browser_wall_ms")
    result: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if r[key] is not None]
        result[key] = round(statistics.median(values), 1) if values else None
    result.update({k: runs[0][k] for k in ("cards", "images", "images_loaded")})
    result["size_bytes"] = page.stat().st_size
    return result


def folder_bytes(folder: Path) -> tuple[int, int]:
    """Files under ``folder`` and their bytes."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str] | None = None) -> int:
    """Time the report over a run's results; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, help="an existing run's output_dir (else one is made)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames-per-video", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="engine.n_threads of the run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="also time with every thumbnail loaded")
    parser.add_argument("--inline", action="store_true", help="also measure one self-contained page")
    parser.add_argument("--synthetic", action="store_true", help="write rows, do not run the model")
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="report-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.output_dir:
        out = args.output_dir
    elif args.synthetic:
        out = make_synthetic(workdir, args.videos, args.frames_per_video)
    else:
        out = make_run(workdir, args.videos, args.frames_per_video, args.threads)
    df = load_results(out)
    print(f"results: {json.dumps(counts(df))}")

    started = time.perf_counter()
    page = write_report(out)
    print(f"write_report: {time.perf_counter() - started:.2f} s")
    assets = page.with_name(f"{page.stem}_files")
    pages = sorted(assets.glob("*.html"), key=lambda p: p.stat().st_size)
    n_thumbs, thumb_bytes = folder_bytes(assets / "thumbs")
    n_all, all_bytes = folder_bytes(assets)
    print(f"main page {page.stat().st_size:,} bytes; {len(pages)} video pages, largest "
          f"{pages[-1].stat().st_size if pages else 0:,} bytes; {n_thumbs} thumbnails, {thumb_bytes:,} bytes; "
          f"report total {page.stat().st_size + all_bytes:,} bytes in {n_all + 1} files")
    profile = workdir / "chromium-profile"
    empty = workdir / "empty.html"
    empty.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    figures = {"empty page": measure(chromium, empty, args.repeat, False, profile),
               "main page": measure(chromium, page, args.repeat, False, profile)}
    if pages:
        figures["largest video page"] = measure(chromium, pages[-1], args.repeat, False, profile)
        if args.eager:
            figures["largest video page, all thumbnails"] = measure(chromium, pages[-1], args.repeat, True, profile)
    if args.inline:
        started = time.perf_counter()
        single = write_report(out, workdir / "inline.html", inline=True)
        print(f"write_report inline: {time.perf_counter() - started:.2f} s")
        figures["one inline page"] = measure(chromium, single, args.repeat, False, profile)
    for name, figure in figures.items():
        print(f"{name:38s} {json.dumps(figure)}")
    if args.screenshot:
        shutil.rmtree(profile, ignore_errors=True)
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
             f"--screenshot={args.screenshot.resolve()}", "--window-size=1280,1000", "--hide-scrollbars",
             page.as_uri()],
            capture_output=True, timeout=120, check=True,
        )
        print(f"screenshot: {args.screenshot} ({os.path.getsize(args.screenshot):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
