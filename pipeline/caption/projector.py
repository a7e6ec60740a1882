"""The LLaVA 1.6 projector file (mmproj GGUF): what the reference layout needs from it, and
two derived copies that make llama.cpp's CLIP graph compute the reference's features.

llama.cpp's LLaVA CLIP graph (``tools/mtmd/models/llava.cpp`` in llama-cpp-python 0.3.36)
differs from the model as trained in two ways, besides the token layout:

- **One layer short.** The legacy converter that made the presets' mmproj files already drops
  CLIP's last layer (LLaVA takes the second-to-last layer's output) and records 23 layers;
  the graph then stops one layer earlier still (ggml-org/llama.cpp issue 25817). A
  ``clip.vision.feature_layer`` key set to the stored layer count makes it run them all.
- **[CLS] last.** The graph appends the class token after the 576 patches, but numbers
  positions and picks its outputs as if it came first (issue 25814): every patch gets its
  neighbour's position embedding, patch 0's output is dropped and [CLS]'s output is returned
  as the last image token. The attention is the same whatever the order, so a position table
  rearranged to the graph's order (``natural`` copy) makes every token's input, and so its
  output, equal the reference's; only patch 0's output stays missing. A second copy
  (``reversed``) expects the tile's patches in reverse order and misses patch 575 instead.
  The engine encodes with the copy that misses a patch the layout crops anyway, or with both
  (the base tile, which keeps every patch).

The copies are written once per mmproj content (named by its
:func:`~pipeline.caption.weights.model_fingerprint`) into the user's cache
(:func:`pipeline.paths.user_cache_dir`) and reused, also from a cache moved elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import gguf
import numpy as np

from pipeline.caption.layout import AnyresGeometry
from pipeline.caption.tiny import write_gguf
from pipeline.caption.weights import WeightsError, model_fingerprint, read_gguf
from pipeline.files import write_atomic
from pipeline.paths import writing_into

log = logging.getLogger(__name__)

NATURAL = "natural"
REVERSED = "reversed"
ARRANGEMENTS = (NATURAL, REVERSED)
# A later llama.cpp that fixes either defect changes what the copies must hold.
_COPY_VERSION = "1"
Value = TypeVar("Value")
_NEWLINE_NAMES = ("v.image_newline", "model.image_newline")


@dataclass(frozen=True)
class Projector:
    """What the reference layout reads from a LLaVA 1.6 mmproj file.

    Attributes:
        path: The file.
        geometry: Its anyres tiling.
        newline: Its ``image_newline`` vector (float32).
    """

    path: Path
    geometry: AnyresGeometry
    newline: np.ndarray


def read_projector(path: str | Path) -> Projector:
    """Read the reference layout's needs from a LLaVA 1.6 mmproj.

    Raises:
        WeightsError: The file is not a LLaVA 1.6 mmproj with anyres pinpoints,
            ``spatial_unpad`` and an ``image_newline`` tensor (one line naming what is missing
            and the way out).
    """
    path = Path(path)
    reader = read_gguf(path)
    fix = "use a LLaVA 1.6 mmproj, or model.image_layout=llamacpp"
    if _field(reader, "clip.projector_type", "mlp") != "mlp" or not _field(reader, "clip.has_llava_projector", True):
        raise WeightsError(f"{path.name} is not a LLaVA (MLP) projector; the reference image layout needs one; {fix}")
    pinpoints: list[int] = _field(reader, "clip.vision.image_grid_pinpoints", [])
    if not pinpoints or len(pinpoints) % 2:
        raise WeightsError(f"{path.name} has no anyres grid pinpoints (LLaVA 1.5?); {fix}")
    merge = _field(reader, "clip.vision.mm_patch_merge_type", "flat")
    if merge != "spatial_unpad":
        raise WeightsError(f"{path.name} has mm_patch_merge_type {merge!r}, not 'spatial_unpad'; {fix}")
    tensors = {t.name: t for t in reader.tensors}
    newline_tensor = next((tensors[n] for n in _NEWLINE_NAMES if n in tensors), None)
    if newline_tensor is None:
        raise WeightsError(
            f"{path.name} has no image_newline tensor ({' or '.join(_NEWLINE_NAMES)}); "
            f"the reference image layout needs it; {fix}"
        )
    geometry = AnyresGeometry(
        tile_px=int(_field(reader, "clip.vision.image_size", 0)),
        patch_px=int(_field(reader, "clip.vision.patch_size", 0)),
        pinpoints=tuple((int(pinpoints[i]), int(pinpoints[i + 1])) for i in range(0, len(pinpoints), 2)),
    )
    position = tensors.get("v.position_embd.weight")
    if "v.class_embd" not in tensors or position is None or int(position.shape[-1]) != geometry.tile_tokens + 1:
        raise WeightsError(
            f"{path.name}: expected a CLIP encoder with a class token and {geometry.tile_tokens + 1} positions; {fix}"
        )
    newline = np.array(newline_tensor.data, dtype=np.float32).reshape(-1)
    return Projector(path, geometry, newline)


def tile_tokens(path: str | Path) -> int:
    """Image tokens of one CLIP tile of any mmproj file (576 for ViT-L/14 at 336 px): the
    fewest a frame can take, in either image layout (every frame has its base tile)."""
    reader = read_gguf(path)
    side = int(_field(reader, "clip.vision.image_size", 0)) // max(int(_field(reader, "clip.vision.patch_size", 1)), 1)
    return side * side


def reference_copies(projector: Projector, cache_dir: Path) -> dict[str, Path]:
    """The derived copies of ``projector.path`` for each arrangement, written if missing.

    Returns:
        ``{NATURAL: path, REVERSED: path}``.

    Raises:
        WeightsError: A copy is missing and ``cache_dir`` cannot be written (permissions, a
            full disk or quota: :func:`pipeline.paths.writing_into`).
    """
    source = projector.path.resolve()
    key = hashlib.sha256(f"{_COPY_VERSION}:{model_fingerprint(source)}".encode()).hexdigest()[:12]
    folder = cache_dir / "projectors"
    copies = {a: folder / f"{source.stem}-{key}-{a}.gguf" for a in ARRANGEMENTS}
    missing = [a for a, p in copies.items() if not p.is_file()]  # a named pipe there is not read: writing says so
    if missing:
        log.info("writing the reference-layout copies of %s into %s (once per file)", source.name, folder)
        reader = read_gguf(source)
        with writing_into(folder, f"the reference-layout copies of {source.name}", WeightsError):
            folder.mkdir(parents=True, exist_ok=True)
            for arrangement in missing:
                _write_copy(reader, copies[arrangement], arrangement, projector.geometry.tile_tokens)
    return copies


def arrange(tile: np.ndarray, patch_px: int, arrangement: str) -> np.ndarray:
    """The tile as fed to the graph for ``arrangement``: its patches in row-major order, or
    that order reversed (each patch's pixels untouched)."""
    if arrangement == NATURAL:
        return np.ascontiguousarray(tile)
    side = tile.shape[0] // patch_px
    blocks = (
        tile.reshape(side, patch_px, side, patch_px, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(side * side, patch_px, patch_px, 3)
    )
    return np.ascontiguousarray(
        blocks[::-1].reshape(side, side, patch_px, patch_px, 3).transpose(0, 2, 1, 3, 4).reshape(tile.shape)
    )


def output_rows(arrangement: str, patches: np.ndarray, n_patches: int) -> np.ndarray:
    """The graph's output rows that hold ``patches`` (row-major indices within the tile, none
    of them the arrangement's :func:`missing_patch`); its last row is [CLS]'s."""
    return patches - 1 if arrangement == NATURAL else n_patches - 2 - patches


def missing_patch(arrangement: str, n_patches: int) -> int:
    """The patch whose output the graph does not return for ``arrangement``."""
    return 0 if arrangement == NATURAL else n_patches - 1


def _write_copy(reader: gguf.GGUFReader, path: Path, arrangement: str, n_patches: int) -> None:
    """Write ``reader``'s file with the position table of ``arrangement`` and every stored
    CLIP layer run, atomically (:func:`pipeline.files.write_atomic`)."""
    arch = str(_field(reader, "general.architecture", "clip"))

    def write(temporary: Path) -> None:
        writer = gguf.GGUFWriter(temporary, arch)
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name in ("general.architecture", "clip.vision.feature_layer"):
                continue
            if name == "general.alignment":
                writer.add_custom_alignment(int(field.contents()))
            elif field.types[0] == gguf.GGUFValueType.ARRAY:
                writer.add_key_value(name, field.contents(), field.types[0], sub_type=field.types[-1])
            else:
                writer.add_key_value(name, field.contents(), field.types[0])
        writer.add_array("clip.vision.feature_layer", [int(_field(reader, "clip.vision.block_count", 0))])
        for tensor in reader.tensors:
            data = tensor.data
            if tensor.name == "v.position_embd.weight":
                data = _graph_positions(np.array(data), arrangement, n_patches)
            writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
        write_gguf(writer)  # a full disk says so (gguf's own tensor writes lose the errno)

    write_atomic(path, write)


def _graph_positions(table: np.ndarray, arrangement: str, n_patches: int) -> np.ndarray:
    """The position table as llama.cpp's graph indexes it: slot ``i < n_patches`` holds the
    arrangement's i-th patch, whose reference position is its index + 1; the last slot holds
    [CLS], whose reference position is 0."""
    rows = table.reshape(n_patches + 1, -1)
    order = np.arange(n_patches) if arrangement == NATURAL else np.arange(n_patches)[::-1]
    return np.ascontiguousarray(np.concatenate([rows[order + 1], rows[:1]]).reshape(table.shape))


def _field(reader: gguf.GGUFReader, key: str, default: Value) -> Value:
    """A metadata value (of the default's type), or ``default`` when the key is absent."""
    field = reader.get_field(key)
    return default if field is None else cast(Value, field.contents())
