"""Reference parity: our engine against transformers' LlavaNext on identical weights.

One set of random LLaVA 1.6 weights (the generated tiny model: F32, the real anyres grid,
336-pixel tiles) is written twice: as the GGUF text model + mmproj pair the way llama.cpp's
converters lay them out (:mod:`pipeline.caption.tiny`), and, from those tensors, as a
transformers ``LlavaNextForConditionalGeneration`` checkpoint (the Q/K rows of the text
model un-permuted: llama.cpp's converter permutes them for its rotary layout; CLIP gets its
last layer back, which LLaVA does not use). The same frames then go through both, and per
frame and prompt this records: image tokens, the greedy answer tokens (end of generation
suppressed on both sides, so every answer has ``--max-tokens``), and the logits of the first
answer token. Our engine runs in both image layouts: ``reference`` (ours) and ``llamacpp``.

It also compares the tiles our layout cuts (Pillow bicubic) with the pixel values of
transformers' ``LlavaNextImageProcessor`` (its PIL backend, and its torchvision backend when
torchvision is installed).

Needs torch and transformers (CPU is fine). ``--write-fixture tests/data/reference_parity.json``
stores transformers' side so that the CPU suite (``tests/test_parity.py``) compares our
engine with it without torch.

    python benchmarks/reference_parity.py --write-fixture tests/data/reference_parity.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.caption import make_questions
from pipeline.caption.engine import Engine
from pipeline.caption.layout import FrameLayout
from pipeline.caption.projector import read_projector
from pipeline.caption.tiny import CLIP_MEAN, CLIP_STD, ensure_tiny_model, pattern_frame
from pipeline.config import compose_config
from pipeline.presets import captioner_from_config

# (height, width): landscape 16:9 small and large, portrait, 4:3, a square tile, a strip.
FRAME_SIZES = [(360, 640), (1080, 1920), (640, 360), (528, 720), (336, 336), (100, 1000)]
PROMPTS = ["What is shown?", "Describe the colors of this frame."]
IMAGE_TOKEN_ID = 0  # <unk>: never in a prompt of ours


def main() -> None:
    """Compare this engine's image layout and answers with transformers' and print the result."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="tiny model folder (default: a temporary one)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--write-fixture", type=Path, default=None, help="write transformers' side here")
    parser.add_argument("--device", default="cpu", help="torch device for transformers")
    parser.add_argument(
        "--n-gpu-layers", type=int, default=0, help="our engine's model.n_gpu_layers (-1: all on the GPU)"
    )
    args = parser.parse_args()

    model_dir = args.model_dir or Path(tempfile.mkdtemp(prefix="parity-"))
    text_path, mmproj_path = ensure_tiny_model(model_dir)
    checkpoint = Path(tempfile.mkdtemp(prefix="parity-hf-"))
    hf_model = load_reference(text_path, mmproj_path, checkpoint, args.device)
    processors = image_processors(mmproj_path)

    cfg = compose_config(
        [
            "model=tiny",
            f"model.dir={model_dir}",
            "video=unused",
            "engine.parallel=1",
            f"model.n_gpu_layers={args.n_gpu_layers}",
        ]
    )
    ours = {layout: _engine_answers(cfg, layout, args.max_tokens) for layout in ("reference", "llamacpp")}
    cases = []
    for index, (height, width) in enumerate(FRAME_SIZES):
        frame = pattern_frame(height, width, seed=index)
        pixels = pixel_differences(frame, mmproj_path, processors)
        for prompt in PROMPTS:
            reference = ours["reference"]
            ref = reference_answer(
                hf_model,
                processors["pil"],
                frame,
                reference.prompt_tokens[prompt],
                reference.eog,
                args.max_tokens,
                args.device,
            )
            cases.append({"height": height, "width": width, "seed": index, "prompt": prompt, **ref, "pixels": pixels})
    report(cases, ours, args.max_tokens)
    if args.write_fixture:
        fixture = {
            "made": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "python benchmarks/reference_parity.py --write-fixture " + str(args.write_fixture),
            "versions": {
                name: _version(name)
                for name in ("transformers", "torch", "llama-cpp-python", "gguf", "pillow", "numpy")
            },
            "image_processor": type(processors["pil"]).__name__,
            "model_sha256": {p.name: _sha256(p) for p in (text_path, mmproj_path)},
            "max_tokens": args.max_tokens,
            "cases": cases,
        }
        args.write_fixture.parent.mkdir(parents=True, exist_ok=True)
        args.write_fixture.write_text(json.dumps(fixture, indent=1) + "\n")
        print(f"fixture: {args.write_fixture}")


