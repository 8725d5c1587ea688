"""Stage 6, assemble: a model's raw outputs for one item -> the Embedding the user gets."""

from __future__ import annotations

from typing import Any

import numpy as np

from .card import ModelCard
from .embedding import Embedding
from .errors import SpecError
from .raster import Raster
from .specs import OutputSpec


def make_embedding(
    card: ModelCard,
    output: OutputSpec,
    pooled: np.ndarray | None,
    grid: np.ndarray | None,
    prepped: Raster,
    meta: dict[str, Any],
    out_grid: Any = None,
) -> Embedding:
    """The user's output from a model's (pooled, grid) for one item: the grid georeferenced on the input's
    footprint (or `out_grid`, the stitched grid of a tiled ROI), or one vector pooled as `output` asks."""
    if output.mode == "grid":
        if grid is None:
            raise SpecError(f"model {card.id!r} does not produce a grid output")
        spec = out_grid if out_grid is not None else prepped.grid.resized(grid.shape[2], grid.shape[1])
        return Embedding(grid, {**meta, "output_kind": "grid"}, spec)
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
