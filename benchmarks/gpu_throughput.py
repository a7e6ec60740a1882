"""GPU throughput: the batched engine against the seed's one-call-per-frame loop and against
transformers (the reference implementation), side by side.

One process, one model shape, the same frames and the same forced answer length for all:

* **seed style**: ``llama_cpp.Llama(model_path, n_ctx=4096, n_gpu_layers=-1,
  chat_handler=NanoLlavaChatHandler(clip_model_path))`` and, per (frame, prompt), the frame
  encoded to PNG, a base64 data URI, ``create_chat_completion(messages=[system, user with
  image_url + text], max_tokens, temperature=0, logit_bias={every end-of-generation token:
  -inf})``, a fresh KV cache each call. ``seed`` keeps llama-cpp-python's defaults
  (``n_batch=512``, flash attention off), ``seed-tuned`` uses ``n_batch=n_ubatch=2048`` and
  flash attention.
* **engine**: :class:`pipeline.run.Pipeline` itself on a generated 640x360 video
  (``sampler=all``: decode thread, bounded prefetch queue, engine, writer thread, thumbnails),
  with ``EngineSettings.ignore_eos`` so that every answer is ``max_tokens`` long, in the
  ``reference`` image layout (LLaVA 1.6 as trained: 1,948 image tokens for 640x360) or
  llama.cpp's (``layout=llamacpp``: 2,880).
* **peer**: transformers' ``LlavaNextForConditionalGeneration`` with random bf16 weights of the
  same shape (SDPA attention), batched ``generate`` with ``min_new_tokens=max_new_tokens``, over
  a sweep of batch sizes (``--peer-batches``), its image preprocessing
  (``LlavaNextImageProcessor``) included; each question is its own sequence, so 3 prompts are
  3 sequences per frame. The table adds a memory-matched row: the peer's best batch within the
  GPU memory the engine used.

All print the tokens they generated; frames/s, tokens/s and ratios come out as a table, GPU
busy share from NVML (``nvmlDeviceGetUtilizationRates`` every 50 ms during the measured
window), host RSS and GPU memory at the start and end of each engine run.

Models are random-weight LLaVA 1.6 pairs of the real shapes written by
:func:`benchmarks.random_llava.write_random_llava` (text model directly as Q5_K_M blocks, CLIP
ViT-L/336 mmproj in F16); they run at the real models' speed. ``--shape tiny`` runs the whole
thing on a CPU in seconds (for checking the script).

Examples::

    python benchmarks/gpu_throughput.py --shape tiny --frames 8 --seed-frames 2
    python benchmarks/gpu_throughput.py --shape mistral7b --model-dir /tmp/models \\
        --frames 96 --seed-frames 12 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import base64
import faulthandler
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import cv2

# llama_cpp before numpy/cv2: see BENCHMARKS.md (## GPU throughput, import order).
import llama_cpp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.random_llava import CLIP_VIT_L_336, MISTRAL_7B_TEXT, YI_34B_TEXT, write_random_llava  # noqa: E402
from pipeline.caption import Captioner, EngineStats, make_questions  # noqa: E402
from pipeline.caption.engine import Engine, EngineSettings, lanes  # noqa: E402
from pipeline.caption.formats import get_chat_format  # noqa: E402
from pipeline.caption.gpu_fit import pick_text_weights  # noqa: E402
from pipeline.caption.tiny import TINY_TEXT, TINY_VISION, TextShape, VisionShape  # noqa: E402
from pipeline.caption.weights import ModelFiles  # noqa: E402
from pipeline.checksums import model_sha256  # noqa: E402

PROMPTS = [
    "Describe this frame in one sentence.",
    "What objects are visible?",
    "What is the setting of this scene?",
]
SYSTEM = "Answer the question"  # NanoLlavaChatHandler's default system message
WIDTH, HEIGHT = 640, 360

SHAPES: dict[str, tuple[TextShape, VisionShape, str, str, int]] = {
    # name: text shape, vision shape, text type, vision type, n_gpu_layers
    "tiny": (TINY_TEXT, TINY_VISION, "F32", "F32", 0),
    "mini": (TextShape(256, 4, 4, 2, 512, 4096, 1e6, 2000), VisionShape(64, 128, 2, 4), "Q5_K_M", "F16", 0),
    "mistral7b": (MISTRAL_7B_TEXT, CLIP_VIT_L_336, "Q5_K_M", "F16", -1),
    "mistral7b-q8": (MISTRAL_7B_TEXT, CLIP_VIT_L_336, "Q8_0", "F16", -1),
    "mistral7b-f16": (MISTRAL_7B_TEXT, CLIP_VIT_L_336, "F16", "F16", -1),
    "yi34b": (YI_34B_TEXT, CLIP_VIT_L_336, "Q5_K_M", "F16", -1),
}


def log(message: str) -> None:
    """Print a timestamped progress line at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- inputs -----------------------------------------------------------------------------------


