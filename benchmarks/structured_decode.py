"""Decode cost of structured answers on the CPU: the same frames asked one free-text question, or
one question with a JSON Schema (decoded under its grammar), per model.

    python benchmarks/structured_decode.py [--frames 8] [--parallel 4] [--repeats 3] [--models tiny random32k]
    python benchmarks/structured_decode.py --models mistral7b --gpu-layers -1 --threads 4 ...   # on a GPU

Models: ``tiny`` (the test model, 1,566 tokens) and ``random32k``: the tiny model's shape with
its vocabulary padded to 32,000 tokens, as the real LLaVA 1.6 Mistral/Vicuna models have
(written by ``benchmarks/random_llava.py`` into a temporary folder), so that the grammar's masks
cost what they cost over a real vocabulary while the forward pass stays cheap: the figures
show the grammar's share at its largest. ``mistral7b`` is the real Mistral-7B LLaVA 1.6 shape
(Q5_K_M text, F16 CLIP; 5 GB, written into ``--workdir``), for a GPU.

Per model and case it prints the best of ``--repeats`` runs: decode time per generated token and
per step (``EngineStats.decode_s``; a step decodes every frame in flight), and for the schema
case the time spent filling token masks; and, for both, the time taking each sampled token
(``Sampling.accept``: stop strings, or matching the token against the grammar). The free-text case runs with
``ignore_eos`` to the schema case's mean answer length, so both generate about as many tokens.
One-time costs (the tokenizer built from the vocabulary, the schema compiled) are printed apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.random_llava import CLIP_VIT_L_336, MISTRAL_7B_TEXT, write_random_llava  # noqa: E402
from pipeline.caption import make_questions  # noqa: E402
from pipeline.caption.engine import Engine, EngineSettings, EngineStats, grammar, sequence  # noqa: E402
from pipeline.caption.engine.native import TextModel  # noqa: E402
from pipeline.caption.tiny import TINY_TEXT, TINY_VISION, ensure_tiny_model  # noqa: E402
from pipeline.presets import captioner_from_preset  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "caption": {"type": "string", "maxLength": 60},
        "people": {"type": "integer", "minimum": 0, "maximum": 50},
        "outdoor": {"type": "boolean"},
        "mood": {"enum": ["calm", "busy", "tense"]},
    },
    "required": ["caption", "people", "outdoor", "mood"],
    "additionalProperties": False,
}
PROMPT = "Describe the frame."


@contextmanager
def timed(owner: Any, name: str, spent: list[float]) -> Iterator[None]:
    """Add the time of every call of ``owner.name`` to ``spent[0]`` while inside."""
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def case(settings: EngineSettings, prompt: Any, n_frames: int) -> dict[str, float]:
    """One run: decode seconds, tokens, steps, and the grammar's seconds."""
    masks, accepting = [0.0], [0.0]
    with Engine(settings) as engine:
        questions = make_questions([prompt])
        engine.check_fits(questions)  # the schema compiled, the tokenizer built: not timed here
        engine.stats = EngineStats()
        with timed(grammar.Grammars, "allowed", masks), timed(sequence.Sampling, "accept", accepting):
            results = list(engine.run(enumerate(frames(n_frames, seed=7)), questions))
        stats = engine.stats
    answers = [a for _, found in results for a in found]
    return {
        "decode_s": stats.decode_s, "tokens": stats.completion_tokens, "steps": stats.decode_calls,
        "mask_s": masks[0], "accept_s": accepting[0],
        "stop": sum(a.finish_reason is not None and a.finish_reason.value == "stop" for a in answers),
        "answers": len(answers),
    }


def frames(n: int, seed: int) -> list[np.ndarray]:
    """``n`` RGB frames of noise, 640x360."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(n)]


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the least decode time per token."""
    return min(runs, key=lambda r: r["decode_s"] / max(r["tokens"], 1))


def one_time_costs(text_model: Path, name: str) -> dict[str, float]:
    """Seconds to build the tokenizer from the vocabulary and to compile the schema (made new
    with ``name``, so that no earlier compile is reused)."""
    model = TextModel(str(text_model), 0)
    try:
        t0 = time.perf_counter()
        grammar.Grammars(model)
        tokenizer_s = time.perf_counter() - t0
    finally:
        model.close()
    t0 = time.perf_counter()
    grammar.answer_schema(make_questions([{"text": PROMPT, "schema": {**SCHEMA, "description": name}}])[0])
    return {"tokenizer_s": tokenizer_s, "compile_s": time.perf_counter() - t0}


def model_files(name: str, workdir: Path) -> tuple[Path, Path]:
    """The (text, mmproj) pair of a model name, written once into ``workdir``."""
    if name == "tiny":
        return ensure_tiny_model(workdir / "tiny")
    if name == "mistral7b":
        return write_random_llava(
            workdir / name, MISTRAL_7B_TEXT, CLIP_VIT_L_336, text_type="Q5_K_M", vision_type="F16", name=name
        )
    return write_random_llava(workdir / name, TINY_TEXT, TINY_VISION, vocab_size=32000, name=name)


def main() -> None:
    """Print one JSON line per (model, case) and the one-time costs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "random32k"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where the models go (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            text, mmproj = model_files(name, args.workdir or Path(scratch))
            overrides = [
                f"model.dir={text.parent}", f"engine.parallel={args.parallel}", f"engine.n_threads={args.threads}",
                f"model.n_gpu_layers={args.gpu_layers}", "model.text_type=keep",
            ]
            base = captioner_from_preset("tiny", *overrides, max_questions=1).engine.settings
            base = replace(base, text_model=str(text), mmproj=str(mmproj), max_tokens=args.max_tokens, stop=())
            costs = one_time_costs(text, name)
            print(json.dumps({"model": name, **{k: round(v, 3) for k, v in costs.items()}}), flush=True)
            entry = {"text": PROMPT, "schema": SCHEMA}
            structured = best([case(base, entry, args.frames) for _ in range(args.repeats)])
            length = max(1, round(structured["tokens"] / structured["answers"]))
            plain_settings = replace(base, ignore_eos=True, max_tokens=length)
            plain = best([case(plain_settings, PROMPT, args.frames) for _ in range(args.repeats)])
            for label, run in (("free text", plain), ("schema", structured)):
                print(json.dumps({
                    "model": name, "case": label, "tokens": run["tokens"], "steps": run["steps"],
                    "stop": f"{run['stop']}/{run['answers']}",
                    "decode_ms_per_token": round(1000 * run["decode_s"] / run["tokens"], 3),
                    "decode_ms_per_step": round(1000 * run["decode_s"] / run["steps"], 3),
                    "mask_ms_per_step": round(1000 * run["mask_s"] / run["steps"], 3),
                    "accept_ms_per_token": round(1000 * run["accept_s"] / run["tokens"], 3),
                }), flush=True)


if __name__ == "__main__":
    main()
