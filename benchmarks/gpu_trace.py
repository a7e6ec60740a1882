"""Where the GPU's time goes inside the engine: a CUDA kernel trace of one short run.

Runs the engine through the real pipeline (as ``gpu_throughput.py`` does) under PyTorch's
profiler (Kineto/CUPTI records every CUDA kernel of the process, llama.cpp's included), with
each ``llama_decode`` call marked, and prints:

* the GPU's busy share (union of kernel intervals) over the run, and the idle gaps by where the
  host was: inside a decode step, inside a prefill, or between ``llama_decode`` calls;
* per kind of ``llama_decode`` call (prefill of image embeddings, question tokens, decode steps
  of N sequences): calls, host ms per call, GPU kernel ms per call, kernels per call;
* the kernels that take the most time, and how many launches came from CUDA graphs.

Tracing slows the host a little, so its frames/s are not figures to report; use it to see
where idle time is. Needs ``torch`` (on the GPU image).

    python benchmarks/gpu_trace.py --shape mistral7b --model-dir /tmp/models --frames 24
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_throughput as bench  # noqa: E402


def _kind(batch: llama_cpp.llama_batch) -> str:
    n = int(batch.n_tokens)
    if batch.embd:
        return "prefill-embd"
    if n <= 64 and all(batch.logits[i] for i in range(n)):
        return f"step-{n}seq"
    return "tokens"


def traced_run(case: bench.EngineCase, args: argparse.Namespace, trace_path: Path) -> dict[str, Any]:
    """Run one case under torch's profiler, each ``llama_decode`` a named range; its record."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    original = llama_cpp.llama_decode

    def decode(ctx: Any, batch: Any) -> int:
        with record_function(f"llama_decode {_kind(batch)}"):
            return original(ctx, batch)

    text, mmproj = bench.make_model(args.shape, args.model_dir)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-trace-"))
    video = bench.make_video(workdir / "clip.mp4", case.frames + 64)
    holder: dict[str, Any] = {}

    def run_hook(pipe_run: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            llama_cpp.llama_decode = decode
            try:
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    result = pipe_run(*a, **k)
                    torch.cuda.synchronize()
            finally:
                llama_cpp.llama_decode = original
            holder["prof"] = prof
            return result

        return wrapped

    import pipeline.run as run_module

    original_run = run_module.Pipeline.run
    setattr(run_module.Pipeline, "run", lambda self, *a, **k: run_hook(original_run.__get__(self))(*a, **k))
    try:
        result = bench.run_engine(
            case, text, mmproj, video, args.max_tokens, bench.SHAPES[args.shape][4], workdir
        )
    finally:
        setattr(run_module.Pipeline, "run", original_run)
    holder["prof"].export_chrome_trace(str(trace_path))
    return result


def analyze(trace_path: Path, top: int = 12) -> dict[str, Any]:
    """GPU busy time, idle gaps and the ``top`` kernels of a profiler trace."""
    events = json.loads(trace_path.read_text())["traceEvents"]
    gpu = sorted(
        (e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in e),
        key=lambda e: e["ts"],
    )
    kernels = [e for e in gpu if e["cat"] == "kernel"]
    ranges = sorted(
        (e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("llama_decode")),
        key=lambda e: e["ts"],
    )
    launches = {
        e["args"]["correlation"]: e
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})
    }
    if not kernels or not ranges:
        return {"error": f"{len(kernels)} kernels, {len(ranges)} decode ranges in the trace"}

    t0 = ranges[0]["ts"]
    t1 = max(r["ts"] + r["dur"] for r in ranges)
    starts = [r["ts"] for r in ranges]

    def range_at(ts: float) -> dict | None:
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= ranges[i]["ts"] + ranges[i]["dur"]:
            return ranges[i]
        return None

    # Union of kernel intervals inside [t0, t1]; idle gaps attributed to where the host was.
    busy = 0.0
    idle_by: dict[str, float] = defaultdict(float)
    cursor = t0
    for k in kernels:
        start, end = max(k["ts"], t0), min(k["ts"] + k["dur"], t1)
        if end <= cursor:
            continue
        if start > cursor:
            where = range_at((cursor + start) / 2)
            idle_by[where["name"].split(" ", 1)[1] if where else "between calls"] += start - cursor
            cursor = start
        busy += end - cursor
        cursor = end
    if cursor < t1:
        where = range_at((cursor + t1) / 2)
        idle_by[where["name"].split(" ", 1)[1] if where else "between calls"] += t1 - cursor
    wall = t1 - t0

    per_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in ranges:
        kind = r["name"].split(" ", 1)[1]
        per_kind[kind]["calls"] += 1
        per_kind[kind]["host_ms"] += r["dur"] / 1000
    graph_launches = 0
    for k in kernels:
        launch = launches.get(k.get("args", {}).get("correlation"))
        if launch is None:
            continue
        if "Graph" in launch["name"]:
            graph_launches += 1
        where = range_at(launch["ts"])
        if where is not None:
            kind = where["name"].split(" ", 1)[1]
            per_kind[kind]["gpu_ms"] += k["dur"] / 1000
            per_kind[kind]["kernels"] += 1
    by_name: dict[str, float] = defaultdict(float)
    for k in kernels:
        by_name[k["name"][:90]] += k["dur"] / 1000
    return {
        "window_ms": wall / 1000,
        "kernel_busy_pct": 100 * busy / wall,
        "idle_ms_by_host_place": {k: round(v / 1000, 1) for k, v in sorted(idle_by.items())},
        "per_call": {
            kind: {
                "calls": int(v["calls"]),
                "host_ms": round(v["host_ms"] / v["calls"], 2),
                "gpu_kernel_ms": round(v["gpu_ms"] / v["calls"], 2),
                "kernels": round(v["kernels"] / v["calls"], 1),
            }
            for kind, v in sorted(per_kind.items())
        },
        "kernels": len(kernels),
        "kernels_from_graph_launches": graph_launches,
        "launches_matched": sum(1 for k in kernels if k.get("args", {}).get("correlation") in launches),
        "top_kernels_ms": dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:top]),
    }


def main(argv: list[str] | None = None) -> int:
    """Trace the cases the arguments name and print the analysis; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(bench.SHAPES), default="mistral7b")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-models")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--cases", default="p=1", help="as gpu_throughput.py --cases")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(bench.parse_cases(args.cases, args.frames)):
        trace = args.out / f"trace-{i}.json"
        result = traced_run(case, args, trace)
        summary = analyze(trace)
        print(f"== {case.name()}: {result['frames_per_s']:.3f} frames/s (traced), "
              f"NVML busy {result.get('gpu_busy_pct', float('nan')):.0f}%")
        print(json.dumps(summary, indent=1))
        trace.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