def make_model(shape: str, model_dir: Path) -> tuple[Path, Path]:
    """The random-weight (text, mmproj) pair of a shape in ``model_dir``, written once."""
    text_shape, vision_shape, text_type, vision_type, _ = SHAPES[shape]
    name = f"random-llava-{shape}"
    text = model_dir / f"{name}-text-{text_type}.gguf"
    mmproj = model_dir / f"{name}-mmproj-{vision_type}.gguf"
    if text.exists() and mmproj.exists():
        return text, mmproj
    t0 = time.perf_counter()
    paths = write_random_llava(
        model_dir, text_shape, vision_shape, text_type=text_type, vision_type=vision_type, name=name
    )
    log(
        f"wrote {shape} model in {time.perf_counter() - t0:.1f} s: "
        + ", ".join(f"{p.name} {p.stat().st_size / 1e9:.2f} GB" for p in paths)
    )
    return paths


def make_video(path: Path, n_frames: int, fps: float = 25.0) -> Path:
    """A 640x360 clip whose frames all differ (moving shapes on a drifting background)."""
    if path.exists():
        return path
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 40, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    for i in range(n_frames):
        frame = np.full((HEIGHT, WIDTH, 3), ((i * 3) % 200, 90, (255 - i * 2) % 255), np.uint8)
        frame += noise
        cv2.circle(frame, ((i * 11) % WIDTH, HEIGHT // 2), 50, (255, 255, 255), -1)
        cv2.rectangle(frame, (40, (i * 7) % HEIGHT), (140, (i * 7) % HEIGHT + 60), (0, 0, 0), -1)
        writer.write(frame)
    writer.release()
    return path


def read_frames(video: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of ``video`` as RGB arrays."""
    from pipeline.decode import VideoReader

    frames = []
    with VideoReader(video) as reader:
        for frame in reader.frames():
            frames.append(frame.rgb)
            if len(frames) == n:
                break
    return frames


# -- measuring --------------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident memory in MiB (NaN where /proc has none)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Monitor(threading.Thread):
    """Samples GPU utilisation and memory (NVML) and host RSS every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(name="monitor", daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float, float, float]] = []  # t, util %, gpu MB, rss MB
        self._halt = threading.Event()
        self.nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.device = pynvml.nvmlDeviceGetName(self.handle)
        except Exception as error:  # noqa: BLE001  (no GPU: RSS only)
            self.device = f"no NVML ({type(error).__name__})"

    def run(self) -> None:
        """Sample GPU use, GPU memory and host memory until stopped."""
        while not self._halt.is_set():
            util, mem = float("nan"), float("nan")
            if self.nvml is not None:
                util = float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
                mem = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20
            self.samples.append((time.perf_counter(), util, mem, rss_mb()))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._halt.set()
        self.join()

    def summary(self) -> dict[str, float]:
        """Means, percentiles and peaks of the samples (empty with fewer than two)."""
        s = np.array(self.samples, dtype=np.float64)
        if len(s) < 2:
            return {}
        t = s[:, 0] - s[0, 0]
        out = {
            "gpu_busy_pct": float(np.nanmean(s[:, 1])) if self.nvml else float("nan"),
            "gpu_busy_p10_pct": float(np.nanpercentile(s[:, 1], 10)) if self.nvml else float("nan"),
            "gpu_mem_start_mb": float(s[0, 2]),
            "gpu_mem_end_mb": float(s[-1, 2]),
            "gpu_mem_max_mb": float(np.nanmax(s[:, 2])) if self.nvml else float("nan"),
            "rss_start_mb": float(s[0, 3]),
            "rss_end_mb": float(s[-1, 3]),
            "rss_max_mb": float(s[:, 3].max()),
            "samples": int(len(s)),
        }
        half = t >= t[-1] / 2  # slope over the second half: after warm-up growth
        if half.sum() > 2 and t[-1] > 0:
            out["rss_slope_mb_per_min"] = float(np.polyfit(t[half], s[half, 3], 1)[0] * 60)
            if self.nvml:
                out["gpu_mem_slope_mb_per_min"] = float(np.polyfit(t[half], s[half, 2], 1)[0] * 60)
        return out


# -- seed style --------------------------------------------------------------------------------


def run_seed(
    text: Path, mmproj: Path, frames: list[np.ndarray], n_prompts: int, max_tokens: int,
    n_gpu_layers: int, tuned: bool,
) -> dict[str, Any]:
    """The seed's loop: one ``create_chat_completion`` per (frame, prompt), PNG data URIs."""
    from llama_cpp.llama_chat_format import NanoLlavaChatHandler

    kwargs: dict[str, Any] = {}
    if tuned:
        kwargs = {"n_batch": 2048, "n_ubatch": 2048, "flash_attn": True}
    handler = NanoLlavaChatHandler(clip_model_path=str(mmproj), verbose=False)
    llm = llama_cpp.Llama(
        model_path=str(text), n_ctx=4096, n_gpu_layers=n_gpu_layers, chat_handler=handler,
        verbose=False, **kwargs,
    )
    vocab = llm._model.vocab
    bias = {t: float("-inf") for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    prompts = PROMPTS[:n_prompts]

    def ask(rgb: np.ndarray, prompt: str) -> dict[str, Any]:
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        uri = "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()
        return cast(dict[str, Any], llm.create_chat_completion(
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": uri}},
                    {"type": "text", "text": prompt},
                ]},
            ],
            max_tokens=max_tokens, temperature=0.0, logit_bias=bias,
        ))

    ask(frames[0], prompts[0])  # warm-up (allocations, CUDA graphs)
    completion, prompt_tokens = [], []
    t0 = time.perf_counter()
    for rgb in frames:
        for prompt in prompts:
            usage = ask(rgb, prompt)["usage"]
            completion.append(usage["completion_tokens"])
            prompt_tokens.append(usage["prompt_tokens"])
    wall = time.perf_counter() - t0
    llm.close()
    return {
        "kind": "seed-tuned" if tuned else "seed",
        "prompts": n_prompts,
        "frames": len(frames),
        "wall_s": wall,
        "frames_per_s": len(frames) / wall,
        "completion_tokens_per_s": sum(completion) / wall,
        "completion_tokens": sorted(set(completion)),
        "prompt_tokens": sorted(set(prompt_tokens)),
        "settings": kwargs or {"n_batch": 512, "flash_attn": False},
    }


