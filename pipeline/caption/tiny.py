"""A tiny random-weight LLaVA 1.6 model pair, generated locally.

The pair is a llama-architecture text model with a SentencePiece (SPM) tokenizer and a CLIP
vision encoder with LLaVA's two-layer MLP projector, laid out exactly like the GGUF files of
the real LLaVA 1.6 models (same tensor names, metadata keys, 336-pixel tiles of 24x24 patches
and the LLaVA 1.6 grid pinpoints), only with a few thousand times fewer weights, all drawn
from a fixed-seed random generator. Its answers are gibberish, but loading it and captioning
a frame runs the same llama-cpp-python multimodal code path (``mtmd``: image tiling, CLIP
encoding, projection, decoding) as the real model, in well under a second on a CPU and with
nothing to download. Tests use it, and so does ``model=tiny``.

The same generator, :func:`write_random_llava`, writes such pairs in any shape: the GPU
benchmark (``benchmarks/gpu_throughput.py``) uses it for random-weight models of the real
LLaVA 1.6 geometries (``MISTRAL_7B_TEXT``, ``YI_34B_TEXT`` with ``CLIP_VIT_L_336``), written
directly as Q5_K_M (random quant blocks), so they run at the real models' speed.

Generation is deterministic: the same code writes the same bytes. The file names carry a
version suffix (``_VERSION``); bump it whenever the generator changes so that caches made by
an older generator are not reused.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class TextShape:
    """Geometry of a llama-architecture text model.

    ``vocab_size`` None: the generator's own vocabulary (a few hundred word pieces).
    """

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int = 4096
    rope_freq_base: float = 10000.0
    vocab_size: int | None = None


@dataclass(frozen=True)
class VisionShape:
    """Geometry of a CLIP ViT encoder with 336-pixel tiles of 14-pixel patches."""

    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int


# The tiny pair (tests, model=tiny).
TINY_TEXT = TextShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=128)
TINY_VISION = VisionShape(n_embd=32, n_ff=48, n_layer=2, n_head=4)
# The real LLaVA 1.6 geometries (for benchmarks with random weights).
MISTRAL_7B_TEXT = TextShape(4096, 32, 32, 8, 14336, 32768, 1000000.0, 32000)
VICUNA_7B_TEXT = TextShape(4096, 32, 32, 32, 11008, 4096, 10000.0, 32000)
YI_34B_TEXT = TextShape(7168, 60, 56, 8, 20480, 4096, 5000000.0, 64000)
CLIP_VIT_L_336 = VisionShape(n_embd=1024, n_ff=4096, n_layer=23, n_head=16)  # LLaVA keeps 23 of 24
_RMS_EPS = 1e-5

# Vision encoder input (the geometry of ViT-L/14-336) and projector.
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
    text_path = _ensure_file(
        cache_dir / TINY_TEXT_FILE,
        lambda out: _write_text_model(out, TINY_TEXT, "F32", "tiny-llava-text"),
    )
    mmproj_path = _ensure_file(
        cache_dir / TINY_MMPROJ_FILE,
        lambda out: _write_mmproj(out, TINY_VISION, TINY_TEXT.n_embd, "F32", "tiny-llava-mmproj"),
    )
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
    return _write_atomic(path, write)


def write_random_llava(
    folder: str | Path,
    text_shape: TextShape = TINY_TEXT,
    vision_shape: VisionShape = TINY_VISION,
    vocab_size: int | None = None,
    *,
    text_embd: int | None = None,
    text_type: str = "F32",
    vision_type: str = "F32",
    name: str = "random-llava",
) -> tuple[Path, Path]:
    """Write a random-weight LLaVA 1.6 pair of any shape into ``folder``.

    The tiny test model and the GPU benchmark's real-shaped models (``MISTRAL_7B_TEXT`` +
    ``CLIP_VIT_L_336``, ``YI_34B_TEXT``) both come from here. Files are written atomically
    and overwritten if present.

    Args:
        folder: Where to write; created if needed.
        text_shape: The text model's geometry.
        vision_shape: The CLIP encoder's geometry.
        vocab_size: Pad the vocabulary to this many tokens (the real models' 32000 or 64000
            makes the output layer the real size); ``None`` keeps ``text_shape.vocab_size``
            (or the generator's own few hundred pieces).
        text_embd: Override ``text_shape.n_embd`` (the projector follows it).
        text_type: ``F32`` or ``F16`` (normal draws), ``Q8_0`` or ``Q5_K_M`` (random quant
            blocks written directly, laid out as ``llama-quantize`` would: Q5_K_M puts
            ``output``, and ``attn_v``/``ffn_down`` of the "more bits" layers, in Q6_K).
        vision_type: ``F32`` or ``F16`` (2-D weights in that type; norms, biases, F32).
        name: File name stem: ``{name}-text-{text_type}.gguf``, ``{name}-mmproj-{vision_type}.gguf``.

    Returns:
        ``(text_model_path, mmproj_path)``.
    """
    if text_embd is not None:
        text_shape = replace(text_shape, n_embd=text_embd)
    if vocab_size is not None:
        text_shape = replace(text_shape, vocab_size=vocab_size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text_path = _write_atomic(
        folder / f"{name}-text-{text_type}.gguf",
        lambda out: _write_text_model(out, text_shape, text_type, f"{name}-text"),
    )
    mmproj_path = _write_atomic(
        folder / f"{name}-mmproj-{vision_type}.gguf",
        lambda out: _write_mmproj(out, vision_shape, text_shape.n_embd, vision_type, f"{name}-mmproj"),
    )
    return text_path, mmproj_path


def _write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` with ``write`` through a temporary file in the same folder."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def _write_gguf(path: Path, writer: gguf.GGUFWriter) -> None:
    """Write a filled-in writer's header, metadata and tensors to ``path`` and close it."""
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _vocab(vocab_size: int | None = None) -> tuple[list[str], list[float], list[int]]:
    """The SPM vocabulary: tokens, scores and token types, in id order.

    Ids 0-2 are ``<unk>``, ``<s>``, ``</s>``; then the 256 byte-fallback tokens (so any
    text tokenizes), the chat control tokens, and the normal pieces. SPM only reaches a
    piece by merging two pieces that are both in the vocabulary, so every prefix of every
    ``▁word`` is a piece too; English words then come out as one token each. A larger
    ``vocab_size`` is filled with pieces ``▁tok<N>`` that tokenizing never produces (the
    model can still generate them).
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
    if vocab_size is not None:
        if vocab_size < n_special + len(pieces):
            raise ValueError(f"vocab_size {vocab_size} < the {n_special + len(pieces)} base tokens")
        pieces += [f"{_SPACE}tok{i}" for i in range(vocab_size - n_special - len(pieces))]
    tokens += pieces
    types += [gguf.TokenType.NORMAL] * len(pieces)
    # Real SPM vocabularies score a piece by minus its rank; earlier pieces merge first.
    scores = [0.0] * n_special + [-float(rank) for rank in range(len(pieces))]
    return tokens, scores, [int(t) for t in types]


_FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q5_K_M": gguf.LlamaFileType.MOSTLY_Q5_K_M,
}


def _write_text_model(path: Path, shape: TextShape, weight_type: str, name: str) -> None:
    """Write the llama-architecture text model with its SPM tokenizer."""
    if weight_type not in _FILE_TYPES:
        raise ValueError(f"text_type must be one of {sorted(_FILE_TYPES)}, got {weight_type!r}")
    tokens, scores, token_types = _vocab(shape.vocab_size)
    writer = gguf.GGUFWriter(None, "llama")
    writer.add_name(name)
    writer.add_description("Random-weight LLaVA 1.6 text model for tests")
    writer.add_file_type(_FILE_TYPES[weight_type])
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_rope_freq_base(shape.rope_freq_base)
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

    weights = _Weights(np.random.default_rng(_SEED), weight_type, _text_layout(shape, len(tokens)))
    for tensor_name, tensor_shape, layer in _text_layout(shape, len(tokens)):
        weights.add(writer, tensor_name, tensor_shape, layer, shape.n_layer)
    _write_gguf(path, writer)


def _text_layout(shape: TextShape, n_vocab: int) -> list[tuple[str, tuple[int, ...], int]]:
    """The text model's tensors as ``(name, numpy shape, layer)``, named and ordered as
    llama.cpp's LLM_ARCH_LLAMA loads them (layer -1: not in a block). 1-D tensors are norms."""
    head_dim = shape.n_embd // shape.n_head
    kv_dim = head_dim * shape.n_head_kv
    embd, ff = shape.n_embd, shape.n_ff
    tensors: list[tuple[str, tuple[int, ...], int]] = [("token_embd.weight", (n_vocab, embd), -1)]
    for i in range(shape.n_layer):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (embd,), i),
            (f"blk.{i}.attn_q.weight", (embd, embd), i),
            (f"blk.{i}.attn_k.weight", (kv_dim, embd), i),
            (f"blk.{i}.attn_v.weight", (kv_dim, embd), i),
            (f"blk.{i}.attn_output.weight", (embd, embd), i),
            (f"blk.{i}.ffn_norm.weight", (embd,), i),
            (f"blk.{i}.ffn_gate.weight", (ff, embd), i),
            (f"blk.{i}.ffn_up.weight", (ff, embd), i),
            (f"blk.{i}.ffn_down.weight", (embd, ff), i),
        ]
    tensors += [("output_norm.weight", (embd,), -1), ("output.weight", (n_vocab, embd), -1)]
    return tensors


