"""A tiny random-weight LLaVA 1.6 model pair, generated locally.

The pair is a llama-architecture text model with a SentencePiece (SPM) tokenizer and a CLIP
vision encoder with LLaVA's two-layer MLP projector, laid out exactly like the GGUF files of
the real LLaVA 1.6 models (same tensor names, metadata keys, 336-pixel tiles of 24x24 patches
and the LLaVA 1.6 grid pinpoints), only with a few thousand times fewer weights, all drawn
from a fixed-seed random generator. Its answers are gibberish, but loading it and captioning
a frame runs the same llama-cpp-python multimodal code path (``mtmd``: image tiling, CLIP
encoding, projection, decoding) as the real model, in well under a second on a CPU and with
nothing to download. Tests use it, and so does ``model=tiny``.

Generation is deterministic: the same code writes the same bytes. The file names carry a
version suffix (``_VERSION``); bump it whenever the generator changes so that caches made by
an older generator are not reused.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

_VERSION = "v1"
TINY_TEXT_FILE = f"tiny-llava-text-{_VERSION}.gguf"
TINY_MMPROJ_FILE = f"tiny-llava-mmproj-{_VERSION}.gguf"
TINY_TEXT_Q8_FILE = f"tiny-llava-text-{_VERSION}.Q8_0.gguf"

_SEED = 20240611
_WEIGHT_STD = 0.2  # with 0.02 every answer is the same token repeated

# Text model (llama architecture).
_TEXT_EMBD = 64
_TEXT_LAYERS = 2
_TEXT_HEADS = 4
_TEXT_KV_HEADS = 4
_TEXT_FF = 128
_TEXT_CONTEXT = 4096
_RMS_EPS = 1e-5

# Vision encoder (CLIP ViT with the geometry of ViT-L/14-336) and projector.
_VISION_EMBD = 32
_VISION_FF = 48
_VISION_LAYERS = 2
_VISION_HEADS = 4
_IMAGE_SIZE = 336
_PATCH_SIZE = 14
_LAYER_NORM_EPS = 1e-5
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_GRID_PINPOINTS = [336, 672, 672, 336, 672, 672, 1008, 336, 336, 1008]

# Tokenizer.
_SPACE = "\u2581"  # SentencePiece's word-start marker
_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>"]
_WORDS = """
the a an of and to in is are was on with at by for from as it this that there these
what who where when how which why do does not no yes can see shown show shows image
picture photo frame video scene describe description answer question questions user
assistant system chat between curious human artificial intelligence helpful detailed
polite answers person people man woman men women child children boy girl group crowd
face hand hands head hair shirt dress hat glasses standing sitting walking running
holding looking wearing talking playing driving riding car cars bus truck bike road
street city building buildings house room table chair door window wall floor sky tree
trees grass water sea beach mountain snow sun light dark night day indoor outdoor
background foreground front left right top bottom center middle near next behind
red green blue black white yellow orange brown gray pink purple color colors
large small big little long short old young new one two three four many some
dog cat bird horse animal food plate cup phone screen computer book sign text logo
he she they his her their its has have had be been being while into over under
""".split()
_PUNCTUATION = list(".,!?:;'\"-()[]/")
_DIGITS = list("0123456789")
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [
    chr(c) for c in range(ord("A"), ord("Z") + 1)
]


def ensure_tiny_model(cache_dir: Path, quantized: bool = False) -> tuple[Path, Path]:
    """Create the tiny model files in ``cache_dir`` if missing and return their paths.

    Args:
        cache_dir: Folder for the files; created if needed. Files already there are reused.
        quantized: Return a Q8_0 text model (quantized from the F32 one with llama.cpp)
            instead of the F32 one. The mmproj is the same either way.

    Returns:
        ``(text_model_path, mmproj_path)``.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    text_path = _ensure_file(cache_dir / TINY_TEXT_FILE, _write_text_model)
    mmproj_path = _ensure_file(cache_dir / TINY_MMPROJ_FILE, _write_mmproj)
    if quantized:
        text_path = _ensure_file(
            cache_dir / TINY_TEXT_Q8_FILE, lambda out: _quantize_q8_0(text_path, out)
        )
    return text_path, mmproj_path


def _ensure_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Make ``path`` with ``write`` unless it exists, atomically.

    ``write`` writes into a temporary file in the same folder, which is then renamed into
    place, so a concurrent reader sees either no file or the whole file.
    """
    if path.exists():
        return path
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Normal random weights of the given numpy shape (reversed ggml ``ne``), as float32."""
    return rng.normal(0.0, _WEIGHT_STD, size=shape).astype(np.float32)