# -- the engine through the real pipeline ------------------------------------------------------


@dataclass
class EngineCase:
    """One engine configuration to measure."""

    prompts: int = 1
    parallel: int = 16
    n_batch: int = 2048
    n_ubatch: int = 1024
    flash_attn: str = "auto"
    kv_unified: bool = False
    prepare_ahead: int = 2
    overlap_clip: bool = True
    max_decode_seqs: int | None = None  # None: the engine's automatic grouping
    lanes: int | None = None  # None: the engine's rule (lanes_gpu on a GPU with one prompt, else 1)
    clip_threads: int | None = None  # None: the engine's rule (one per lane on a GPU)
    layout: str = "reference"
    text_type: str = "auto"  # model.text_type: auto | keep | f16 (an F16 copy made by the pipeline)
    frames: int = 48
    label: str = ""

    def name(self) -> str:
        """The case's label, or one made from its knobs."""
        return self.label or (
            f"p{self.prompts} {self.layout} par{self.parallel} nb{self.n_batch}/{self.n_ubatch} fa-{self.flash_attn} "
            f"{'unified' if self.kv_unified else 'streams'} ahead{self.prepare_ahead}"
            + (" clip-overlap" if self.overlap_clip else "")
            + (f" chunk{self.max_decode_seqs}" if self.max_decode_seqs is not None else "")
            + (f" lanes{self.lanes}" if self.lanes is not None else "")
            + (f" clipt{self.clip_threads}" if self.clip_threads is not None else "")
            + f" weights-{self.text_type}"
        )


class _TimedSampler:
    """Wraps a sampler to time video decoding (grab + retrieve + colour conversion)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.decode_s = 0.0

    def sample(self, reader: Any) -> Iterator[Any]:
        it = iter(self.inner.sample(reader))
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            self.decode_s += time.perf_counter() - t0
            if item is None:
                return
            yield item


def engine_settings(text: Path, mmproj: Path, n_gpu_layers: int, max_tokens: int, **knobs: Any) -> EngineSettings:
    """The benchmark's engine settings: ChatML with the seed's system text, forced answer length."""
    base: dict[str, Any] = dict(
        text_model=str(text), mmproj=str(mmproj), chat_format=get_chat_format("chatml"), system_prompt=SYSTEM,
        stop=(), image_layout="reference", n_ctx=4096, n_gpu_layers=n_gpu_layers, n_batch=2048, n_ubatch=1024,
        flash_attn="auto", n_threads=None, parallel=16, max_questions=1, max_tokens=max_tokens, temperature=0.0,
        top_k=40, top_p=0.95, seed=0, prepare_ahead=2, overlap_clip=True, kv_unified=False, max_decode_seqs=None,
        lanes=None, lanes_gpu=2, clip_threads=None, ignore_eos=True,
    )
    return EngineSettings(**{**base, **knobs})


class Watchdog(threading.Thread):
    """Logs the engine's counters every ``every_s`` during a run and, once the run has taken
    ``stall_s``, every thread's stack (``faulthandler``), so that a run that stalls on the GPU
    machine says where before the call's time runs out (0: off)."""

    def __init__(self, captioner: Captioner, stall_s: float, every_s: float = 15.0) -> None:
        super().__init__(daemon=True)
        self.captioner, self.stall_s, self.every_s = captioner, stall_s, every_s
        self.done = threading.Event()

    def __enter__(self) -> Watchdog:
        if self.stall_s > 0:
            faulthandler.dump_traceback_later(self.stall_s, exit=False)
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        faulthandler.cancel_dump_traceback_later()
        self.done.set()

    def run(self) -> None:
        """Log the engine's stats every ``every_s`` seconds until done."""
        while not self.done.wait(self.every_s):
            log(f"  ... {self.captioner.engine.stats}")