# -- transformers' side -------------------------------------------------------------------


def load_reference(text_path: Path, mmproj_path: Path, checkpoint: Path, device: str) -> Any:
    """Write the GGUF pair's weights as a transformers checkpoint and load it back."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    text, text_fields = _tensors(text_path)
    vision, vision_fields = _tensors(mmproj_path)
    arch = text_fields["general.architecture"]
    n_head = text_fields[f"{arch}.attention.head_count"]
    n_head_kv = text_fields[f"{arch}.attention.head_count_kv"]
    n_layer = text_fields[f"{arch}.block_count"]
    v_layers = vision_fields["clip.vision.block_count"]
    pins = vision_fields["clip.vision.image_grid_pinpoints"]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_fields["clip.vision.embedding_length"],
            intermediate_size=vision_fields["clip.vision.feed_forward_length"],
            num_hidden_layers=v_layers + 1,  # the layer LLaVA does not use, dropped by the converter
            num_attention_heads=vision_fields["clip.vision.attention.head_count"],
            image_size=vision_fields["clip.vision.image_size"],
            patch_size=vision_fields["clip.vision.patch_size"],
            hidden_act="gelu" if vision_fields.get("clip.use_gelu") else "quick_gelu",
            layer_norm_eps=vision_fields["clip.vision.attention.layer_norm_epsilon"],
        ),
        text_config=LlamaConfig(
            vocab_size=text["token_embd.weight"].shape[0],
            hidden_size=text_fields[f"{arch}.embedding_length"],
            intermediate_size=text_fields[f"{arch}.feed_forward_length"],
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            num_key_value_heads=n_head_kv,
            rms_norm_eps=text_fields[f"{arch}.attention.layer_norm_rms_epsilon"],
            rope_theta=text_fields.get(f"{arch}.rope.freq_base", 10000.0),
            max_position_embeddings=text_fields[f"{arch}.context_length"],
            tie_word_embeddings=False,
        ),
        image_grid_pinpoints=[[pins[i], pins[i + 1]] for i in range(0, len(pins), 2)],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_token_index=IMAGE_TOKEN_ID,
        tie_word_embeddings=False,
    )
    model = LlavaNextForConditionalGeneration(config)
    state = _state_dict(text, vision, n_layer, n_head, n_head_kv, v_layers)
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise SystemExit(f"tensor names transformers does not have: {unknown[:5]}")
    # The unused last CLIP layer and post-layernorm keep their random initialisation.
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    model.save_pretrained(checkpoint)
    return LlavaNextForConditionalGeneration.from_pretrained(checkpoint, torch_dtype=torch.float32).to(device).eval()


def _state_dict(
    text: dict[str, np.ndarray], vision: dict[str, np.ndarray], n_layer: int, n_head: int, n_head_kv: int, v_layers: int
) -> dict[str, np.ndarray]:
    """transformers' names for the GGUF tensors (the inverse of llama.cpp's converters)."""
    vt = "model.vision_tower."
    state = {
        vt + "embeddings.class_embedding": vision["v.class_embd"],
        vt + "embeddings.patch_embedding.weight": vision["v.patch_embd.weight"],
        vt + "embeddings.position_embedding.weight": vision["v.position_embd.weight"],
        vt + "pre_layrnorm.weight": vision["v.pre_ln.weight"],
        vt + "pre_layrnorm.bias": vision["v.pre_ln.bias"],
        "model.multi_modal_projector.linear_1.weight": vision["mm.0.weight"],
        "model.multi_modal_projector.linear_1.bias": vision["mm.0.bias"],
        "model.multi_modal_projector.linear_2.weight": vision["mm.2.weight"],
        "model.multi_modal_projector.linear_2.bias": vision["mm.2.bias"],
        "model.image_newline": vision["v.image_newline" if "v.image_newline" in vision else "model.image_newline"],
    }
    clip_names = {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_out": "self_attn.out_proj",
        "ln1": "layer_norm1",
        "ln2": "layer_norm2",
        "ffn_up": "mlp.fc1",
        "ffn_down": "mlp.fc2",
    }
    for i in range(v_layers):
        for ours, theirs in clip_names.items():
            for kind in ("weight", "bias"):
                state[f"{vt}encoder.layers.{i}.{theirs}.{kind}"] = vision[f"v.blk.{i}.{ours}.{kind}"]
    lm = "model.language_model."
    state[lm + "embed_tokens.weight"] = text["token_embd.weight"]
    state[lm + "norm.weight"] = text["output_norm.weight"]
    state["lm_head.weight"] = text["output.weight"]
    for i in range(n_layer):
        b, layer = f"blk.{i}.", f"{lm}layers.{i}."
        state[layer + "input_layernorm.weight"] = text[b + "attn_norm.weight"]
        state[layer + "self_attn.q_proj.weight"] = _unpermute(text[b + "attn_q.weight"], n_head)
        state[layer + "self_attn.k_proj.weight"] = _unpermute(text[b + "attn_k.weight"], n_head_kv)
        state[layer + "self_attn.v_proj.weight"] = text[b + "attn_v.weight"]
        state[layer + "self_attn.o_proj.weight"] = text[b + "attn_output.weight"]
        state[layer + "post_attention_layernorm.weight"] = text[b + "ffn_norm.weight"]
        state[layer + "mlp.gate_proj.weight"] = text[b + "ffn_gate.weight"]
        state[layer + "mlp.up_proj.weight"] = text[b + "ffn_up.weight"]
        state[layer + "mlp.down_proj.weight"] = text[b + "ffn_down.weight"]
    return state


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo ``LlamaModel.permute`` of llama.cpp's ``convert_hf_to_gguf.py``."""
    return (
        weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    reader = gguf.GGUFReader(path)
    tensors = {
        t.name: np.array(t.data, dtype=np.float32).reshape([int(n) for n in reversed(t.shape.tolist())])
        for t in reader.tensors
    }
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return tensors, fields


def image_processors(mmproj_path: Path) -> dict[str, Any]:
    """transformers' LlavaNextImageProcessor for this projector: its PIL backend, and its
    torchvision backend when torchvision is installed."""
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    geometry = read_projector(mmproj_path).geometry
    kwargs = dict(
        size={"shortest_edge": geometry.tile_px},
        crop_size={"height": geometry.tile_px, "width": geometry.tile_px},
        image_grid_pinpoints=[list(p) for p in geometry.pinpoints],
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    processors: dict[str, Any] = {"pil": LlavaNextImageProcessorPil(**kwargs)}
    try:
        import torchvision  # noqa: F401
        from transformers.models.llava_next.image_processing_llava_next import LlavaNextImageProcessor

        processors["torchvision"] = LlavaNextImageProcessor(**kwargs)
    except ImportError:
        pass
    return processors


def pixel_differences(frame: np.ndarray, mmproj_path: Path, processors: dict[str, Any]) -> dict[str, float]:
    """Largest |difference| between our normalised tiles and each processor's pixel values."""
    from PIL import Image

    layout = FrameLayout(read_projector(mmproj_path).geometry)
    tiles = layout.tiles(frame, layout.plan(*frame.shape[:2]))
    mean, std = np.array(CLIP_MEAN), np.array(CLIP_STD)
    ours = np.stack([((t / 255.0 - mean) / std).transpose(2, 0, 1) for t in tiles]).astype(np.float32)
    found = {}
    for name, processor in processors.items():
        theirs = np.asarray(processor(images=[Image.fromarray(frame)], return_tensors="np")["pixel_values"][0])
        found[name] = float(np.abs(ours - theirs[: len(ours)]).max()) if theirs.shape[0] >= len(ours) else float("inf")
    return found


def reference_answer(
    model: Any,
    processor: Any,
    frame: np.ndarray,
    tokens: tuple[list[int], list[int]],
    eog: list[int],
    max_tokens: int,
    device: str,
) -> dict[str, Any]:
    """transformers' greedy answer about ``frame`` with our prompt tokens (text before and
    after the image), end-of-generation tokens ``eog`` suppressed."""
    import torch
    from PIL import Image

    prefix, suffix = tokens
    batch = processor(images=[Image.fromarray(frame)], return_tensors="pt")
    pixel_values, image_sizes = batch["pixel_values"].to(device), batch["image_sizes"].to(device)
    with torch.no_grad():
        features = model.model.get_image_features(
            pixel_values, image_sizes, vision_feature_layer=-2, vision_feature_select_strategy="default"
        )
        n_image = int(features.pooler_output[0].shape[0])
        ids = torch.tensor([prefix + [IMAGE_TOKEN_ID] * n_image + suffix], device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens,
            do_sample=False,
            suppress_tokens=eog,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    logits = out.logits[0][0].float().cpu().numpy()
    return {
        "image_tokens": n_image,
        "prompt_tokens": int(ids.shape[1]),
        "prefix_ids": prefix,
        "suffix_ids": suffix,
        "answer_ids": out.sequences[0, ids.shape[1] :].tolist(),
        "first_logits": [round(float(v), 5) for v in logits],
    }


# -- our side ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Ours:
    """Our engine's answers in one layout, by (frame index, prompt)."""

    answers: dict[tuple[int, str], Any]
    prompt_tokens: dict[str, tuple[list[int], list[int]]]
    eog: list[int]


def _engine_answers(cfg: Any, layout: str, max_tokens: int) -> _Ours:
    captioner = captioner_from_config(cfg, max_questions=len(PROMPTS))
    settings = dataclasses.replace(
        captioner.engine.settings, image_layout=layout, trace=True, ignore_eos=True, max_tokens=max_tokens, stop=()
    )
    questions = make_questions(PROMPTS)
    with Engine(settings) as engine:
        frames = [(i, pattern_frame(h, w, seed=i)) for i, (h, w) in enumerate(FRAME_SIZES)]
        answers = {(i, a.question.text): a for i, found in engine.run(frames, questions) for a in found}
        model = engine._model
        assert model is not None
        chat = settings.chat_format
        tokens = {
            p: (
                model.tokenize(chat.split("", settings.system_prompt)[0], True),
                model.tokenize(chat.split(p, settings.system_prompt)[1], False),
            )
            for p in PROMPTS
        }
        eog = [int(t) for t in model.end_of_generation_ids()]
    return _Ours(answers, tokens, eog)


def report(cases: list[dict[str, Any]], ours: dict[str, _Ours], max_tokens: int) -> None:
    """Print our engine against transformers, case by case."""
    print(
        f"{'frame':>10} {'prompt':<12} {'layout':<9} {'img tok':>7} {'ref':>5} {'tokens =':>8} {'1st diff':>8} "
        f"{'cos':>10} {'max|dlogit|':>11} {'top5':>5}  pixels"
    )
    for index, case in enumerate(cases):
        frame_index = index // len(PROMPTS)
        for layout, found in ours.items():
            answer = found.answers[(frame_index, case["prompt"])]
            trace = answer.trace
            ref_ids, ref_logits = case["answer_ids"], np.array(case["first_logits"], np.float32)
            n_image = answer.prompt_tokens - len(case["prefix_ids"]) - len(case["suffix_ids"])
            same = list(trace.token_ids) == ref_ids
            first_diff = next((i for i, (a, b) in enumerate(zip(trace.token_ids, ref_ids)) if a != b), "-")
            cos = float(
                trace.first_logits @ ref_logits / np.linalg.norm(trace.first_logits) / np.linalg.norm(ref_logits)
            )
            top5 = list(np.argsort(-trace.first_logits)[:5]) == list(np.argsort(-ref_logits)[:5])
            worst = float(np.abs(trace.first_logits - ref_logits).max())
            size = f"{case['width']}x{case['height']}"
            pixels = ", ".join(f"{k} {v:.1e}" for k, v in case["pixels"].items())
            print(
                f"{size:>10} {case['prompt'][:12]:<12} {layout:<9} {n_image:>7} {case['image_tokens']:>5} "
                f"{str(same):>8} {first_diff!s:>8} {cos:>10.7f} {worst:>11.2e} {str(top5):>5}  {pixels}"
            )
    print(f"({max_tokens} answer tokens per case, greedy, end of generation suppressed on both sides)")
    distinct = {tuple(case["answer_ids"]) for case in cases}
    print(f"transformers' answers: {len(distinct)} distinct of {len(cases)}; e.g. {cases[0]['answer_ids'][:12]}")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    main()