def _ones(n: int) -> np.ndarray:
    """A norm weight (scale 1)."""
    return np.ones(n, dtype=np.float32)


def _zeros(n: int) -> np.ndarray:
    """A norm bias (shift 0)."""
    return np.zeros(n, dtype=np.float32)


def _write_gguf(path: Path, writer: gguf.GGUFWriter) -> None:
    """Write a filled-in writer's header, metadata and tensors to ``path`` and close it."""
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _vocab() -> tuple[list[str], list[float], list[int]]:
    """The SPM vocabulary: tokens, scores and token types, in id order.

    Ids 0-2 are ``<unk>``, ``<s>``, ``</s>``; then the 256 byte-fallback tokens (so any
    text tokenizes), the chat control tokens, and the normal pieces. SPM only reaches a
    piece by merging two pieces that are both in the vocabulary, so every prefix of every
    ``▁word`` is a piece too; English words then come out as one token each.
    """
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    tokens += _SPECIAL_TOKENS
    types += [gguf.TokenType.CONTROL] * len(_SPECIAL_TOKENS)
    n_special = len(tokens)

    pieces = [_SPACE, *_LETTERS, *_DIGITS, *_PUNCTUATION]
    for word in _WORDS:
        for variant in (word, word.capitalize()):
            marked = _SPACE + variant
            pieces += [marked[:end] for end in range(2, len(marked) + 1)]
    pieces = list(dict.fromkeys(pieces))  # drop repeats, keep order
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # Real SPM vocabularies score a piece by minus its rank; earlier pieces merge first.
    scores = [0.0] * n_special + [-float(rank) for rank in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


def _write_text_model(path: Path) -> None:
    """Write the llama-architecture text model (F32) with its SPM tokenizer."""
    tokens, scores, token_types = _vocab()
    writer = gguf.GGUFWriter(None, "llama")
    writer.add_name("tiny-llava-text")
    writer.add_description("Random-weight LLaVA 1.6 text model for tests")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(_TEXT_CONTEXT)
    writer.add_embedding_length(_TEXT_EMBD)
    writer.add_block_count(_TEXT_LAYERS)
    writer.add_feed_forward_length(_TEXT_FF)
    writer.add_head_count(_TEXT_HEADS)
    writer.add_head_count_kv(_TEXT_KV_HEADS)
    writer.add_rope_dimension_count(_TEXT_EMBD // _TEXT_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(_RMS_EPS)
    writer.add_vocab_size(len(tokens))

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(token_types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    for name, tensor in _text_tensors(len(tokens)):
        writer.add_tensor(name, tensor)
    _write_gguf(path, writer)


def _text_tensors(n_vocab: int) -> list[tuple[str, np.ndarray]]:
    """The text model's tensors, named and shaped as llama.cpp's LLM_ARCH_LLAMA loads them."""
    rng = np.random.default_rng(_SEED)
    head_dim = _TEXT_EMBD // _TEXT_HEADS
    kv_dim = head_dim * _TEXT_KV_HEADS
    tensors = [("token_embd.weight", _random(rng, n_vocab, _TEXT_EMBD))]
    for i in range(_TEXT_LAYERS):
        tensors += [
            (f"blk.{i}.attn_norm.weight", _ones(_TEXT_EMBD)),
            (f"blk.{i}.attn_q.weight", _random(rng, _TEXT_EMBD, _TEXT_EMBD)),
            (f"blk.{i}.attn_k.weight", _random(rng, kv_dim, _TEXT_EMBD)),
            (f"blk.{i}.attn_v.weight", _random(rng, kv_dim, _TEXT_EMBD)),
            (f"blk.{i}.attn_output.weight", _random(rng, _TEXT_EMBD, _TEXT_EMBD)),
            (f"blk.{i}.ffn_norm.weight", _ones(_TEXT_EMBD)),
            (f"blk.{i}.ffn_gate.weight", _random(rng, _TEXT_FF, _TEXT_EMBD)),
            (f"blk.{i}.ffn_up.weight", _random(rng, _TEXT_FF, _TEXT_EMBD)),
            (f"blk.{i}.ffn_down.weight", _random(rng, _TEXT_EMBD, _TEXT_FF)),
        ]
    tensors += [
        ("output_norm.weight", _ones(_TEXT_EMBD)),
        ("output.weight", _random(rng, n_vocab, _TEXT_EMBD)),
    ]
    return tensors


def _write_mmproj(path: Path) -> None:
    """Write the CLIP vision encoder + MLP projector (F32) in LLaVA 1.6's mmproj layout."""
    writer = gguf.GGUFWriter(None, "clip")
    writer.add_name("tiny-llava-mmproj")
    writer.add_description("image encoder for LLaVA")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", _IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", _PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", _VISION_EMBD)
    writer.add_uint32("clip.vision.feed_forward_length", _VISION_FF)
    writer.add_uint32("clip.vision.projection_dim", _TEXT_EMBD)
    writer.add_uint32("clip.vision.attention.head_count", _VISION_HEADS)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", _LAYER_NORM_EPS)
    writer.add_uint32("clip.vision.block_count", _VISION_LAYERS)
    writer.add_array("clip.vision.image_mean", _CLIP_MEAN)
    writer.add_array("clip.vision.image_std", _CLIP_STD)
    writer.add_string("clip.vision.mm_patch_merge_type", "spatial_unpad")
    writer.add_array("clip.vision.image_grid_pinpoints", _GRID_PINPOINTS)

    for name, tensor in _mmproj_tensors():
        writer.add_tensor(name, tensor)
    _write_gguf(path, writer)


def _mmproj_tensors() -> list[tuple[str, np.ndarray]]:
    """The mmproj's tensors, named as tools/mtmd/clip.cpp loads them for projector "mlp".

    llama.cpp treats most of them as optional but then dereferences them in the graph, so a
    missing one crashes instead of raising: every tensor of a real LLaVA 1.6 mmproj is here.
    """
    rng = np.random.default_rng(_SEED + 1)
    n_positions = (_IMAGE_SIZE // _PATCH_SIZE) ** 2 + 1  # patches + class token
    tensors = [
        ("v.class_embd", _random(rng, _VISION_EMBD)),
        ("v.patch_embd.weight", _random(rng, _VISION_EMBD, 3, _PATCH_SIZE, _PATCH_SIZE)),
        ("v.position_embd.weight", _random(rng, n_positions, _VISION_EMBD)),
        ("v.pre_ln.weight", _ones(_VISION_EMBD)),
        ("v.pre_ln.bias", _zeros(_VISION_EMBD)),
    ]
    for i in range(_VISION_LAYERS):
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors += [
                (f"v.blk.{i}.{proj}.weight", _random(rng, _VISION_EMBD, _VISION_EMBD)),
                (f"v.blk.{i}.{proj}.bias", _random(rng, _VISION_EMBD)),
            ]
        tensors += [
            (f"v.blk.{i}.ln1.weight", _ones(_VISION_EMBD)),
            (f"v.blk.{i}.ln1.bias", _zeros(_VISION_EMBD)),
            (f"v.blk.{i}.ffn_up.weight", _random(rng, _VISION_FF, _VISION_EMBD)),
            (f"v.blk.{i}.ffn_up.bias", _random(rng, _VISION_FF)),
            (f"v.blk.{i}.ffn_down.weight", _random(rng, _VISION_EMBD, _VISION_FF)),
            (f"v.blk.{i}.ffn_down.bias", _random(rng, _VISION_EMBD)),
            (f"v.blk.{i}.ln2.weight", _ones(_VISION_EMBD)),
            (f"v.blk.{i}.ln2.bias", _zeros(_VISION_EMBD)),
        ]
    tensors += [
        ("mm.0.weight", _random(rng, _TEXT_EMBD, _VISION_EMBD)),
        ("mm.0.bias", _random(rng, _TEXT_EMBD)),
        ("mm.2.weight", _random(rng, _TEXT_EMBD, _TEXT_EMBD)),
        ("mm.2.bias", _random(rng, _TEXT_EMBD)),
        # Real LLaVA 1.6 mmproj files carry it; this llama.cpp does not read it (its anyres
        # puts the tiles' embeddings one after another, with no row separators).
        ("model.image_newline", _random(rng, _TEXT_EMBD)),
    ]
    return tensors


def _quantize_q8_0(source: Path, out: Path) -> None:
    """Quantize the text model ``source`` to Q8_0 into ``out`` with llama.cpp.

    Raises:
        RuntimeError: llama.cpp reported a failure.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise RuntimeError(f"llama_model_quantize failed with status {status} for {source}")