def run_engine(
    case: EngineCase, text: Path, mmproj: Path, video: Path, max_tokens: int, n_gpu_layers: int,
    workdir: Path, stall_s: float = 0.0,
) -> dict[str, Any]:
    """Run one engine case through the product's pipeline over ``video``; its figures as a record."""
    import pipeline.run as run_module
    from pipeline.executors.local import LocalExecutor
    from pipeline.run import Pipeline
    from pipeline.sampling import AllSampler

    settings = engine_settings(
        text, mmproj, n_gpu_layers, max_tokens,
        image_layout=case.layout, n_batch=case.n_batch, n_ubatch=case.n_ubatch, flash_attn=case.flash_attn,
        parallel=case.parallel, max_questions=case.prompts, prepare_ahead=case.prepare_ahead,
        overlap_clip=case.overlap_clip, kv_unified=case.kv_unified, max_decode_seqs=case.max_decode_seqs,
        lanes=case.lanes, clip_threads=case.clip_threads,
    )
    t0 = time.perf_counter()
    files = pick_text_weights(ModelFiles(text, mmproj), case.text_type, settings, text.parent)
    convert_s = time.perf_counter() - t0
    log(f"  text weights: {files.loaded_text.name} ({convert_s:.1f} s to pick or convert)")
    settings = replace(settings, text_model=str(files.loaded_text))
    captioner = Captioner(settings, "bench", files)
    # A run hashes its model files for the Parquet metadata once per file (then cached); the
    # first run's hashing (about 1 s per GB) is not throughput, so it happens before timing.
    model_sha256(captioner.files.as_dict())
    t0 = time.perf_counter()
    captioner.setup()
    load_s = time.perf_counter() - t0
    try:
        with Watchdog(captioner, stall_s):  # warm-up included: a stall there says where too
            # Warm-up: one round of frames in flight (allocations, CUDA graphs, CLIP buffers).
            warm = read_frames(video, min(case.parallel, 8))
            list(captioner.caption(enumerate(warm), make_questions(PROMPTS[: case.prompts])))
            captioner.engine.stats = EngineStats()

            from pipeline.config import compose_config
            from pipeline.thumbnails import thumbnailer

            defaults = compose_config(["video=unused"])
            make_thumbnail = thumbnailer(**defaults.thumbnails)
            assert make_thumbnail is not None

            thumb_s = [0.0]

            def thumbnail(rgb: np.ndarray) -> bytes:
                t = time.perf_counter()
                data = make_thumbnail(rgb)
                thumb_s[0] += time.perf_counter() - t
                return data

            write_s = [0.0]
            original_write = run_module.write_chunk

            def timed_write(*args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return original_write(*args, **kwargs)
                finally:
                    write_s[0] += time.perf_counter() - t

            run_module.write_chunk = timed_write
            sampler = _TimedSampler(AllSampler())
            out_dir = Path(tempfile.mkdtemp(prefix="out-", dir=workdir))
            pipe = Pipeline(
                sampler, PROMPTS[: case.prompts], out_dir, config_id="bench", max_frames=case.frames,
                prefetch_frames=max(16, 2 * case.parallel), checkpoint_frames=defaults.checkpoint_frames,
                thumbnail=thumbnail,
            )
            tasks = pipe.plan([video])
            monitor = Monitor()
            monitor.start()
            time.sleep(0.06)
            t0 = time.perf_counter()
            summary = pipe.run(tasks, LocalExecutor(captioner))
            wall = time.perf_counter() - t0
            monitor.stop()
            run_module.write_chunk = original_write
        stats = captioner.engine.stats
        lanes_used, clip_threads_used = captioner.engine.lanes, captioner.engine.clip_threads
        completion, answers_sha256 = read_answers(out_dir)
        shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        captioner.close()
    frames = summary.frames
    return {
        "kind": "engine",
        "case": case.name(),
        "config": asdict(case),
        "prompts": case.prompts,
        "frames": frames,
        "wall_s": wall,
        "load_s": load_s,
        "text_model": files.text_model.name,
        "convert_s": convert_s,
        "lanes_used": lanes_used,
        "clip_threads_used": clip_threads_used,
        "frames_per_s": frames / wall,
        "completion_tokens_per_s": stats.completion_tokens / wall,
        "prompt_tokens_per_s": stats.prompt_tokens / wall,
        "completion_tokens": sorted(set(completion)),
        "rows": len(completion),
        "answers_sha256": answers_sha256,
        "prompt_tokens_per_answer": stats.prompt_tokens / max(frames * case.prompts, 1),
        "image_tokens_per_frame": stats.image_tokens / max(frames * case.prompts, 1),
        "split_s": {
            "video_decode": sampler.decode_s,
            "thumbnails": thumb_s[0],
            "prepare_bg": stats.tokenize_s,
            "clip": stats.clip_s,
            "prefill": stats.prefill_s,
            "decode": stats.decode_s,
            "engine_wait": stats.wait_s,
            "write": write_s[0],
        },
        "decode_calls": stats.decode_calls,
        "prefill_calls": stats.prefill_calls,
        "ms_per_decode_step": 1000 * stats.decode_s / max(stats.decode_calls, 1),
        **monitor.summary(),
    }


def read_answers(out_dir: Path) -> tuple[list[int], str]:
    """The answers' token counts, and a SHA-256 of every (frame, prompt, answer) in key order:
    equal hashes between two cases mean the same greedy answers, token for token."""
    import hashlib

    import pyarrow.parquet as pq

    tokens: list[int] = []
    keyed: list[tuple[int, str, str]] = []
    columns = ["frame_index", "prompt_id", "answer", "completion_tokens", "status"]
    for path in sorted(out_dir.rglob("part-*.parquet")):
        for row in pq.read_table(path, columns=columns).to_pylist():
            if row["status"] == "ok":
                tokens.append(int(row["completion_tokens"]))
                keyed.append((int(row["frame_index"]), str(row["prompt_id"]), str(row["answer"])))
    digest = hashlib.sha256(repr(sorted(keyed)).encode()).hexdigest()[:16]
    return tokens, digest


# -- micro-benchmark of the prefill ------------------------------------------------------------


def run_probe(text: Path, mmproj: Path, video: Path, n_gpu_layers: int) -> list[dict[str, Any]]:
    """Time the pieces of one frame's prefill, in each image layout: preparation (CPU), CLIP,
    the LLM prefill of the image embeddings by piece size, and a frame's whole prompt (text,
    image, question) as the engine feeds it, one pass of embedding rows, against three calls
    (text tokens, image embeddings, question tokens), each call one ubatch here."""
    rgb = read_frames(video, 1)[0]
    results = []
    for layout in ("reference", "llamacpp"):
        settings = engine_settings(
            text, mmproj, n_gpu_layers, 8, image_layout=layout, n_batch=4096, n_ubatch=4096, parallel=1, prepare_ahead=0
        )
        engine = Engine(settings)
        engine.setup()
        engine._set_questions(make_questions(PROMPTS[:1]))
        vision, lane = engine._vision, engine._lanes[0]
        assert vision is not None
        try:
            times: dict[str, list[float]] = {}

            def timed(key: str, fn: Any) -> Any:
                t = time.perf_counter()
                value = fn()
                llama_cpp.llama_synchronize(lane.ctx)
                times.setdefault(key, []).append(time.perf_counter() - t)
                return value

            for _ in range(4):
                image = timed("prepare", lambda: vision.tokenize(rgb, EngineStats()))
                n_tokens, pieces = image.n_tokens, len(image.pieces)
                out = np.empty((n_tokens, settings_n_embd(engine)), np.float32)
                embd = timed("clip", lambda: vision.encode(image, out, EngineStats()))
                for piece in (1024, 2048, n_tokens):
                    llama_cpp.llama_memory_clear(lane.memory, True)

                    def prefill(piece: int = piece) -> None:
                        for start in range(0, n_tokens, piece):
                            lane.decode_embeddings(embd[start : start + piece], start, 0)

                    timed(f"llm_prefill_in_{piece}", prefill)
                timed("prompt_in_one_pass", lambda: prompt_in_one_pass(engine, lane, embd))
                timed("prompt_in_three_calls", lambda: prompt_in_three_calls(engine, lane, embd))
            summary: dict[str, Any] = {k: 1000 * float(np.median(v[1:])) for k, v in times.items()}
            summary.update({"kind": "probe", "layout": layout, "image_tokens": n_tokens, "clip_runs": pieces})
            results.append(summary)
            log("probe " + json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in summary.items()}))
        finally:
            engine.close()
    return results


