"""Isolated limits of a frame's GPU pieces on this card (issue 27, point 3).

The engine's own pieces come from ``gpu_throughput.py --probe`` (CLIP per frame, the image
prefill by piece) and its runs (ms a decode step). This script measures, on the same card in
the same call, what each piece could cost at best:

* **card**: dense F16 matrix throughput (an 8192^3 ``torch.matmul``) and memory bandwidth (a
  copy of 4 GiB, read + write counted);
* **prefill**: the text model's seven weight matrices a layer at the frame's row count, every
  layer (GEMMs alone, no attention or norms), and transformers' whole text model forward on the
  same rows (SDPA attention, bf16), one frame and eight;
* **CLIP**: transformers' ViT-L/336 tower (the peer's, bf16) on one frame's tiles and on 16
  frames' tiles in one batch, ms a tile;
* **decode**: transformers' text model, one step for 16 sequences whose caches hold a frame's
  prompt, against the floor of reading the F16 weights and those caches once.

Random weights of the shape (:func:`gpu_throughput.peer_config`): speed does not depend on
their values. Records go to ``OUT/limits.jsonl``.

Example (on the GPU machine, after ``source .gpu/gpu_build.sh``)::

    python3 benchmarks/piece_limits.py --shape mistral7b --out /tmp/out
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_throughput import SHAPES, log, peer_config  # noqa: E402

IMAGE_ROWS = 1948  # a 640x360 frame in the reference layout
PROMPT_ROWS = 17 + IMAGE_ROWS + 13  # ChatML text before and after the image, as the peer runs it
TILES = 5  # a 640x360 frame: the overview and four tiles


DEVICE = "cuda"  # --device cpu checks the script on a small shape


def sync() -> None:
    """Wait for the device's queued work."""
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], Any], repeats: int = 5) -> float:
    """Median wall milliseconds of ``fn`` on the device (one warm-up call, synchronised)."""
    fn()
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        runs.append(1000 * (time.perf_counter() - start))
    return statistics.median(runs)


def card_limits() -> dict[str, float]:
    """Dense F16 TFLOP/s and copy bandwidth (GB/s) this card reaches under torch."""
    import torch

    n, copy = (8192, 2**31) if DEVICE == "cuda" else (256, 2**20)
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.float16) for _ in range(2))
    ms = time_ms(lambda: a @ b, 10)
    src = torch.empty(copy, device=DEVICE, dtype=torch.int16)
    dst = torch.empty_like(src)
    copy_ms = time_ms(lambda: dst.copy_(src), 10)
    return {"f16_tflops": 2 * n**3 / ms / 1e9, "copy_gb_s": 2 * src.numel() * 2 / copy_ms / 1e6}


def prefill_gemms(shape: Any, rows: int) -> float:
    """Milliseconds of one frame's image rows through every layer's seven weight matrices."""
    import torch

    d, ff, kv = shape.n_embd, shape.n_ff, shape.n_embd // shape.n_head * shape.n_head_kv
    weights = [(d, d), (kv, d), (kv, d), (d, d), (ff, d), (ff, d), (d, ff)]  # q k v o gate up down
    x = {k: torch.randn(rows, k, device=DEVICE, dtype=torch.float16) for k in (d, ff)}
    mats = [torch.randn(o, i, device=DEVICE, dtype=torch.float16) for o, i in weights]
    one_layer = time_ms(lambda: [torch.nn.functional.linear(x[w.shape[1]], w) for w in mats], 10)
    return one_layer * shape.n_layer


def peer_pieces(shape_name: str) -> dict[str, float]:
    """transformers' own times for the three pieces of the random model of ``shape_name``."""
    import torch
    from transformers import DynamicCache, LlavaNextForConditionalGeneration

    config = peer_config(shape_name)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(DEVICE):
        model = LlavaNextForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    text, vision = model.model.language_model, model.model.vision_tower
    width = config.text_config.hidden_size
    out: dict[str, float] = {}
    with torch.no_grad():
        for frames in (1, 8):
            rows = torch.randn(frames, PROMPT_ROWS, width, device=DEVICE, dtype=torch.bfloat16)
            ms = time_ms(partial(text, inputs_embeds=rows, use_cache=False))
            out[f"prefill_ms_frame_batch{frames}"] = ms / frames
        for frames in (1, 16):
            tiles = torch.randn(frames * TILES, 3, 336, 336, device=DEVICE, dtype=torch.bfloat16)
            ms = time_ms(partial(vision, tiles, output_hidden_states=True))
            out[f"clip_ms_tile_batch{frames * TILES}"] = ms / (frames * TILES)
        sequences = 16
        rows = torch.randn(sequences, PROMPT_ROWS, width, device=DEVICE, dtype=torch.bfloat16)
        cache = DynamicCache(config=config.text_config)
        text(inputs_embeds=rows, past_key_values=cache, use_cache=True)
        step = torch.randn(sequences, 1, width, device=DEVICE, dtype=torch.bfloat16)
        for _ in range(3):  # warm-up steps
            text(inputs_embeds=step, past_key_values=cache, use_cache=True)
        sync()
        start, steps = time.perf_counter(), 20
        for _ in range(steps):
            text(inputs_embeds=step, past_key_values=cache, use_cache=True)
        sync()
        out["decode_ms_step_16_sequences"] = 1000 * (time.perf_counter() - start) / steps
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print the limits; append them to ``OUT/limits.jsonl``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mistral7b")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    import torch

    global DEVICE
    DEVICE = args.device

    shape = SHAPES[args.shape][0]
    card = card_limits()
    log("card " + json.dumps({k: round(v) for k, v in card.items()}))
    gemm_ms = {rows: prefill_gemms(shape, rows) for rows in (1024, IMAGE_ROWS, 8 * IMAGE_ROWS)}
    params = shape.n_layer * (2 * shape.n_embd**2 + 2 * shape.n_embd * shape.n_embd // shape.n_head * shape.n_head_kv
                              + 3 * shape.n_embd * shape.n_ff)
    kv_bytes = 16 * PROMPT_ROWS * shape.n_layer * 2 * shape.n_embd // shape.n_head * shape.n_head_kv * 2
    record: dict[str, Any] = {
        "kind": "limits", "shape": args.shape, "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        **card,
        "prefill_gemm_ms_frame": gemm_ms[IMAGE_ROWS],
        "prefill_gemm_tokens_s": {rows: rows / ms * 1000 for rows, ms in gemm_ms.items()},
        "prefill_gemm_ms_frame_at_peak": 2 * params * IMAGE_ROWS / (card["f16_tflops"] * 1e9),
        "decode_floor_ms_step_16": (2 * params + kv_bytes) / (card["copy_gb_s"] * 1e6),
        **peer_pieces(args.shape),
    }
    log("limits " + json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in record.items()}))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "limits.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
