"""A tiny random-weight LLaVA 1.6 model pair, generated locally, and the GGUF layout it shares
with the benchmarks' real-shaped random models.

The pair is a llama-architecture text model with a SentencePiece (SPM) tokenizer and a CLIP
vision encoder with LLaVA's two-layer MLP projector, laid out exactly like the GGUF files of
the real LLaVA 1.6 models as llama.cpp's legacy converter wrote them (same tensor names and
metadata keys, 336-pixel tiles of 24x24 patches, the LLaVA 1.6 grid pinpoints, ``spatial_unpad``,
the ``image_newline`` vector, quick-GELU, CLIP's last layer dropped), only with a few thousand
times fewer weights, all drawn from a fixed-seed random generator. Its answers are gibberish,
but captioning a frame runs the same llama-cpp-python code path (``mtmd`` preprocessing, CLIP,
projection, decoding) as the real model, in a fraction of a second on a CPU and with nothing
to download. Tests use it, and so do ``model=tiny`` and the reference-parity fixture
(``benchmarks/reference_parity.py`` loads the same weights into transformers).

Generation is deterministic: the same code writes the same bytes. The file names carry a
version suffix (``_VERSION``); bump it whenever the generator changes so that caches made by
an older generator are not reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from pipeline.caption.convert import llama_quantize
from pipeline.files import write_atomic

_VERSION = "v2"
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
    """Geometry of a CLIP ViT encoder with 336-pixel tiles of 14-pixel patches.

    ``n_layer`` counts the layers stored in the mmproj: the model's layers minus the last one,
    which LLaVA does not use (its features are the second-to-last layer's output).
    """

    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int


TINY_TEXT = TextShape(n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=128)
TINY_VISION = VisionShape(n_embd=32, n_ff=48, n_layer=2, n_head=4)
RMS_EPS = 1e-5

# Vision encoder input (the geometry of ViT-L/14-336) and projector.
IMAGE_SIZE = 336
PATCH_SIZE = 14
LAYER_NORM_EPS = 1e-5
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
GRID_PINPOINTS = [336, 672, 672, 336, 672, 672, 1008, 336, 336, 1008]

FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q5_K_M": gguf.LlamaFileType.MOSTLY_Q5_K_M,
}

# Adds one text-model weight: (writer, name, numpy shape, layer, n_layer); layer -1: not in a block.
AddWeight = Callable[[gguf.GGUFWriter, str, tuple[int, ...], int, int], None]
# Draws a float32 weight of a numpy shape.
Draw = Callable[..., np.ndarray]

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
    rng = np.random.default_rng(_SEED)

    def add_weight(writer: gguf.GGUFWriter, name: str, shape: tuple[int, ...], layer: int, n_layer: int) -> None:
        writer.add_tensor(name, _ones(shape[0]) if len(shape) == 1 else _random(rng, *shape))

    text_path = _ensure_file(
        cache_dir / TINY_TEXT_FILE,
        lambda out: write_text_model(out, TINY_TEXT, "F32", "tiny-llava-text", add_weight),
    )
    vision_rng = np.random.default_rng(_SEED + 1)
    mmproj_path = _ensure_file(
        cache_dir / TINY_MMPROJ_FILE,
        lambda out: write_mmproj(
            out, TINY_VISION, TINY_TEXT.n_embd, "F32", "tiny-llava-mmproj", lambda *dims: _random(vision_rng, *dims)
        ),
    )
    if quantized:
        source = text_path
        text_path = _ensure_file(
            cache_dir / TINY_TEXT_Q8_FILE, lambda out: llama_quantize(source, out, FILE_TYPES["Q8_0"])
        )
    return text_path, mmproj_path


def pattern_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic test picture (``height x width x 3`` uint8): gradients, a grid of
    discs and seeded noise, so that every tile of every layout differs."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cell = max(min(height, width) / 6.0, 4.0)
    discs = (((x % cell) - cell / 2) ** 2 + ((y % cell) - cell / 2) ** 2) < (cell / 3) ** 2
    picture = np.stack(
        [255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 100 * discs - 50 * (x > y)], axis=-1
    )
    noise = np.random.default_rng(seed).normal(0.0, 12.0, picture.shape)
    return np.clip(picture + noise, 0, 255).astype(np.uint8)


def write_text_model(path: Path, shape: TextShape, weight_type: str, name: str, add_weight: AddWeight) -> None:
    """Write a llama-architecture text model with its SPM tokenizer; ``add_weight`` makes
    each tensor (in the order llama.cpp's LLM_ARCH_LLAMA loads them)."""
    if weight_type not in FILE_TYPES:
        raise ValueError(f"text_type must be one of {sorted(FILE_TYPES)}, got {weight_type!r}")
    tokens, scores, token_types = vocab(shape.vocab_size)
    writer = gguf.GGUFWriter(None, "llama")
    writer.add_name(name)
    writer.add_description("Random-weight LLaVA 1.6 text model for tests")
    writer.add_file_type(FILE_TYPES[weight_type])
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_rope_freq_base(shape.rope_freq_base)
    writer.add_layer_norm_rms_eps(RMS_EPS)
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

    for tensor_name, tensor_shape, layer in text_layout(shape, len(tokens)):
        add_weight(writer, tensor_name, tensor_shape, layer, shape.n_layer)
    write_gguf(writer, path)


def write_mmproj(path: Path, shape: VisionShape, text_embd: int, weight_type: str, name: str, draw: Draw) -> None:
    """Write the CLIP vision encoder + MLP projector in LLaVA 1.6's mmproj layout, as
    llama.cpp's legacy converter (``convert_image_encoder_to_gguf.py``) wrote the presets'
    files: the stored layers counted in ``block_count``, no ``feature_layer`` key."""
    if weight_type not in ("F32", "F16"):
        raise ValueError(f"vision_type must be F32 or F16, got {weight_type!r}")
    writer = gguf.GGUFWriter(None, "clip")
    writer.add_name(name)
    writer.add_description("image encoder for LLaVA")
    writer.add_file_type(FILE_TYPES[weight_type])
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", False)  # CLIP ViT-L/14-336's quick-GELU
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", shape.n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", shape.n_ff)
    writer.add_uint32("clip.vision.projection_dim", text_embd)
    writer.add_uint32("clip.vision.attention.head_count", shape.n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", LAYER_NORM_EPS)
    writer.add_uint32("clip.vision.block_count", shape.n_layer)
    writer.add_array("clip.vision.image_mean", CLIP_MEAN)
    writer.add_array("clip.vision.image_std", CLIP_STD)
    writer.add_string("clip.vision.mm_patch_merge_type", "spatial_unpad")
    writer.add_array("clip.vision.image_grid_pinpoints", GRID_PINPOINTS)
    for tensor_name, tensor in mmproj_tensors(shape, text_embd, draw):
        if weight_type == "F16" and tensor.ndim >= 2 and tensor_name != "v.position_embd.weight":
            tensor = tensor.astype(np.float16)
        writer.add_tensor(tensor_name, tensor)
    write_gguf(writer, path)


def mmproj_tensors(shape: VisionShape, text_embd: int, draw: Draw) -> list[tuple[str, np.ndarray]]:
    """The mmproj's tensors, named as tools/mtmd/clip.cpp loads them for projector "mlp",
    drawn in a fixed order.

    llama.cpp treats most of them as optional but then dereferences them in the graph, so a
    missing one crashes instead of raising: every tensor of a real LLaVA 1.6 mmproj is here.
    """
    embd, ff = shape.n_embd, shape.n_ff
    n_positions = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1  # patches + class token
    tensors = [
        ("v.class_embd", draw(embd)),
        ("v.patch_embd.weight", draw(embd, 3, PATCH_SIZE, PATCH_SIZE)),
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
        ("v.image_newline", draw(text_embd)),
    ]
    return tensors


def vocab(vocab_size: int | None = None) -> tuple[list[str], list[float], list[int]]:
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


def text_layout(shape: TextShape, n_vocab: int) -> list[tuple[str, tuple[int, ...], int]]:
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




def _ensure_file(path: Path, write: Callable[[Path], None]) -> Path:
    """Make ``path`` with ``write`` unless it is there, atomically (a concurrent reader sees
    either no file or the whole file).

    Raises:
        NotAFile: Something other than a file stands there (:func:`pipeline.files.write_atomic`).
    """
    if not path.is_file():
        write_atomic(path, write)
    return path


def write_gguf(writer: gguf.GGUFWriter, path: Path | None = None) -> None:
    """Write a filled-in writer's header, metadata and tensors to ``path`` (default: the path
    it was made with) and close it.

    The tensors go through Python's file writes, so that a full disk raises ``OSError``
    ``[Errno 28] No space left on device`` (or ``EDQUOT``), which
    :func:`pipeline.paths.not_writable` knows: gguf writes them with numpy's ``tofile``, whose
    short write says only ``4096 requested and 904 written``, without the reason.
    """
    for tensors in writer.tensors:
        for info in tensors.values():
            if isinstance(info.tensor, np.ndarray):
                info.tensor = info.tensor.view(_PythonWrites)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


class _PythonWrites(np.ndarray):
    """An array whose ``tofile`` writes through the file object (see :func:`write_gguf`)."""

    def tofile(self, fid: Any, sep: str = "", format: str = "%s") -> None:
        """Write the array's bytes in C order to the open binary file ``fid``."""
        fid.write(np.ascontiguousarray(self.view(np.ndarray)).reshape(-1).view(np.uint8).data)


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Normal random weights of the given numpy shape (reversed ggml ``ne``), as float32."""
    return rng.normal(0.0, _WEIGHT_STD, size=shape).astype(np.float32)


def _ones(n: int) -> np.ndarray:
    """A norm weight (scale 1)."""
    return np.ones(n, dtype=np.float32)


def _zeros(n: int) -> np.ndarray:
    """A norm bias (shift 0)."""
    return np.zeros(n, dtype=np.float32)