def prompt_in_one_pass(engine: Engine, lane: Any, embd: np.ndarray) -> None:
    """A frame's prompt as the engine prefills it: text, image and question rows at once."""
    assert engine._model is not None
    model = engine._model
    text, question = engine._prompts.prefix_tokens, engine._prompts.suffix_tokens[0]
    rows = np.concatenate([model.token_rows(text), embd, model.token_rows(question)])
    llama_cpp.llama_memory_clear(lane.memory, True)
    lane.decode_embeddings(rows, 0, 0)


def prompt_in_three_calls(engine: Engine, lane: Any, embd: np.ndarray) -> None:
    """The same prompt as the engine fed it before: text tokens, image rows, question tokens."""
    text, question = engine._prompts.prefix_tokens, engine._prompts.suffix_tokens[0]
    llama_cpp.llama_memory_clear(lane.memory, True)
    decode_tokens(lane, text, 0)
    lane.decode_embeddings(embd, len(text), 0)
    decode_tokens(lane, question, len(text) + embd.shape[0])


def decode_tokens(lane: Any, tokens: list[int], n_past: int) -> None:
    """Evaluate ``tokens`` into sequence 0 from ``n_past``, the last one's logits kept."""
    batch, n = lane.batch, len(tokens)
    batch.token[:n] = tokens
    batch.pos[:n] = np.arange(n_past, n_past + n, dtype=np.int32)
    batch.seq[:n] = 0
    batch.logits[:n] = 0
    batch.logits[n - 1] = 1
    lane.decode(n, "probe")


