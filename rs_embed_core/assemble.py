"""Stage 6, assemble: a model's raw outputs for one item -> the Embedding the user gets.

Grid outputs carry a per-cell valid mask (`Embedding.valid`): the share of the model's input values
(frames x pixels, after the preprocessing chain) under each token cell that were valid. A cell that
saw no valid input at all holds NaN in every band, so fill values can never pass for data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .card import ModelCard
from .embedding import Embedding
from .errors import SpecError
from .raster import Raster
from .specs import OutputSpec


def _overlaps(n_px: int, n_cells: int) -> np.ndarray:
    """(n_cells, n_px) lengths each cell shares with each pixel when both divide one interval; in units of
    1 / (n_px * n_cells) of it, so they are exact integers (a pixel is n_cells long, a cell n_px)."""
    px = np.arange(n_px + 1, dtype=np.int64) * n_cells
    cells = np.arange(n_cells + 1, dtype=np.int64) * n_px
    lo = np.maximum(cells[:-1, None], px[None, :-1])
    hi = np.minimum(cells[1:, None], px[None, 1:])
    return np.clip(hi - lo, 0, None).astype(np.float64)


def cell_valid(raster: Raster, width: int, height: int) -> np.ndarray:
    """(height, width) float32: the fraction of `raster`'s valid (frame, pixel) values under each cell of the
    width x height grid that divides its footprint (a model's token grid). Exact: 1.0 = all valid, 0.0 = none."""
    t, h, w = raster.valid.shape
    share = raster.valid.mean(axis=0, dtype=np.float64) if t else np.zeros((h, w))
    if h % height == 0 and w % width == 0:  # whole pixels per cell (tokens, or a product's own pixels): block means
        frac = share.reshape(height, h // height, width, w // width).mean(axis=(1, 3))
    else:
        ly, lx = _overlaps(h, height), _overlaps(w, width)
        frac = ly @ share @ lx.T / (h * w)  # a cell is h units tall and w units wide
    return np.clip(frac, 0.0, 1.0).astype(np.float32)


def mask_empty_cells(grid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The (D, h, w) grid with NaN in every band of the cells that saw no valid input."""
    empty = valid <= 0
    if not empty.any():
        return grid
    return np.where(empty[None], np.float32(np.nan), grid).astype(np.float32, copy=False)


def make_embedding(
    card: ModelCard,
    output: OutputSpec,
    pooled: np.ndarray | None,
    grid: np.ndarray | None,
    prepped: Raster,
    meta: dict[str, Any],
    out_grid: Any = None,
    out_valid: np.ndarray | None = None,
) -> Embedding:
    """The user's output from a model's (pooled, grid) for one item: the grid georeferenced on the input's
    footprint (or `out_grid`, the stitched grid of a tiled ROI, with `out_valid` its stitched cell mask),
    or one vector pooled as `output` asks. Pooled vectors are computed from the model's grid as it came."""
    if output.mode == "grid":
        if grid is None:
            raise SpecError(f"model {card.id!r} does not produce a grid output")
        if out_grid is not None:
            spec, valid = out_grid, out_valid
        else:
            spec = prepped.grid.resized(grid.shape[2], grid.shape[1])
            valid = cell_valid(prepped, grid.shape[2], grid.shape[1])
        if valid is not None:
            grid = mask_empty_cells(grid, valid)
        return Embedding(grid, {**meta, "output_kind": "grid"}, spec, valid)
    if output.pooling == "model":
        if pooled is not None:
            vec = pooled
        elif grid is not None:
            vec = grid.mean(axis=(1, 2))
        else:
            raise SpecError(f"model {card.id!r} returned no output")
        meta["pooling"] = card.pooled
    else:
        if grid is None:
            raise SpecError(f"model {card.id!r} has no token grid to {output.pooling}-pool; use pooling='model'")
        vec = grid.mean(axis=(1, 2)) if output.pooling == "mean" else grid.max(axis=(1, 2))
        meta["pooling"] = f"{output.pooling} of the token grid"
    return Embedding(np.ascontiguousarray(vec, dtype=np.float32), {**meta, "output_kind": "pooled"}, None)
