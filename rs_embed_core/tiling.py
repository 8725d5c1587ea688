"""Large ROIs: cut the fetched raster into model-sized tiles, stitch the token grids back.

`input_prep` is "resize" (the default: the whole ROI goes through the chain's resize),
"tile", "auto" (tile only when resizing would shrink the ROI by more than AUTO_TILE_FACTOR),
or a `TileSpec`. A tiled ROI is fetched once as one raster and cut in memory at its native GSD;
each tile runs the card's full chain (whose resize is then the identity when the tile is the
model's input size). Token grids are stitched on the ROI's lattice: tile offsets are multiples
of the token size, so every output cell comes from exactly one tile -- where tiles overlap, the
tile in which the cell lies farthest from an edge wins (ties: the earlier tile in row-major
order), so there are no duplicated or dead rows at seams. The stitched grid starts at the ROI's
top-left corner with the token size as its pixel size; it covers the ROI, the last row/column
reaching past the ROI edge by less than one token when the ROI is not a multiple of it.
Pooled output ("model" pooling) is the area-weighted mean of the tiles' pooled vectors, each
tile weighted by the ROI pixels it owns after overlap resolution; "mean"/"max" pooling pools the
stitched grid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from attrs import field, frozen

from .errors import SpecError
from .grid import GridSpec
from .raster import Raster

AUTO_TILE_FACTOR = 2.0  # "auto" tiles when the ROI's longer side exceeds this many model inputs
HARD_MAX_TILES = 10_000
EDGES = ("pad", "shift")


def _pos_int(name: str):
    def check(_: object, attr: object, v: Any) -> None:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SpecError(f"TileSpec.{name} must be a positive int, got {v!r}")

    return check


@frozen
class TileSpec:
    """How to tile: `size` px a side (None = the model's input size), `overlap` px between
    neighbours (a multiple of the model's token size), at most `max_tiles` per ROI, and the
    edge policy: "pad" (the last row/column of tiles reaches past the ROI, padded with invalid
    fill) or "shift" (the last tile is moved back to end at the ROI edge)."""

    size: int | None = field(default=None, validator=_pos_int("size"))
    overlap: int = 0
    max_tiles: int = field(default=1024, validator=_pos_int("max_tiles"))
    edge: str = "pad"

    def __attrs_post_init__(self) -> None:
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 0:
            raise SpecError(f"TileSpec.overlap must be an int >= 0, got {self.overlap!r}")
        if self.size is not None and self.overlap >= self.size:
            raise SpecError(f"TileSpec.overlap ({self.overlap}) must be smaller than the tile size ({self.size})")
        if self.edge not in EDGES:
            raise SpecError(f"TileSpec.edge must be one of {EDGES}, got {self.edge!r}")
        if self.max_tiles > HARD_MAX_TILES:
            raise SpecError(f"TileSpec.max_tiles may not exceed {HARD_MAX_TILES}, got {self.max_tiles}")


INPUT_PREPS = ("resize", "tile", "auto")


def check_input_prep(input_prep: Any) -> str | TileSpec:
    if isinstance(input_prep, TileSpec):
        return input_prep
    if input_prep not in INPUT_PREPS:
        raise SpecError(f"input_prep must be one of {INPUT_PREPS} or a TileSpec, got {input_prep!r}")
    return input_prep


def check_tile_size(input_prep: str | TileSpec, image_size: int | None) -> None:
    """The overlap must be smaller than the tile size it resolves to (the model's input size when size=None)."""
    if isinstance(input_prep, TileSpec) and input_prep.size is None and image_size is not None \
            and input_prep.overlap >= image_size:
        raise SpecError(f"TileSpec.overlap ({input_prep.overlap}) must be smaller than the tile size ({image_size} px, "
                        "the model's input size): pass a smaller overlap or TileSpec(size=...)")


@frozen
class TilePlan:
    """Where the tiles of one ROI go: (row, col) pixel offsets of `size`-px tiles."""

    size: int
    stride: int
    offsets: tuple[tuple[int, int], ...]
    roi_shape: tuple[int, int]  # (H, W) of the ROI raster
    edge: str

    def to_meta(self) -> dict[str, Any]:
        return {"mode": "tile", "tile_size": self.size, "stride": self.stride, "tiles": len(self.offsets),
                "input_size": list(self.roi_shape), "edge": self.edge}


def _starts(n: int, size: int, stride: int, edge: str) -> list[int]:
    if n <= size:
        return [0]
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] + size < n:
        starts.append(n - size if edge == "shift" else starts[-1] + stride)
    return starts


def plan_tiles(input_prep: str | TileSpec, roi_shape: tuple[int, int], image_size: int | None) -> TilePlan | None:
    """The tile plan for a ROI of `roi_shape` px, or None when it goes through resize whole."""
    spec = input_prep if isinstance(input_prep, TileSpec) else TileSpec()
    if input_prep == "resize":
        return None
    size = spec.size or image_size
    if size is None:
        if input_prep == "auto":
            return None
        raise SpecError("this model takes any input size, so there is no tile size to default to: "
                        "pass input_prep=TileSpec(size=...)")
    check_tile_size(spec, image_size)
    h, w = roi_shape
    if input_prep == "auto" and max(h, w) <= AUTO_TILE_FACTOR * size:
        return None
    stride = size - spec.overlap
    rows, cols = _starts(h, size, stride, spec.edge), _starts(w, size, stride, spec.edge)
    count = len(rows) * len(cols)
    if count > spec.max_tiles:
        raise SpecError(
            f"tiling a {h}x{w} px ROI into {size} px tiles (stride {stride}) needs {count} tiles, more than "
            f"max_tiles={spec.max_tiles}; use a smaller ROI, a coarser scale_m, or TileSpec(max_tiles=...) "
            f"(at most {HARD_MAX_TILES})"
        )
    return TilePlan(size, stride, tuple((r, c) for r in rows for c in cols), (h, w), spec.edge)


def cut(raster: Raster, plan: TilePlan, fill: float = 0.0) -> list[Raster]:
    """The tiles of `raster` (padded with invalid fill past the ROI edge), each on its own grid window."""
    t, c, h, w = raster.shape
    s = plan.size
    out = []
    for r0, c0 in plan.offsets:
        hh, ww = min(s, h - r0), min(s, w - c0)
        if (hh, ww) == (s, s):
            data = raster.data[:, :, r0:r0 + s, c0:c0 + s]
            valid = raster.valid[:, r0:r0 + s, c0:c0 + s]
        else:
            data = np.full((t, c, s, s), np.float32(fill), np.float32)
            data[:, :, :hh, :ww] = raster.data[:, :, r0:r0 + hh, c0:c0 + ww]
            valid = np.zeros((t, s, s), bool)
            valid[:, :hh, :ww] = raster.valid[:, r0:r0 + hh, c0:c0 + ww]
        out.append(raster.replace(data=data, valid=valid, grid=raster.grid.window(c0, r0, s, s)))
    return out


def stitch(
    plan: TilePlan, grid: GridSpec, tiles: list[np.ndarray], pooled: list[np.ndarray] | None,
    valid: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, GridSpec, np.ndarray | None, np.ndarray | None]:
    """Stitch per-tile token grids (D, h, w) onto the ROI lattice.

    Returns the stitched (D, H', W') grid, its GridSpec (origin at the ROI's top-left corner,
    pixel = one token), the area-weighted mean of `pooled` (or None), and the tiles' (h, w) cell
    valid masks `valid` stitched like the grid, each cell's from the tile its tokens come from (or None).
    """
    if valid is not None:  # a mask rides along as one more band, so it follows the very same owners
        tiles = [np.concatenate([g, np.asarray(m, g.dtype)[None]]) for g, m in zip(tiles, valid)]
    d, th, tw = tiles[0].shape
    if plan.size % th or plan.size % tw or th != tw:
        raise SpecError(f"a {plan.size} px tile gave a {th}x{tw} token grid: tiles must map to whole, square tokens")
    tok = plan.size // th
    for r0, c0 in plan.offsets:
        if r0 % tok or c0 % tok:
            raise SpecError(
                f"tile offset ({r0}, {c0}) px is not a multiple of the model's token size ({tok} px): "
                "choose an overlap that is a multiple of it, or edge='pad'"
            )
    h, w = plan.roi_shape
    gh, gw = math.ceil(h / tok), math.ceil(w / tok)
    out = np.zeros((d, gh, gw), np.float32)
    best = np.full((gh, gw), -1.0)
    owner = np.full((gh, gw), -1, np.int64)
    yy, xx = np.mgrid[0:th, 0:tw]
    depth = np.minimum(np.minimum(yy, th - 1 - yy), np.minimum(xx, tw - 1 - xx)).astype(np.float64)
    for k, ((r0, c0), g) in enumerate(zip(plan.offsets, tiles)):
        gr, gc = r0 // tok, c0 // tok
        rh, cw = min(th, gh - gr), min(tw, gw - gc)
        if rh <= 0 or cw <= 0:
            continue
        region = (slice(gr, gr + rh), slice(gc, gc + cw))
        win = depth[:rh, :cw] > best[region]  # strictly deeper wins: ties keep the earlier tile
        out[(slice(None), *region)] = np.where(win[None], g[:, :rh, :cw], out[(slice(None), *region)])
        best[region] = np.where(win, depth[:rh, :cw], best[region])
        owner[region] = np.where(win, k, owner[region])
    if (owner < 0).any():
        raise SpecError("tiling left cells of the ROI uncovered (internal error in the tile plan)")
    cells = None
    if valid is not None:
        out, cells = out[:-1], out[-1].astype(np.float32)
    out_grid = GridSpec(grid.crs, grid.x0, grid.y0, grid.res * tok, gw, gh,
                        None if grid.res_y is None else grid.res_y * tok)
    vec = None
    if pooled is not None:
        # ROI pixels each tile owns: cells inside the ROI, weighted by the part of the cell inside it
        cell_h = np.minimum(tok, h - np.arange(gh) * tok).astype(np.float64)
        cell_w = np.minimum(tok, w - np.arange(gw) * tok).astype(np.float64)
        area = cell_h[:, None] * cell_w[None, :]
        weights = np.bincount(owner.ravel(), weights=area.ravel(), minlength=len(tiles))
        vec = (np.tensordot(weights / weights.sum(), np.stack(pooled).astype(np.float64), axes=1)).astype(np.float32)
    return out, out_grid, vec, cells
