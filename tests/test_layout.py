"""The reference image-token layout (no model) and the projector file it reads."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from pipeline.caption.layout import AnyresGeometry, FrameLayout, select_best_resolution
from pipeline.caption.projector import (
    NATURAL,
    REVERSED,
    arrange,
    missing_patch,
    output_rows,
    read_projector,
    reference_copies,
)
from pipeline.caption.tiny import ensure_tiny_model
from pipeline.caption.weights import WeightsError

LLAVA16 = AnyresGeometry(336, 14, ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)))


@pytest.mark.parametrize(
    ("height", "width", "tokens", "grid"),
    [
        (360, 640, 576 + 28 * 49, (2, 2)),  # 1,948: the figure transformers gives
        (1080, 1920, 1948, (2, 2)),
        (640, 360, 576 + 48 * 29, (2, 2)),
        (528, 720, 576 + 36 * 49, (2, 2)),
        (336, 336, 576 + 24 * 25, (1, 2)),
        (100, 1000, 576 + 8 * 73, (1, 3)),
    ],
)
def test_token_counts_and_grids(height: int, width: int, tokens: int, grid: tuple[int, int]) -> None:
    layout = FrameLayout(LLAVA16)
    plan = layout.plan(height, width)
    assert (plan.grid_rows, plan.grid_cols) == grid
    assert layout.n_tokens(plan) == tokens
    tiles = layout.tiles(np.zeros((height, width, 3), np.uint8), plan)
    assert len(tiles) == 1 + plan.n_grid_tiles and all(t.shape == (336, 336, 3) for t in tiles)


def test_best_resolution_follows_the_reference_rule() -> None:
    assert select_best_resolution(360, 640, LLAVA16.pinpoints) == (672, 672)
    assert select_best_resolution(100, 1000, LLAVA16.pinpoints) == (336, 1008)
    assert select_best_resolution(336, 336, LLAVA16.pinpoints) == (336, 672)  # first of equals


def test_placement_puts_base_first_and_a_newline_after_every_kept_row() -> None:
    layout = FrameLayout(LLAVA16)
    plan = layout.plan(360, 640)
    placement = layout.placement(plan)
    tokens = np.full(layout.n_tokens(plan), -9)
    for tile, rows in enumerate(placement.tiles):
        tokens[rows[rows >= 0]] = tile
    tokens[placement.newlines] = -1
    assert tokens.shape == (1948,) and (tokens != -9).all()
    assert (tokens[:576] == 0).all()
    grid = tokens[576:].reshape(28, 49)
    assert (grid[:, 48] == -1).all()
    assert (grid[:14, :24] == 1).all() and (grid[:14, 24:48] == 2).all()  # kept rows 10..37: 14 from the top tiles
    assert (grid[14:, :24] == 3).all() and (grid[14:, 24:48] == 4).all()
    top_left = placement.tiles[1].reshape(24, 24)
    assert (top_left[:10] == -1).all() and top_left[10, 0] == 576  # the first kept row starts the grid


def test_arrangements_cover_every_patch_between_them() -> None:
    tile = np.random.default_rng(0).integers(0, 256, (336, 336, 3), dtype=np.uint8)
    reversed_tile = arrange(tile, 14, REVERSED)
    assert (arrange(reversed_tile, 14, REVERSED) == tile).all()
    assert (reversed_tile[:14, :14] == tile[-14:, -14:]).all()  # patch 575 first
    for arrangement in (NATURAL, REVERSED):
        patches = np.array([p for p in range(576) if p != missing_patch(arrangement, 576)])
        assert sorted(output_rows(arrangement, patches, 576)) == list(range(575))  # the last row is [CLS]'s
    assert {missing_patch(NATURAL, 576), missing_patch(REVERSED, 576)} == {0, 575}


def test_reference_copies_are_written_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    projector = read_projector(ensure_tiny_model(tiny_model_dir)[1])
    copies = reference_copies(projector, tmp_path)
    stamps = {a: p.stat().st_mtime_ns for a, p in copies.items()}
    assert reference_copies(projector, tmp_path) == copies
    assert {a: p.stat().st_mtime_ns for a, p in copies.items()} == stamps
    feature_layer = gguf.GGUFReader(copies[NATURAL]).get_field("clip.vision.feature_layer")
    assert feature_layer is not None and list(feature_layer.contents()) == [2]  # all stored layers run


def _copy_without(source: Path, out: Path, rename: dict[str, str | None]) -> Path:
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, "clip")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        new_name = rename.get(tensor.name, tensor.name)
        if new_name is not None:
            writer.add_tensor(new_name, np.array(tensor.data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def test_projector_newline_under_either_name_or_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    mmproj = ensure_tiny_model(tiny_model_dir)[1]
    old_name = _copy_without(mmproj, tmp_path / "old.gguf", {"v.image_newline": "model.image_newline"})
    assert read_projector(old_name).newline.shape == (64,)
    missing = _copy_without(mmproj, tmp_path / "missing.gguf", {"v.image_newline": None})
    with pytest.raises(WeightsError, match=r"no image_newline tensor .*model.image_layout=llamacpp"):
        read_projector(missing)
