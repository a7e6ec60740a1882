"""LLaVA 1.6's image-token layout, as the model was trained ("anyres" + "spatial_unpad").

A frame becomes a *base* tile (the whole frame squashed to 336x336) and a grid of 336x336
tiles cut from the frame resized to the best of the model's grid resolutions ("pinpoints")
and padded with black. Each tile yields a 24x24 map of features. The reference
implementation (the LLaVA authors' code, transformers' ``LlavaNextModel.pack_image_features``)
places the grid's maps side by side as one spatial map, cuts away the rows or columns that
only hold padding, appends the learned ``image_newline`` vector after every row, and puts the
base tile's 576 features first. A 640x360 frame is 576 + 28 x (48 + 1) = 1,948 tokens.

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
            height, width, rows, cols, (new_h, new_w),
            ((target_h - new_h) // 2, (target_w - new_w) // 2), kept_rows, kept_cols,
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

    def needed_patches(self, plan: FramePlan, tile_index: int) -> np.ndarray:
        """Which of a tile's ``side x side`` features the reference layout uses (a boolean
        map); all of them for the base tile (index 0)."""
        side = self.geometry.side
        needed = np.ones((side, side), bool)
        if tile_index == 0:
            return needed
        r, c = divmod(tile_index - 1, plan.grid_cols)
        rows = np.arange(r * side, (r + 1) * side)
        cols = np.arange(c * side, (c + 1) * side)
        in_rows = (rows >= plan.kept_rows[0]) & (rows < plan.kept_rows[1])
        in_cols = (cols >= plan.kept_cols[0]) & (cols < plan.kept_cols[1])
        return needed & in_rows[:, None] & in_cols[None, :]

    def pack(self, plan: FramePlan, features: list[np.ndarray], newline: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Arrange per-tile features as the reference does, into ``out`` (``n_tokens x n_embd``).

        Args:
            plan: The frame's plan.
            features: Per tile (base first), ``tile_tokens x n_embd`` in row-major patch order.
            newline: The projector's ``image_newline`` vector.
            out: Receives the result; at least ``n_tokens(plan)`` rows.

        Returns:
            The filled rows of ``out``.
        """
        side = self.geometry.side
        n_embd = newline.shape[0]
        n_base = self.geometry.tile_tokens
        out[:n_base] = features[0]
        grid = (
            np.stack(features[1:])
            .reshape(plan.grid_rows, plan.grid_cols, side, side, n_embd)
            .transpose(0, 2, 1, 3, 4)
            .reshape(plan.grid_rows * side, plan.grid_cols * side, n_embd)
        )
        kept = grid[plan.kept_rows[0] : plan.kept_rows[1], plan.kept_cols[0] : plan.kept_cols[1]]
        rows, cols = kept.shape[:2]
        body = out[n_base : n_base + rows * (cols + 1)].reshape(rows, cols + 1, n_embd)
        body[:, :cols] = kept
        body[:, cols] = newline
        return out[: n_base + rows * (cols + 1)]


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