def settings_n_embd(engine: Engine) -> int:
    """The loaded text model's embedding width."""
    assert engine._model is not None
    return int(engine._model.n_embd)


# -- the reference implementation -----------------------------------------------------------------


def peer_config(shape: str) -> Any:
    """transformers' config of the random model's shape (LLaVA 1.6 with that text model)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    text_shape, vision_shape, *_ = SHAPES[shape]
    vocab = text_shape.vocab_size or 2000
    return LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_shape.n_embd, intermediate_size=vision_shape.n_ff,
            num_hidden_layers=vision_shape.n_layer + 1, num_attention_heads=vision_shape.n_head,
            image_size=336, patch_size=14, hidden_act="quick_gelu",
        ),
        text_config=LlamaConfig(
            vocab_size=vocab + 1, hidden_size=text_shape.n_embd, intermediate_size=text_shape.n_ff,
            num_hidden_layers=text_shape.n_layer, num_attention_heads=text_shape.n_head,
            num_key_value_heads=text_shape.n_head_kv, rope_theta=text_shape.rope_freq_base,
            max_position_embeddings=max(text_shape.n_ctx_train, 4096), tie_word_embeddings=False,
        ),
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_token_index=vocab,
        tie_word_embeddings=False,
    )


def run_peer(
    shape: str, video: Path, n_prompts: int, max_tokens: int, batches: list[int], frames_at_least: int,
    prompt_tokens: tuple[int, int], time_left: Any,
) -> list[dict[str, Any]]:
    """transformers' LlavaNext on the same frames: one ``generate`` per batch of frames (each
    frame's questions as separate sequences), image preprocessing included."""
    import torch
    from PIL import Image
    from transformers import LlavaNextForConditionalGeneration

    try:
        from transformers import LlavaNextImageProcessor as Processor
    except ImportError:  # pragma: no cover
        from transformers.models.llava_next.image_processing_pil_llava_next import (
            LlavaNextImageProcessorPil as Processor,
        )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = peer_config(shape)
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
    with torch.device(device):
        model = LlavaNextForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    log(f"peer: random {shape} in {time.perf_counter() - t0:.1f} s on {device}")
    processor = Processor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=config.image_grid_pinpoints,
    )
    vocab = config.image_token_index
    rng = np.random.default_rng(5)
    prefix, suffix = prompt_tokens
    texts = [
        (rng.integers(3, vocab, prefix).tolist(), rng.integers(3, vocab, suffix).tolist()) for _ in range(n_prompts)
    ]
    n_image = None
    results = []
    for batch in batches:
        n_frames = max(frames_at_least, batch)
        rounds = -(-n_frames // batch)
        frames = read_frames(video, batch * (rounds + 1))
        if not time_left():
            break
        try:
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()

            def one_round(chunk: list[np.ndarray]) -> None:
                nonlocal n_image
                pixels = processor(images=[Image.fromarray(f) for f in chunk], return_tensors="pt")
                if n_image is None:
                    with torch.no_grad():
                        feats = model.model.get_image_features(
                            pixels["pixel_values"][:1].to(device, model.dtype), pixels["image_sizes"][:1].to(device),
                            vision_feature_layer=-2, vision_feature_select_strategy="default",
                        )
                    n_image = int(feats.pooler_output[0].shape[0])
                ids = torch.tensor(
                    [p + [vocab] * n_image + s for p, s in texts for _ in chunk], device=device
                )
                pixel_values = pixels["pixel_values"].to(device, model.dtype).repeat(n_prompts, 1, 1, 1, 1)
                image_sizes = pixels["image_sizes"].to(device).repeat(n_prompts, 1)
                with torch.no_grad():
                    out = model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values,
                        image_sizes=image_sizes, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                        do_sample=False, pad_token_id=0,
                    )
                assert out.shape[1] - ids.shape[1] == max_tokens
                if device == "cuda":
                    torch.cuda.synchronize()

            one_round(frames[:batch])  # warm-up
            t0 = time.perf_counter()
            for done in range(rounds):
                one_round(frames[batch * (done + 1) : batch * (done + 2)])
            wall = time.perf_counter() - t0
            peak = torch.cuda.max_memory_reserved() / 2**20 if device == "cuda" else float("nan")
            record: dict[str, Any] = {
                "kind": "peer", "case": f"transformers bf16 batch {batch}", "prompts": n_prompts, "batch": batch,
                "frames": batch * rounds, "wall_s": wall, "frames_per_s": batch * rounds / wall,
                "completion_tokens_per_s": batch * rounds * n_prompts * max_tokens / wall,
                "completion_tokens": [max_tokens], "image_tokens_per_frame": n_image, "gpu_mem_peak_mb": peak,
                "transformers": _version("transformers"), "torch": torch.__version__,
            }
            log(f"  peer batch {batch}: {record['frames_per_s']:.3f} frames/s, peak {peak:.0f} MiB")
            results.append(record)
        except torch.cuda.OutOfMemoryError:
            log(f"  peer batch {batch}: out of GPU memory")
            results.append({"kind": "peer-oom", "prompts": n_prompts, "batch": batch})
            break
    return results


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


