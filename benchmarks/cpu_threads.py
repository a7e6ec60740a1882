"""Run time of the sample clip's 6 tiny-model frames against ``engine.n_threads``, on an idle
machine and while other jobs keep cores busy (the README's "CPU threads" figures).

    python benchmarks/cpu_threads.py --threads 1 2 --burners 0 1 --repeats 3

Each run is ``python -m pipeline video=data/sample.mp4 model=tiny`` into a fresh folder; the
figure is the run's own ``wall_s`` from ``_last_run.json`` (model load excluded). A burner is a
process spinning on one core, standing in for another job on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_wall_s(n_threads: int | None, workdir: Path) -> float:
    """One run's ``wall_s``; ``n_threads`` None: the default."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    threads = [] if n_threads is None else [f"engine.n_threads={n_threads}"]
    subprocess.run(
        [sys.executable, "-m", "pipeline", f"video={ROOT / 'data' / 'sample.mp4'}", "model=tiny",
         f"output_dir={out}", "report=false", "thumbnails.enabled=false", *threads],
        cwd=ROOT, check=True, capture_output=True,
    )
    return float(json.loads((out / "_last_run.json").read_text())["wall_s"])


def main() -> None:
    """Print one line per (burners, threads) with the wall times of its repeats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", nargs="+", default=["1", "2"], help="n_threads values; 'default' for null")
    parser.add_argument("--burners", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        for burners in args.burners:
            spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
            try:
                for threads in args.threads:
                    n_threads = None if threads == "default" else int(threads)
                    times = [run_wall_s(n_threads, Path(workdir)) for _ in range(args.repeats)]
                    print(f"burners={burners} n_threads={threads}: " + " ".join(f"{t:.1f}" for t in times), flush=True)
            finally:
                for process in spinning:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    main()
