"""Stage 6, assemble: a model's raw outputs for one item -> the Embedding the user gets.

Grid outputs carry a per-cell valid mask (`Embedding.valid`): the share of the model's input values
(frames x pixels, after the preprocessing chain) under each token cell that were valid. A cell that
saw no valid input at all holds NaN in every band, so fill values can never pass for data.
"""

from __future__ import annotations

from typing import Any, Sequence, Tuple, Union

import numpy as np

from .card import ModelCard
from .convert import converter
from .embedding import Embedding
from .errors import ItemError, SpecError
from .raster import Raster, RasterHead
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


Outcome = Tuple[int, int, Union[Embedding, ItemError]]  # (item, job, result), what a run yields


class Outcomes:
    """How each (item, job) of one run ends: an Embedding with its full meta, or an ItemError naming the ROI.

    `failed` holds the pairs that ended in an error (their other pieces are skipped), `attempts` the most
    fetch attempts each item's inputs took, `bar` the run's progress (runner.RunProgress).
    """

    def __init__(self, jobs: Sequence[Any], spatials: Sequence[Any], names: Sequence[str] | None,
                 metas: Sequence[dict[str, Any]], bar: Any) -> None:
        self.jobs, self.spatials, self.names, self.metas, self.bar = jobs, spatials, names, metas, bar
        self.failed: set[tuple[int, int]] = set()
        self.attempts: dict[int, int] = {}

    def error(self, i: int, j: int, stage: str, exc: BaseException, attempts: int = 1) -> ItemError:
        self.failed.add((i, j))
        return ItemError(
            index=i, name=None if self.names is None else self.names[i], spatial=repr(self.spatials[i]),
            model=self.jobs[j].card.id, stage=stage, error_type=type(exc).__name__,
            message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__, attempts=attempts, cause=exc,
        )

    def embedding(self, i: int, j: int, pooled: np.ndarray | None, grid: np.ndarray | None, prepped: Raster,
                  fetched: Raster | RasterHead, tiling: dict[str, Any] | None = None, out_grid: Any = None,
                  out_valid: np.ndarray | None = None) -> Embedding:
        job = self.jobs[j]
        meta = {
            **self.metas[j],
            "spatial": converter.unstructure(self.spatials[i]),
            "input_grid": converter.unstructure(fetched.grid),
            "input_shape": list(prepped.shape),
            "valid_fraction": fetched.valid_fraction,
            "attempts": self.attempts.get(i, 1),
            "source": prepped.meta,
        }
        if self.names is not None:
            meta["name"] = self.names[i]
        if tiling is not None:
            meta["tiling"] = tiling
        return make_embedding(job.card, job.output, pooled, grid, prepped, meta, out_grid, out_valid)

    def finish(self, i: int, j: int, result: Embedding | ItemError) -> Outcome:
        self.bar.item_done(isinstance(result, ItemError))
        return i, j, result
