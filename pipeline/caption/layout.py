"""LLaVA 1.6's image-token layout, as the model was trained ("anyres" + "spatial_unpad").

A frame becomes a *base* tile (the whole frame squashed to 336x336) and a grid of 336x336
tiles cut from the frame resized to the best of the model's grid resolutions ("pinpoints")
and padded with black. Each tile yields a 24x24 map of features. The reference
implementation (the LLaVA authors' code, transformers' ``LlavaNextModel.pack_image_features``)
places the grid's maps side by side as one spatial map, cuts away the rows or columns that
only hold padding, appends the learned ``image_newline`` vector after every row, and puts the
base tile's 576 features first (:meth:`FrameLayout.placement` says where each feature goes).
A 640x360 frame is 576 + 28 x (48 + 1) = 1,948 tokens.

llama.cpp's ``mtmd`` instead feeds every tile's 576 features one after another (2,880 tokens
for the same frame, no unpad, no newline): ``FrameLayout`` below knows both, and the engine
builds the reference one from mtmd's per-tile features.

The tiles are made here with Pillow's bicubic filter, the resampling of transformers'
``LlavaNextImageProcessor`` (its PIL backend), so the pixels match the reference exactly.
Everything here is numpy and Pillow: no llama.cpp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AnyresGeometry:
    """The projector's tiling: tile and patch size, and the grid resolutions it may use.

    Attributes:
        tile_px: Side of a square tile in pixels (336 for CLIP ViT-L/14-336).
        patch_px: Side of a CLIP patch in pixels (14).
        pinpoints: The grid resolutions as ``(height, width)`` pairs, in the projector's order
            (it breaks ties).
    """

    tile_px: int
    patch_px: int
    pinpoints: tuple[tuple[int, int], ...]

    @property
    def side(self) -> int:
        """Features per tile side (24)."""
        return self.tile_px // self.patch_px

    @property
    def tile_tokens(self) -> int:
        """Features per tile (576)."""
        return self.side * self.side


@dataclass(frozen=True)
class FramePlan:
    """How one frame is tiled and which grid features the reference layout keeps.

    Attributes:
        height, width: The frame's size.
        grid_rows, grid_cols: Tiles of the grid (the base tile is not counted).
        resized: ``(height, width)`` of the frame resized into the chosen resolution.
        offset: ``(top, left)`` where the resized frame sits in the black canvas.
        kept_rows: ``(first, end)`` feature rows of the grid map the reference keeps.
        kept_cols: ``(first, end)`` feature columns it keeps.
    """

    height: int
    width: int
    grid_rows: int
    grid_cols: int
    resized: tuple[int, int]
    offset: tuple[int, int]
    kept_rows: tuple[int, int]
    kept_cols: tuple[int, int]

    @property
    def n_grid_tiles(self) -> int:
        """Tiles in the grid."""
        return self.grid_rows * self.grid_cols


class FrameLayout:
    """The reference layout of LLaVA 1.6 for one projector geometry.

    Args:
        geometry: The projector's tiling.
    """

    def __init__(self, geometry: AnyresGeometry) -> None:
        self.geometry = geometry

    def plan(self, height: int, width: int) -> FramePlan:
        """Tile a ``height x width`` frame as the reference does."""
        tile = self.geometry.tile_px
        target_h, target_w = select_best_resolution(height, width, self.geometry.pinpoints)
        scale_w, scale_h = target_w / width, target_h / height
        if scale_w < scale_h:
            new_w, new_h = target_w, min(math.ceil(height * scale_w), target_h)
        else:
            new_h, new_w = target_h, min(math.ceil(width * scale_h), target_w)
        rows, cols = target_h // tile, target_w // tile
        kept_rows, kept_cols = _unpadded(height, width, rows * self.geometry.side, cols * self.geometry.side)
        return FramePlan(
            height,
            width,
            rows,
            cols,
            (new_h, new_w),
            ((target_h - new_h) // 2, (target_w - new_w) // 2),
            kept_rows,
            kept_cols,
        )

    def n_tokens(self, plan: FramePlan) -> int:
        """Image tokens of the frame in the reference layout (base tile + unpadded grid rows,
        each with its newline)."""
        rows = plan.kept_rows[1] - plan.kept_rows[0]
        cols = plan.kept_cols[1] - plan.kept_cols[0]
        return self.geometry.tile_tokens + rows * (cols + 1)

    def tiles(self, rgb: np.ndarray, plan: FramePlan) -> list[np.ndarray]:
        """The base tile, then the grid's tiles row by row, each ``tile x tile x 3`` uint8."""
        tile = self.geometry.tile_px
        image = Image.fromarray(rgb)
        base = np.asarray(image.resize((tile, tile), Image.Resampling.BICUBIC))
        new_h, new_w = plan.resized
        top, left = plan.offset
        canvas = np.zeros((plan.grid_rows * tile, plan.grid_cols * tile, 3), np.uint8)
        canvas[top : top + new_h, left : left + new_w] = np.asarray(
            image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        )
        grid = [
            canvas[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
            for r in range(plan.grid_rows)
            for c in range(plan.grid_cols)
        ]
        return [base, *grid]

    def placement(self, plan: FramePlan) -> Placement:
        """Where each tile's features and the newlines go in the frame's image tokens."""
        side = self.geometry.side
        n_base = self.geometry.tile_tokens
        (row0, row1), (col0, col1) = plan.kept_rows, plan.kept_cols
        width = col1 - col0 + 1  # kept columns and the newline
        rows = np.arange(plan.grid_rows * side)[:, None]
        cols = np.arange(plan.grid_cols * side)[None, :]
        kept = (rows >= row0) & (rows < row1) & (cols >= col0) & (cols < col1)
        grid = np.where(kept, n_base + (rows - row0) * width + (cols - col0), -1)
        tiles = [np.arange(n_base)] + [
            grid[r * side : (r + 1) * side, c * side : (c + 1) * side].reshape(-1)
            for r in range(plan.grid_rows)
            for c in range(plan.grid_cols)
        ]
        newlines = n_base + np.arange(row1 - row0) * width + (col1 - col0)
        return Placement(tuple(tiles), newlines)


@dataclass(frozen=True, eq=False)
class Placement:
    """Rows of a frame's image tokens, as the reference layout fills them.

    Attributes:
        tiles: Per tile (base first), the token row of each of its ``side x side`` features in
            row-major order, or -1 where the unpad crops it.
        newlines: The rows that hold ``image_newline``.
    """

    tiles: tuple[np.ndarray, ...]
    newlines: np.ndarray


def select_best_resolution(height: int, width: int, pinpoints: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The grid resolution ``(height, width)`` that keeps most of the frame's pixels and,
    among equals, wastes the least (transformers' ``select_best_resolution``)."""
    best = pinpoints[0]
    best_effective, best_wasted = 0, math.inf
    for target_h, target_w in pinpoints:
        scale = min(target_w / width, target_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = target_w * target_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (target_h, target_w), effective, wasted
    return best


def _unpadded(height: int, width: int, map_h: int, map_w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The rows and columns of a ``map_h x map_w`` feature map that hold the frame, not the
    padding (transformers' ``unpad_image``, including its rounding)."""
    if width / height > map_w / map_h:
        new_h = int(round(height * (map_w / width), 7))
        pad = (map_h - new_h) // 2
        return (pad, map_h - pad), (0, map_w)
    new_w = int(round(width * (map_h / height), 7))
    pad = (map_w - new_w) // 2
    return (0, map_h), (pad, map_w - pad)
