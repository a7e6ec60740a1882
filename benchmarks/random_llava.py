"""Random-weight LLaVA 1.6 pairs of the real shapes, for GPU benchmarks.

The text model is written directly in the storage type of the real files (Q5_K_M: random
quant blocks with sane scales, laid out as ``llama-quantize`` would) and the CLIP mmproj in
F16, so a Mistral-7B- or Yi-34B-shaped pair runs at the real models' speed without the real
weights. The GGUF layout is the tiny model's (:mod:`pipeline.caption.tiny`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np

from pipeline.caption.tiny import (
    TINY_TEXT,
    TINY_VISION,
    TextShape,
    VisionShape,
    text_layout,
    vocab,
    write_mmproj,
    write_text_model,
)
from pipeline.files import write_atomic

MISTRAL_7B_TEXT = TextShape(4096, 32, 32, 8, 14336, 32768, 1000000.0, 32000)
YI_34B_TEXT = TextShape(7168, 60, 56, 8, 20480, 4096, 5000000.0, 64000)
CLIP_VIT_L_336 = VisionShape(n_embd=1024, n_ff=4096, n_layer=23, n_head=16)  # LLaVA keeps 23 of 24

_SEED = 20240612
# Drawing billions of normals would take minutes, and random weights only have to be the
# right size and finite, so big tensors are cut from a pool of draws at random offsets, and
# quantized tensors are random bytes with sane block scales.
_POOL_SIZE = 1 << 24
_REAL_SCALE = 0.02  # weight spread of the big random models (keeps 30-60 layers finite)

# (block bytes, offsets of the f16 scale fields, their values): a quantized weight is
# random bits with these super-block scales, giving weights of spread about _REAL_SCALE.
_Q = gguf.GGMLQuantizationType
_BLOCKS = {
    _Q.Q8_0: (34, {0: 2.7e-4}),  # d; w = d*q, q int8
    _Q.Q5_K: (176, {0: 6.1e-5, 2: 9.5e-4}),  # d, dmin; w = d*sc*q - dmin*m, 6-bit sc/m, q 0..31
    _Q.Q6_K: (210, {208: 1.5e-5}),  # d; w = d*sc*(q-32), sc int8, q 0..63
}


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

    Args:
        folder: Where to write; created if needed. Files are overwritten.
        text_shape: The text model's geometry.
        vision_shape: The CLIP encoder's geometry.
        vocab_size: Pad the vocabulary to this many tokens (the real models' 32000 or 64000
            makes the output layer the real size); ``None`` keeps ``text_shape.vocab_size``.
        text_embd: Override ``text_shape.n_embd`` (the projector follows it).
        text_type: ``F32`` or ``F16`` (normal draws), ``Q8_0`` or ``Q5_K_M`` (random quant
            blocks: Q5_K_M puts ``output``, and ``attn_v``/``ffn_down`` of the "more bits"
            layers, in Q6_K).
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
    rng = np.random.default_rng(_SEED)
    weights = _Weights(rng, text_type, text_layout(text_shape, len(vocab(text_shape.vocab_size)[0])))
    text_path = folder / f"{name}-text-{text_type}.gguf"
    write_atomic(
        text_path,
        lambda out: write_text_model(out, text_shape, text_type, f"{name}-text", weights.add),
    )
    pool = _normal_pool(rng)
    mmproj_path = folder / f"{name}-mmproj-{vision_type}.gguf"
    write_atomic(
        mmproj_path,
        lambda out: write_mmproj(
            out,
            vision_shape,
            text_shape.n_embd,
            vision_type,
            f"{name}-mmproj",
            lambda *dims: _from_pool(pool, rng, dims),
        ),
    )
    return text_path, mmproj_path


def _normal_pool(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, _REAL_SCALE, size=_POOL_SIZE).astype(np.float32)


def _from_pool(pool: np.ndarray, rng: np.random.Generator, dims: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(dims))
    if n <= pool.size:
        offset = int(rng.integers(0, pool.size - n + 1))
        return pool[offset : offset + n].reshape(dims)
    return np.resize(np.roll(pool, int(rng.integers(0, pool.size))), n).reshape(dims)


class _Weights:
    """Makes the text model's weights in one storage type."""

    def __init__(
        self, rng: np.random.Generator, weight_type: str, layout: list[tuple[str, tuple[int, ...], int]]
    ) -> None:
        self.rng = rng
        self.weight_type = weight_type
        self.pools: dict[object, np.ndarray] = {"float": _normal_pool(rng)}
        self.need: dict[object, int] = {}
        n_layer = max(layer for _, _, layer in layout) + 1
        for name, shape, layer in layout:
            qtype = self.quant_type(name, shape, layer, n_layer)
            if qtype is not None:
                n_blocks = int(np.prod(shape)) // gguf.GGML_QUANT_SIZES[qtype][0]
                self.need[qtype] = max(self.need.get(qtype, 0), n_blocks)

    def quant_type(
        self, name: str, shape: tuple[int, ...], layer: int, n_layer: int
    ) -> gguf.GGMLQuantizationType | None:
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

    def add(self, writer: gguf.GGUFWriter, name: str, shape: tuple[int, ...], layer: int, n_layer: int) -> None:
        """Add one tensor to ``writer`` (the tiny model's ``AddWeight``)."""
        if len(shape) == 1:
            writer.add_tensor(name, np.ones(shape[0], np.float32))
            return
        qtype = self.quant_type(name, shape, layer, n_layer)
        if qtype is None:
            values = _from_pool(self.pools["float"], self.rng, shape)
            writer.add_tensor(name, values.astype(np.float16) if self.weight_type == "F16" else values)
            return
        block_values, _ = gguf.GGML_QUANT_SIZES[qtype]
        pool = self._block_pool(qtype)
        n_blocks = int(np.prod(shape)) // block_values
        offset = int(self.rng.integers(0, pool.shape[0] - n_blocks + 1))
        rows = pool[offset : offset + n_blocks].reshape(shape[0], -1)
        writer.add_tensor(name, rows, raw_dtype=qtype)

    def _block_pool(self, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
        pool = self.pools.get(qtype)
        if pool is None:
            size, scales = _BLOCKS[qtype]
            n = self.need[qtype] + 4096
            pool = self.rng.integers(0, 256, size=(n, size), dtype=np.uint8)
            for offset, value in scales.items():
                pool[:, offset : offset + 2] = np.frombuffer(np.float16(value).tobytes(), np.uint8)
            self.pools[qtype] = pool
        return pool