# -- driver --------------------------------------------------------------------------------------


def parse_cases(spec: str, frames: int) -> list[EngineCase]:
    """``p=1,par=16,nb=2048,ub=2048,fa=on,kv=unified,ahead=2,clip=0;p=3,...``"""
    keys = {"p": "prompts", "par": "parallel", "nb": "n_batch", "ub": "n_ubatch", "fa": "flash_attn",
            "kv": "kv_unified", "ahead": "prepare_ahead", "clip": "overlap_clip", "n": "frames",
            "chunk": "max_decode_seqs", "lanes": "lanes", "clipt": "clip_threads", "layout": "layout",
            "w": "text_type"}
    cases = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        case = EngineCase(frames=frames)
        for item in part.split(","):
            key, _, value = item.partition("=")
            attr = keys[key.strip()]
            if attr in ("flash_attn", "layout", "text_type"):
                setattr(case, attr, value)
            elif attr == "kv_unified":
                setattr(case, attr, value == "unified")
            elif attr == "overlap_clip":
                setattr(case, attr, value in ("1", "true", "on"))
            else:
                setattr(case, attr, int(value))
        if case.n_ubatch > case.n_batch:
            case.n_ubatch = case.n_batch
        cases.append(case)
    return cases


def print_table(results: list[dict[str, Any]]) -> None:
    """The side-by-side table, with the peer's memory-matched and best rows per prompt count."""
    seeds = {(r["kind"], r["prompts"]): r for r in results if r["kind"].startswith("seed")}
    rows = [r for r in results if r["kind"] in ("seed", "seed-tuned", "engine", "peer")]
    print(
        "\n| run | prompts | frames | image tokens | frames/s | gen tok/s | x seed | x peer best "
        "| x peer (memory-matched) | GPU memory | GPU busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = seeds.get(("seed", r["prompts"]))
        peers = [p for p in results if p["kind"] == "peer" and p["prompts"] == r["prompts"]]
        best = max(peers, key=lambda p: p["frames_per_s"], default=None)
        memory = r.get("gpu_mem_max_mb") if r["kind"] == "engine" else r.get("gpu_mem_peak_mb")
        matched = None
        if r["kind"] == "engine" and memory == memory and memory is not None:
            within = [p for p in peers if p["gpu_mem_peak_mb"] <= memory]
            matched = max(within, key=lambda p: p["frames_per_s"], default=None)
        busy = r.get("gpu_busy_pct", float("nan"))
        print(
            f"| {r.get('case', r['kind'])} | {r['prompts']} | {r['frames']} | {r.get('image_tokens_per_frame', '-')} | "
            f"{r['frames_per_s']:.3f} | {r['completion_tokens_per_s']:.0f} | "
            f"{_ratio(r, base)} | {_ratio(r, best)} | "
            f"{_ratio(r, matched) + (' (batch ' + str(matched['batch']) + ')' if matched else '')} | "
            f"{'-' if memory is None or memory != memory else f'{memory / 1024:.1f} GiB'} | "
            f"{'-' if busy != busy else f'{busy:.0f}%'} |"
        )
    for r in results:
        if r["kind"] == "engine":
            split = " ".join(f"{k}={v:.1f}" for k, v in r["split_s"].items())
            print(
                f"  {r['case']}: wall {r['wall_s']:.1f}s split(s) {split}; "
                f"{r['ms_per_decode_step']:.1f} ms/step; RSS {r.get('rss_start_mb', 0):.0f}->"
                f"{r.get('rss_end_mb', 0):.0f} MB; GPU mem {r.get('gpu_mem_start_mb', 0):.0f}->"
                f"{r.get('gpu_mem_end_mb', 0):.0f} MB"
            )


def _ratio(r: dict[str, Any], other: dict[str, Any] | None) -> str:
    return f"{r['frames_per_s'] / other['frames_per_s']:.2f}" if other else "-"


def main(argv: list[str] | None = None) -> int:
    """Run the cases the arguments name and write their records; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-models")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.jsonl")
    parser.add_argument("--frames", type=int, default=48, help="frames per engine run")
    parser.add_argument("--seed-frames", type=int, default=8, help="frames for the 1-prompt seed run")
    parser.add_argument("--seed3-frames", type=int, default=None, help="frames for the 3-prompt seed run")
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--seed", default="seed,seed-tuned", help="seed variants to run (comma list)")
    parser.add_argument("--seed-prompts", default="1,3")
    parser.add_argument(
        "--cases", default="p=1;p=3",
        help="engine cases: p=PROMPTS,par=PARALLEL,nb=N_BATCH,ub=N_UBATCH,fa=on|off|auto,"
        "kv=unified|streams,ahead=N,clip=0|1,chunk=N,lanes=N,clipt=N,w=auto|keep|f16,n=FRAMES; separated by ';' "
        "(unset fields: par=16 ub=1024 kv=streams clip=1 w=auto, the engine's defaults otherwise)",
    )
    parser.add_argument("--probe", action="store_true", help="time the prefill's pieces first")
    parser.add_argument("--peer-batches", default="", help="transformers batch sizes to sweep, e.g. 8,16,32,64,128")
    parser.add_argument("--peer-prompts", default="1,3")
    parser.add_argument("--peer-frames", type=int, default=64, help="frames per peer batch size (at least one batch)")
    parser.add_argument("--budget-s", type=float, default=1e9, help="skip what would start after this")
    parser.add_argument("--force-lanes", action="store_true",
                        help="engine.lanes_gpu lanes where the engine defaults to one (several prompts on a GPU)")
    parser.add_argument("--stall-s", type=float, default=0.0,
                        help="engine runs: log counters every 15 s and all stacks after this many seconds (0: off)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    n_gpu_layers = SHAPES[args.shape][4]
    if args.force_lanes:  # engine.lanes_gpu lanes with several prompts too (BENCHMARKS.md, sessions 6 and 15)
        lanes.lane_count = lambda setting, lanes_gpu, on_gpu, max_questions, parallel: max(
            1, min(setting or lanes_gpu, parallel)
        )
    args.model_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    monitor = Monitor()
    log(f"device: {monitor.device}; llama-cpp-python {llama_cpp.__version__}; "
        f"GPU offload {llama_cpp.llama_supports_gpu_offload()}")
    text, mmproj = make_model(args.shape, args.model_dir)
    cases = parse_cases(args.cases, args.frames)
    peer_batches = [int(b) for b in args.peer_batches.split(",") if b]
    peer_need = max([max(args.peer_frames, b) + b for b in peer_batches] + [0])
    n_video = max([c.frames for c in cases] + [args.seed_frames, args.seed3_frames or 0, 16, peer_need]) + 64
    video = make_video(workdir / f"clip-{n_video}.mp4", n_video)
    results: list[dict[str, Any]] = []

    def record(result: dict[str, Any]) -> None:
        results.append(result)
        with open(results_path, "a") as handle:
            handle.write(json.dumps(result) + "\n")

    def time_left() -> bool:
        left = args.budget_s - (time.perf_counter() - started)
        if left <= 0:
            log("time budget spent: skipping the rest")
        return left > 0

    if args.probe and time_left():
        for r in run_probe(text, mmproj, video, n_gpu_layers):
            record(r)
    seed_prompts = [int(p) for p in args.seed_prompts.split(",") if p]
    for variant in [v for v in args.seed.split(",") if v]:
        for n_prompts in seed_prompts:
            if not time_left():
                break
            n = args.seed_frames if n_prompts == 1 else (args.seed3_frames or max(args.seed_frames // 2, 2))
            frames = read_frames(video, n)
            log(f"{variant}: {n_prompts} prompt(s) x {n} frames")
            r = run_seed(text, mmproj, frames, n_prompts, args.max_tokens, n_gpu_layers, variant == "seed-tuned")
            log(f"  {r['frames_per_s']:.3f} frames/s, answers of {r['completion_tokens']} tokens, "
                f"prompts of {r['prompt_tokens']} tokens")
            record(r)
    for case in cases:
        if not time_left():
            break
        log(f"engine: {case.name()} x {case.frames} frames")
        try:
            r = run_engine(case, text, mmproj, video, args.max_tokens, n_gpu_layers, workdir, args.stall_s)
        except Exception as error:  # noqa: BLE001  (report and go on with the next case)
            log(f"  FAILED: {type(error).__name__}: {error}")
            record({"kind": "engine-failed", "case": case.name(), "error": str(error)})
            continue
        log(f"  {r['frames_per_s']:.3f} frames/s, {r['completion_tokens_per_s']:.0f} tok/s, "
            f"GPU busy {r.get('gpu_busy_pct', float('nan')):.0f}%, answers {r['completion_tokens']} "
            f"sha256 {r['answers_sha256']}; {r['lanes_used']} lane(s), {r['clip_threads_used']} CLIP thread(s), "
            f"wait {r['split_s']['engine_wait']:.2f} s, CLIP {r['split_s']['clip']:.2f} s")
        record(r)
    prompt_tokens = (17, 13)  # ChatML with the seed's system text: before and after the image
    for n_prompts in [int(p) for p in args.peer_prompts.split(",") if p] if peer_batches else []:
        if not time_left():
            break
        log(f"peer: {n_prompts} prompt(s), batches {args.peer_batches}")
        for r in run_peer(
            args.shape, video, n_prompts, args.max_tokens, peer_batches,
            args.peer_frames, prompt_tokens, time_left,
        ):
            record(r)
    print_table([r for r in results if r["kind"] != "engine-failed"])
    log(f"results: {results_path}; total {time.perf_counter() - started:.0f} s")
    shutil.rmtree(workdir, ignore_errors=True) if args.out else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
