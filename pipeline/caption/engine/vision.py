"""Frame preparation and CLIP: an RGB frame in, the image's input embeddings for the text
model out, in the reference layout of LLaVA 1.6 or in llama.cpp's own.

Preparation (CPU) cuts the frame into tiles and has ``mtmd`` turn each into a normalised
image chunk; encoding runs CLIP on the chunks and, for the reference layout, arranges the
features (base tile, unpadded grid, newlines: :mod:`pipeline.caption.layout`). The reference
layout encodes through the derived projector copies of :mod:`pipeline.caption.projector`,
which make llama.cpp's CLIP graph compute the reference's per-patch features.
"""

from __future__ import annotations

import ctypes
import queue
import time
from dataclasses import dataclass, field

import llama_cpp.mtmd_cpp as mtmd
import numpy as np

from pipeline.caption.engine.native import TextModel, held_errors, said_by_llama_cpp
from pipeline.caption.engine.records import EngineError, EngineStats
from pipeline.caption.layout import FrameLayout, FramePlan, Placement
from pipeline.caption.projector import (
    ARRANGEMENTS,
    NATURAL,
    REVERSED,
    Projector,
    arrange,
    missing_patch,
    output_rows,
    read_projector,
    reference_copies,
    tile_tokens,
)
from pipeline.paths import user_cache_dir

# Natural and reversed copies of one tile agree to this (relative) if the graph is the one
# the copies were made for; a different graph gives disagreement near 1.
_SELF_CHECK_TOLERANCE = 0.02


@dataclass
class _Piece:
    """One tile (in one arrangement) that mtmd has preprocessed, waiting for CLIP."""

    chunks: object  # the mtmd_input_chunks that own the chunk
    chunk: object
    context: str  # which mtmd context of a set encodes it: an arrangement, or "" for llama.cpp's layout
    take: _Take | None = None  # reference layout: which output rows go where


@dataclass(frozen=True, eq=False)
class _Take:
    """Which rows of one CLIP run the reference layout keeps, and where they go."""

    tile: int
    arrangement: str
    source: np.ndarray  # rows of the graph's output
    target: np.ndarray  # rows of the frame's image tokens


@dataclass
class FrameImage:
    """One frame's image, preprocessed.

    Attributes:
        n_tokens: Image tokens it takes in the prompt.
        pieces: The chunks to encode.
        plan: The reference layout's plan (``None`` for llama.cpp's layout).
    """

    n_tokens: int
    pieces: list[_Piece] = field(default_factory=list)
    plan: FramePlan | None = None