def _write_mmproj(path: Path, shape: VisionShape, text_embd: int, weight_type: str, name: str) -> None:
    """Write the CLIP vision encoder + MLP projector in LLaVA 1.6's mmproj layout."""
    if weight_type not in ("F32", "F16"):
        raise ValueError(f"vision_type must be F32 or F16, got {weight_type!r}")
    writer = gguf.GGUFWriter(None, "clip")
    writer.add_name(name)
    writer.add_description("image encoder for LLaVA")
    writer.add_file_type(_FILE_TYPES[weight_type])
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", _IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", _PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", shape.n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", shape.n_ff)
    writer.add_uint32("clip.vision.projection_dim", text_embd)
    writer.add_uint32("clip.vision.attention.head_count", shape.n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", _LAYER_NORM_EPS)
    writer.add_uint32("clip.vision.block_count", shape.n_layer)
    writer.add_array("clip.vision.image_mean", _CLIP_MEAN)
    writer.add_array("clip.vision.image_std", _CLIP_STD)
    writer.add_string("clip.vision.mm_patch_merge_type", "spatial_unpad")
    writer.add_array("clip.vision.image_grid_pinpoints", _GRID_PINPOINTS)

    rng = np.random.default_rng(_SEED + 1)
    pool = _normal_pool(rng) if weight_type == "F16" else None
    for tensor_name, tensor in _mmproj_tensors(shape, text_embd, rng, pool):
        if weight_type == "F16" and tensor.ndim >= 2 and tensor_name != "v.position_embd.weight":
            tensor = tensor.astype(np.float16)
        writer.add_tensor(tensor_name, tensor)
    _write_gguf(path, writer)


def _mmproj_tensors(
    shape: VisionShape, text_embd: int, rng: np.random.Generator, pool: np.ndarray | None
) -> list[tuple[str, np.ndarray]]:
    """The mmproj's tensors, named as tools/mtmd/clip.cpp loads them for projector "mlp".

    llama.cpp treats most of them as optional but then dereferences them in the graph, so a
    missing one crashes instead of raising: every tensor of a real LLaVA 1.6 mmproj is here.
    Weights are drawn in a fixed order (``pool``: cut from a pool of draws, for big shapes).
    """

    def draw(*dims: int) -> np.ndarray:
        return _random(rng, *dims) if pool is None else _from_pool(pool, rng, dims)

    embd, ff = shape.n_embd, shape.n_ff
    n_positions = (_IMAGE_SIZE // _PATCH_SIZE) ** 2 + 1  # patches + class token
    tensors = [
        ("v.class_embd", draw(embd)),
        ("v.patch_embd.weight", draw(embd, 3, _PATCH_SIZE, _PATCH_SIZE)),
        ("v.position_embd.weight", draw(n_positions, embd)),
        ("v.pre_ln.weight", _ones(embd)),
        ("v.pre_ln.bias", _zeros(embd)),
    ]
    for i in range(shape.n_layer):
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors += [
                (f"v.blk.{i}.{proj}.weight", draw(embd, embd)),
                (f"v.blk.{i}.{proj}.bias", draw(embd)),
            ]
        tensors += [
            (f"v.blk.{i}.ln1.weight", _ones(embd)),
            (f"v.blk.{i}.ln1.bias", _zeros(embd)),
            (f"v.blk.{i}.ffn_up.weight", draw(ff, embd)),
            (f"v.blk.{i}.ffn_up.bias", draw(ff)),
            (f"v.blk.{i}.ffn_down.weight", draw(embd, ff)),
            (f"v.blk.{i}.ffn_down.bias", draw(embd)),
            (f"v.blk.{i}.ln2.weight", _ones(embd)),
            (f"v.blk.{i}.ln2.bias", _zeros(embd)),
        ]
    tensors += [
        ("mm.0.weight", draw(text_embd, embd)),
        ("mm.0.bias", draw(text_embd)),
        ("mm.2.weight", draw(text_embd, text_embd)),
        ("mm.2.bias", draw(text_embd)),
        # Real LLaVA 1.6 mmproj files carry it; this llama.cpp does not read it (its anyres
        # puts the tiles' embeddings one after another, with no row separators).
        ("model.image_newline", draw(text_embd)),
    ]
    return tensors


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Normal random weights of the given numpy shape (reversed ggml ``ne``), as float32."""
    return rng.normal(0.0, _WEIGHT_STD, size=shape).astype(np.float32)


def _ones(n: int) -> np.ndarray:
    """A norm weight (scale 1)."""
    return np.ones(n, dtype=np.float32)


def _zeros(n: int) -> np.ndarray:
    """A norm bias (shift 0)."""
    return np.zeros(n, dtype=np.float32)


# Big shapes: drawing billions of normals would take minutes, and random weights only have
# to be the right size and finite, so big tensors are cut from a pool of draws at random
# offsets, and quantized tensors are random bytes with sane block scales.
_POOL_SIZE = 1 << 24
_REAL_SCALE = 0.02  # weight spread of the big random models (keeps 30-60 layers finite)


def _normal_pool(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, _REAL_SCALE, size=_POOL_SIZE).astype(np.float32)


def _from_pool(pool: np.ndarray, rng: np.random.Generator, dims: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(dims))
    if n <= pool.size:
        offset = int(rng.integers(0, pool.size - n + 1))
        return pool[offset : offset + n].reshape(dims)
    return np.resize(np.roll(pool, int(rng.integers(0, pool.size))), n).reshape(dims)


# (block bytes, offsets of the f16 scale fields, their values): a quantized weight is
# random bits with these super-block scales, giving weights of spread about _REAL_SCALE.
_Q = gguf.GGMLQuantizationType
_BLOCKS = {
    _Q.Q8_0: (34, {0: 2.7e-4}),  # d; w = d*q, q int8
    _Q.Q5_K: (176, {0: 6.1e-5, 2: 9.5e-4}),  # d, dmin; w = d*sc*q - dmin*m, 6-bit sc/m, q 0..31
    _Q.Q6_K: (210, {208: 1.5e-5}),  # d; w = d*sc*(q-32), sc int8, q 0..63
}


class _Weights:
    """Makes the text model's weights in one storage type."""

    def __init__(
        self,
        rng: np.random.Generator,
        weight_type: str,
        layout: list[tuple[str, tuple[int, ...], int]],
    ) -> None:
        self.rng = rng
        self.weight_type = weight_type
        self.pools: dict[object, np.ndarray] = {}
        if weight_type == "F16":
            self.pools["F16"] = _normal_pool(rng)
        self.need = {}
        for name, shape, layer in layout:
            qtype = self.quant_type(name, shape, layer, max(l for _, _, l in layout) + 1)
            if qtype is not None:
                n_blocks = int(np.prod(shape)) // gguf.GGML_QUANT_SIZES[qtype][0]
                self.need[qtype] = max(self.need.get(qtype, 0), n_blocks)

    def quant_type(self, name: str, shape: tuple[int, ...], layer: int, n_layer: int):
        """The llama-quantize type of a tensor, or None for a float tensor."""
        if len(shape) < 2 or self.weight_type in ("F32", "F16"):
            return None
        if self.weight_type == "Q8_0":
            return _Q.Q8_0 if shape[-1] % 32 == 0 else None
        # Q5_K_M
        if shape[-1] % 256 != 0:
            return _Q.Q8_0 if shape[-1] % 32 == 0 else None
        more_bits = layer >= 0 and (
            layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2
        )
        if name == "output.weight":
            return _Q.Q6_K
        if (name.endswith("attn_v.weight") or name.endswith("ffn_down.weight")) and more_bits:
            return _Q.Q6_K
        return _Q.Q5_K

    def add(
        self, writer: gguf.GGUFWriter, name: str, shape: tuple[int, ...], layer: int, n_layer: int
    ) -> None:
        if len(shape) == 1:
            writer.add_tensor(name, _ones(shape[0]))
            return
        qtype = self.quant_type(name, shape, layer, n_layer)
        if qtype is None:
            if self.weight_type == "F16":
                writer.add_tensor(name, _from_pool(self.pools["F16"], self.rng, shape).astype(np.float16))
            else:
                writer.add_tensor(name, _random(self.rng, *shape))
            return
        block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        pool = self._block_pool(qtype)
        n_blocks = int(np.prod(shape)) // block_values
        offset = int(self.rng.integers(0, pool.shape[0] - n_blocks + 1))
        rows = pool[offset : offset + n_blocks].reshape(shape[0], -1)
        writer.add_tensor(name, rows, raw_dtype=qtype)

    def _block_pool(self, qtype) -> np.ndarray:
        pool = self.pools.get(qtype)
        if pool is None:
            size, scales = _BLOCKS[qtype]
            n = self.need[qtype] + 4096
            pool = self.rng.integers(0, 256, size=(n, size), dtype=np.uint8)
            for offset, value in scales.items():
                pool[:, offset : offset + 2] = np.frombuffer(np.float16(value).tobytes(), np.uint8)
            self.pools[qtype] = pool
        return pool


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
