"""Where one frame's GPU time goes inside llama.cpp, kernel by kernel (issue 27, point 3).

The engine's own pieces on the F16 text weights it loads by default on a GPU
(``model.text_type=auto``): a frame's CLIP encode (one graph a tile) and the prefill of its
1,948 image rows in the engine's 1,024-row pieces, timed alone, then once more under
``torch.profiler`` (CUPTI sees every kernel of the process, llama.cpp's too). Prints the kernels
by summed time and the share of matrix multiplications, flash attention and the rest, so that
the prefill's distance from its GEMM limit (``piece_limits.py``) can be placed.

Example (on the GPU machine, after ``source .gpu/gpu_build.sh``)::

    python3 benchmarks/kernel_profile.py --model-dir /tmp/models --out /tmp/out
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import llama_cpp  # before numpy and torch (BENCHMARKS.md, import order)
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_throughput import (  # noqa: E402
    PROMPTS,
    SHAPES,
    engine_settings,
    log,
    make_model,
    make_video,
    read_frames,
    settings_n_embd,
)
from pipeline.caption import EngineStats, make_questions  # noqa: E402
from pipeline.caption.engine import Engine  # noqa: E402
from pipeline.caption.gpu_fit import pick_text_weights  # noqa: E402
from pipeline.caption.weights import ModelFiles  # noqa: E402

KINDS = {"gemm": ("gemm", "cutlass", "sm90_", "cublas", "mul_mat"), "attention": ("flash_attn",)}


def kind_of(kernel: str) -> str:
    """``gemm``, ``attention`` or ``other`` by the kernel's name."""
    name = kernel.lower()
    return next((kind for kind, marks in KINDS.items() if any(m in name for m in marks)), "other")


def main(argv: list[str] | None = None) -> int:
    """Time and profile one frame's CLIP and prefill; append the record to ``OUT/kernels.jsonl``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mistral7b")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-models")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()  # without: the flow only, on a CPU (--shape mini)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    text, mmproj = make_model(args.shape, args.model_dir)
    n_gpu_layers = SHAPES[args.shape][4]
    settings = engine_settings(text, mmproj, n_gpu_layers, 8, parallel=1, prepare_ahead=0)
    files = pick_text_weights(ModelFiles(text, mmproj), "auto", settings, text.parent)
    settings = engine_settings(files.loaded_text, mmproj, n_gpu_layers, 8, parallel=1, prepare_ahead=0)
    log(f"text weights: {files.loaded_text.name}")
    rgb = read_frames(make_video(Path(tempfile.mkdtemp()) / "clip.mp4", 4), 1)[0]
    engine = Engine(settings)
    engine.setup()
    engine._set_questions(make_questions(PROMPTS[:1]))
    vision, lane = engine._vision, engine._lanes[0]
    assert vision is not None
    images = [vision.tokenize(rgb, EngineStats()) for _ in range(8)]  # encode frees an image's pieces
    n_tokens = images[0].n_tokens
    out = np.empty((n_tokens, settings_n_embd(engine)), np.float32)

    def clip() -> np.ndarray:
        return vision.encode(images.pop(), out, EngineStats())

    embd = clip().copy()

    def prefill() -> None:
        llama_cpp.llama_memory_clear(lane.memory, True)
        for start in range(0, n_tokens, 1024):
            lane.decode_embeddings(embd[start : start + 1024], start, 0)
        llama_cpp.llama_synchronize(lane.ctx)

    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(6):
        for name, fn in (("clip", clip), ("prefill", prefill)):
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(1000 * (time.perf_counter() - start))
    record: dict[str, Any] = {
        "kind": "kernels", "shape": args.shape, "text_weights": files.loaded_text.name,
        "image_tokens": n_tokens, "device": torch.cuda.get_device_name() if cuda else "cpu",
        **{f"{name}_ms": statistics.median(runs[1:]) for name, runs in times.items()},
    }
    for name, fn in (("clip", clip), ("prefill", prefill)):
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            fn()
            sync()
        kernels: dict[str, list[float]] = defaultdict(list)
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                kernels[event.name].append(event.device_time / 1000)
        summed = {k: sum(v) for k, v in kernels.items()}
        by_kind: dict[str, float] = defaultdict(float)
        for kernel, ms in summed.items():
            by_kind[kind_of(kernel)] += ms
        top = sorted(summed.items(), key=lambda kv: -kv[1])[: args.top]
        record[f"{name}_kernel_ms"] = sum(summed.values())
        record[f"{name}_by_kind_ms"] = dict(by_kind)
        record[f"{name}_top"] = [{"kernel": k[:160], "ms": ms, "calls": len(kernels[k])} for k, ms in top]
        log(f"{name}: {record[f'{name}_ms']:.1f} ms alone, kernels {sum(summed.values()):.1f} ms: "
            + json.dumps({k: round(v, 1) for k, v in by_kind.items()}))
        for k, ms in top:
            log(f"  {ms:8.2f} ms {len(kernels[k]):5d}x {k[:140]}")
    engine.close()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "kernels.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