class Vision:
    """The projector side of the model: mtmd context(s), tiling, CLIP, the token layout.

    An mtmd context encodes one image at a time; with ``encoders`` > 1 there are that many
    sets of contexts, so that as many threads can CLIP-encode frames at once (each frame on a
    free set; the graph and so the features are the same on every set). Preprocessing
    (``mtmd_tokenize`` takes a const context) runs on the first set from any thread.

    Args:
        mmproj: The projector file.
        image_layout: ``reference`` or ``llamacpp``.
        model: The loaded text model (mtmd checks the projector fits it).
        n_threads: CPU threads for CLIP.
        flash_attn: llama.cpp's flash-attention switch.
        encoders: Sets of contexts, frames encoded at once.

    Raises:
        WeightsError: ``reference`` with a projector that is not LLaVA 1.6.
        EngineError: A projector file does not load, or the graph is not the one the
            reference copies were made for.
    """

    def __init__(
        self, mmproj: str, image_layout: str, model: TextModel, n_threads: int, flash_attn: int, encoders: int = 1
    ) -> None:
        self._n_embd = model.n_embd
        self._sets: list[dict[str, object]] = []
        self._free_sets: queue.SimpleQueue[dict[str, object]] = queue.SimpleQueue()
        self._projector: Projector | None = None
        self._layout: FrameLayout | None = None
        self._recipes: dict[FramePlan, tuple[Placement, list[_Take]]] = {}
        try:
            if image_layout == "reference":
                self._projector = read_projector(mmproj)
                self._layout = FrameLayout(self._projector.geometry)
                if self._projector.newline.shape[0] != self._n_embd:
                    raise EngineError(
                        f"{mmproj}: image_newline has {self._projector.newline.shape[0]} values, "
                        f"the text model embeds {self._n_embd}"
                    )
                paths = {name: str(path) for name, path in reference_copies(self._projector, user_cache_dir()).items()}
            else:
                paths = {"": mmproj}
            for _ in range(encoders):
                contexts: dict[str, object] = {}
                self._sets.append(contexts)
                for name, path in paths.items():
                    contexts[name] = _load(path, model, n_threads, flash_attn)
                self._free_sets.put(contexts)
            if self._layout is not None:
                self._self_check()
            # The fewest image tokens a frame can take: its base tile (the reference layout
            # may crop every grid row of a very wide or tall frame).
            self.min_image_tokens = self._layout.geometry.tile_tokens if self._layout else tile_tokens(mmproj)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Free the mtmd contexts (safe to call twice)."""
        for contexts in self._sets:
            for context in contexts.values():
                mtmd.mtmd_free(context)
        self._sets = []

    def tokenize(self, rgb: np.ndarray, stats: EngineStats) -> FrameImage:
        """Tile and preprocess a frame (CPU work, no CLIP).

        Raises:
            ValueError: ``rgb`` is not an ``HxWx3`` uint8 array, or mtmd rejects it.
        """
        t0 = time.perf_counter()
        _check_frame(rgb)
        if self._layout is None:
            image = FrameImage(0, pieces=self._pieces(np.ascontiguousarray(rgb), ""))
            image.n_tokens = sum(mtmd.mtmd_input_chunk_get_n_tokens(p.chunk) for p in image.pieces)
        else:
            layout = self._layout
            plan = layout.plan(rgb.shape[0], rgb.shape[1])
            image = FrameImage(layout.n_tokens(plan), plan=plan)
            try:
                tiles = layout.tiles(rgb, plan)
                for take in self._recipe(plan)[1]:
                    tile_in = arrange(tiles[take.tile], layout.geometry.patch_px, take.arrangement)
                    image.pieces += self._pieces(tile_in, take.arrangement, take)
            except BaseException:
                self.free(image)
                raise
        stats.tokenize_s += time.perf_counter() - t0
        return image

    def encode(self, image: FrameImage, out: np.ndarray, stats: EngineStats) -> np.ndarray:
        """CLIP-encode the image into ``out`` (at least ``n_tokens x n_embd`` float32) and
        return its filled rows; the pieces are freed.

        Raises:
            EngineError: An encode failed.
        """
        t0 = time.perf_counter()
        contexts = self._free_sets.get()
        try:
            if image.plan is None:
                row = 0
                for piece in image.pieces:
                    n = _encode_piece(contexts, piece)
                    ctypes.memmove(
                        out[row:].ctypes.data, mtmd.mtmd_get_output_embd(contexts[""]), n * self._n_embd * 4
                    )
                    row += n
                result = out[:row]
            else:
                result = self._encode_reference(contexts, image, image.plan, out)
        finally:
            self._free_sets.put(contexts)
            self.free(image)
        stats.clip_s += time.perf_counter() - t0
        return result

    def free(self, image: FrameImage) -> None:
        """Free the image's chunks (safe to call twice)."""
        for piece in {id(p.chunks): p for p in image.pieces}.values():
            mtmd.mtmd_input_chunks_free(piece.chunks)
        image.pieces = []

    # -- the reference layout ------------------------------------------------------------

    def _encode_reference(
        self, contexts: dict[str, object], image: FrameImage, plan: FramePlan, out: np.ndarray
    ) -> np.ndarray:
        assert self._projector is not None
        n_patches = self._projector.geometry.tile_tokens
        for piece in image.pieces:
            assert piece.take is not None
            _encode_piece(contexts, piece)
            out[piece.take.target] = self._output_rows(contexts[piece.context], n_patches)[piece.take.source]
        out[self._recipe(plan)[0].newlines] = self._projector.newline
        return out[: image.n_tokens]

    def _recipe(self, plan: FramePlan) -> tuple[Placement, list[_Take]]:
        """The frame size's placement and CLIP runs: per tile, the arrangement(s) whose
        outputs cover its features the layout keeps (the base tile needs both)."""
        recipe = self._recipes.get(plan)
        if recipe is None:
            assert self._layout is not None
            placement = self._layout.placement(plan)
            n_patches = self._layout.geometry.tile_tokens
            takes = []
            for index, targets in enumerate(placement.tiles):
                needed = targets >= 0
                if not needed[missing_patch(NATURAL, n_patches)]:
                    order: tuple[str, ...] = (NATURAL,)
                elif not needed[missing_patch(REVERSED, n_patches)]:
                    order = (REVERSED,)
                else:
                    order = ARRANGEMENTS
                for arrangement in order:
                    patches = np.flatnonzero(needed)
                    patches = patches[patches != missing_patch(arrangement, n_patches)]
                    if patches.size:
                        takes.append(
                            _Take(index, arrangement, output_rows(arrangement, patches, n_patches), targets[patches])
                        )
                        needed[patches] = False
            if len(self._recipes) > 32:
                self._recipes.clear()
            recipe = self._recipes[plan] = (placement, takes)
        return recipe

    def _self_check(self) -> None:
        """Encode one test tile in both arrangements; their shared patches must agree (on the
        first set: the others run the same graph)."""
        assert self._layout is not None
        geometry = self._layout.geometry
        n = geometry.tile_tokens
        tile_px = geometry.tile_px
        y, x = np.mgrid[0:tile_px, 0:tile_px]
        tile = np.stack([x * 255 // tile_px, y * 255 // tile_px, (x * y) % 256], axis=-1).astype(np.uint8)
        seen = {}
        shared = np.arange(1, n - 1)  # patches both arrangements return
        contexts = self._sets[0]
        for arrangement in ARRANGEMENTS:
            (piece,) = self._pieces(arrange(tile, geometry.patch_px, arrangement), arrangement)
            try:
                _encode_piece(contexts, piece)
                seen[arrangement] = self._output_rows(contexts[arrangement], n)[output_rows(arrangement, shared, n)]
            finally:
                mtmd.mtmd_input_chunks_free(piece.chunks)
        a, b = seen[NATURAL], seen[REVERSED]
        difference = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
        if not difference < _SELF_CHECK_TOLERANCE:
            raise EngineError(
                "llama.cpp's CLIP graph is not the one the reference image layout was built for "
                f"(a tile's features differ by {difference:.2f} between arrangements); "
                "use model.image_layout=llamacpp or the pinned llama-cpp-python"
            )

    # -- mtmd -----------------------------------------------------------------------------

    def _pieces(self, rgb: np.ndarray, context: str, take: _Take | None = None) -> list[_Piece]:
        """mtmd's image chunks of one picture (the whole frame, or one tile)."""
        height, width = rgb.shape[:2]
        bitmap = mtmd.mtmd_bitmap_init(width, height, rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        if not bitmap:
            raise ValueError(f"mtmd could not take a {width}x{height} image")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            text = mtmd.mtmd_default_marker()
            input_text = mtmd.mtmd_input_text()
            input_text.text = text
            input_text.text_len = len(text)
            input_text.add_special = False
            input_text.parse_special = True
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = mtmd.mtmd_tokenize(self._sets[0][context], chunks, ctypes.byref(input_text), bitmaps, 1)
        finally:
            mtmd.mtmd_bitmap_free(bitmap)
        if status != 0:
            mtmd.mtmd_input_chunks_free(chunks)
            raise ValueError(f"mtmd could not tokenize the image (status {status})")
        found = [mtmd.mtmd_input_chunks_get(chunks, i) for i in range(mtmd.mtmd_input_chunks_size(chunks))]
        images = [c for c in found if mtmd.mtmd_input_chunk_get_type(c) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE]
        return [_Piece(chunks, chunk, context, take) for chunk in images]

    def _output_rows(self, context: object, n_patches: int) -> np.ndarray:
        """The last encode's patch rows of a reference context (its [CLS] row dropped)."""
        embd = mtmd.mtmd_get_output_embd(context)
        return np.ctypeslib.as_array(embd, shape=(n_patches, self._n_embd))[: n_patches - 1]


def _encode_piece(contexts: dict[str, object], piece: _Piece) -> int:
    """Run CLIP on one chunk with its context of ``contexts`` (a set no other thread uses
    meanwhile); its output waits in the context's buffer. Returns its rows."""
    if mtmd.mtmd_encode_chunk(contexts[piece.context], piece.chunk) != 0:
        raise EngineError("CLIP image encode failed")
    return int(mtmd.mtmd_input_chunk_get_n_tokens(piece.chunk))


def _load(path: str, model: TextModel, n_threads: int, flash_attn: int) -> object:
    """An mtmd context for a projector file (LLaVA-style images only).

    Raises:
        EngineError: It does not load, has no vision encoder, or needs a decoding this engine
            does not do (M-RoPE positions, non-causal attention).
    """
    params = mtmd.mtmd_context_params_default()
    params.use_gpu = model.on_gpu
    params.print_timings = False
    params.n_threads = n_threads
    params.flash_attn_type = flash_attn
    params.warmup = False
    with held_errors() as said:
        context = mtmd.mtmd_init_from_file(path.encode(), model.handle, params)
        if not context:
            raise EngineError(f"mmproj failed to load: {path}{said_by_llama_cpp(said)}")
    if not mtmd.mtmd_support_vision(context) or mtmd.mtmd_decode_use_mrope(context):
        mtmd.mtmd_free(context)
        raise EngineError(f"mmproj is not a LLaVA-style vision projector: {path}")
    return context


def _check_frame(rgb: object) -> None:
    if not (
        isinstance(rgb, np.ndarray)
        and rgb.dtype == np.uint8
        and rgb.ndim == 3
        and rgb.shape[2] == 3
        and rgb.shape[0] > 0
        and rgb.shape[1] > 0
    ):
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(f"frame must be an HxWx3 uint8 RGB array, got {shape} {dtype}")
