"""A PNG map of search scores over an export's item footprints or token cells, no GIS needed.

Plate carrée in lon/lat with the x axis shrunk by cos(latitude) so shapes look right. When the
places are sparse (their footprints cover under 2 % of their extent, e.g. a few sites far apart)
and at most 400, each item gets its own panel instead, in export order (left to right, then
down), its footprint filling the panel: a map would show dots. Every
footprint or cell is painted as its lon/lat bounding box in a viridis-like ramp from the lowest
(dark purple) to the highest score (yellow), higher scores drawn on top; places too small for
the map are drawn 3 pixels wide so none disappears. The k hits are outlined in red; the query's own
items or cell are white and rows that `where` left out grey (neither counts for the colour
range); a colour bar from low to high runs along the bottom. Rows without a
vector (failed items) are not drawn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .search_source import Chunk, ExportVectors

SIZE = 800  # pixels on the long side of the map
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)
_BACKGROUND, _LEFT_OUT, _HIT, _QUERY = (24, 24, 24), (110, 110, 110), (230, 40, 40), (255, 255, 255)
_BAR = 14


def ramp(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (n, 3) uint8 colours along the ramp."""
    x = np.clip(t, 0, 1) * (len(_RAMP) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(_RAMP) - 2)
    f = (x - lo)[:, None]
    return np.round(_RAMP[lo] * (1 - f) + _RAMP[lo + 1] * f).astype(np.uint8)


class Footprints:
    """The lon/lat bounding boxes of an export's items or token cells (what the PNG maps paint)."""

    def __init__(self, src: ExportVectors) -> None:
        self.src = src
        self._item_box: dict[int, np.ndarray] = {}

    def box_of(self, items: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.src.level == "item":
            return np.stack([self.item_box(int(i)) for i in items]) if len(items) else np.zeros((0, 4))
        from .grid import _transformer

        out = np.zeros((len(items), 4))
        for i in np.unique(items):
            sel = items == i
            g = self.src.item_grid(int(i))
            r, c = rows[sel].astype(np.float64), cols[sel].astype(np.float64)
            xs = np.concatenate([g.x0 + c * g.res, g.x0 + (c + 1) * g.res] * 2)
            ys = np.concatenate([g.y0 - r * g.yres] * 2 + [g.y0 - (r + 1) * g.yres] * 2)
            lon, lat = _transformer(g.crs, "EPSG:4326").transform(xs, ys)
            lon, lat = np.asarray(lon).reshape(4, -1), np.asarray(lat).reshape(4, -1)
            out[sel] = np.stack([lon.min(0), lat.min(0), lon.max(0), lat.max(0)], axis=1)
        return out

    def item_box(self, i: int) -> np.ndarray:
        box = self._item_box.get(i)
        if box is None:
            ring = np.asarray(self.src.item_footprint(i))
            box = self._item_box[i] = np.array([ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max()])
        return box


class ScoreMap(Footprints):
    """Collects (box, score) of every scanned row, then paints them (`add` is the scan's callback)."""

    def __init__(self, src: ExportVectors) -> None:
        super().__init__(src)
        self.boxes: list[np.ndarray] = []  # (n, 4): minlon, minlat, maxlon, maxlat
        self.scores: list[np.ndarray] = []
        self.kept: list[np.ndarray] = []  # False: left out by `where` or the query itself (drawn grey)
        self.items: list[np.ndarray] = []

    def add(self, chunk: Chunk, scores: np.ndarray, kept: np.ndarray | None) -> None:
        self.boxes.append(self.box_of(chunk.items, chunk.rows, chunk.cols))
        self.scores.append(np.asarray(scores, np.float64))
        self.kept.append(np.ones(len(scores), bool) if kept is None else kept)
        self.items.append(np.asarray(chunk.items, np.int64))

    def write(self, path: str, hits: Any, parts: list[Any]) -> str:
        from .api import _png_rgb

        boxes = np.concatenate(self.boxes) if self.boxes else np.zeros((0, 4))
        items = np.concatenate(self.items) if self.items else np.zeros(0, np.int64)
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        kept = np.concatenate(self.kept) if self.kept else np.zeros(0, bool)
        lo, hi = (float(scores[kept].min()), float(scores[kept].max())) if kept.any() else (0.0, 1.0)
        layout = _Layout.choose(boxes, items, {int(i): self.item_box(int(i)) for i in np.unique(items)})
        w, h = layout.size
        img = np.empty((h + _BAR + 4, w, 3), np.uint8)
        img[:] = _BACKGROUND

        colours = ramp((scores - lo) / max(hi - lo, 1e-12))
        colours[~kept] = _LEFT_OUT
        for j in np.argsort(np.where(kept, scores, -np.inf), kind="stable"):
            x0, y0, x1, y1 = layout.pixels(boxes[j], int(items[j]))
            img[y0:y1, x0:x1] = colours[j]

        def outline(b: np.ndarray, item: int, colour: tuple[int, int, int], fill: bool = False) -> None:
            x0, y0, x1, y1 = layout.pixels(b, item)
            if fill:
                img[y0:y1, x0:x1] = colour
            x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, w), min(y1 + 1, h)
            img[y0, x0:x1] = img[y1 - 1, x0:x1] = colour
            img[y0:y1, x0] = img[y0:y1, x1 - 1] = colour

        t = hits.to_pydict()
        ids = np.asarray(t["id"], np.int64)
        rows = np.asarray([-1 if r is None else r for r in t["row"]])
        cols = np.asarray([-1 if c is None else c for c in t["col"]])
        for b, i in zip(self.box_of(ids, rows, cols), ids):
            outline(b, int(i), _HIT)
        for p in parts:
            if p.exclude_item is not None:
                outline(self.item_box(p.exclude_item), p.exclude_item, _QUERY, fill=self.src.level == "item")
            elif p.exclude_cell is not None:
                i, r, c = p.exclude_cell
                outline(self.box_of(np.asarray([i]), np.asarray([r]), np.asarray([c]))[0], i, _QUERY, fill=True)
        img[h + 2:h + 2 + _BAR] = ramp(np.linspace(0, 1, w))[None]
        Path(path).write_bytes(_png_rgb(img))
        return str(path)


class _Layout:
    """Where a lon/lat box of an item lands on the picture: one shared map, or one panel per item."""

    PANEL_MAX_ITEMS = 400
    SPARSE = 0.02  # footprints covering less than this share of their extent: panels, not one map

    def __init__(self, frames: dict[int, tuple[float, float, float, float, int, int]], size: tuple[int, int]) -> None:
        self.frames = frames  # item -> (minx, maxy, kx, scale, x offset, y offset); -1 = the shared map
        self.size = size

    @classmethod
    def choose(cls, boxes: np.ndarray, items: np.ndarray, footprints: dict[int, np.ndarray]) -> _Layout:
        fp = np.stack(list(footprints.values())) if footprints else boxes[:1]
        ext = (fp[:, 0].min(), fp[:, 1].min(), fp[:, 2].max(), fp[:, 3].max())
        area = float(((fp[:, 2] - fp[:, 0]) * (fp[:, 3] - fp[:, 1])).sum())
        extent = max((ext[2] - ext[0]) * (ext[3] - ext[1]), 1e-18)
        if 1 < len(footprints) <= cls.PANEL_MAX_ITEMS and area < cls.SPARSE * extent:
            return cls._panels(footprints)
        frame, (w, h) = cls._frame(ext, SIZE)
        return cls({-1: (*frame, 0, 0)}, (w, h))

    @staticmethod
    def _frame(ext: tuple[float, ...], size: int) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
        minx, miny, maxx, maxy = ext
        kx = math.cos(math.radians((miny + maxy) / 2))
        span = max((maxx - minx) * kx, maxy - miny, 1e-9)
        pad = span * 0.04
        scale = (size - 1) / (span + 2 * pad)
        w = max(8, int(math.ceil(((maxx - minx) * kx + 2 * pad) * scale)) + 1)
        h = max(8, int(math.ceil((maxy - miny + 2 * pad) * scale)) + 1)
        return (minx - pad / kx, maxy + pad, kx, scale), (w, h)

    @classmethod
    def _panels(cls, footprints: dict[int, np.ndarray]) -> _Layout:
        """Small multiples in export order, left to right then down, each item's footprint filling its panel."""
        n = len(footprints)
        ncol = math.ceil(math.sqrt(n))
        panel = max(48, min(240, SIZE // ncol))
        frames = {}
        for k, (i, b) in enumerate(sorted(footprints.items())):
            frame, _ = cls._frame(tuple(b), panel - 4)
            frames[i] = (*frame, (k % ncol) * panel + 2, (k // ncol) * panel + 2)
        return cls(frames, (ncol * panel, math.ceil(n / ncol) * panel))

    def pixels(self, b: np.ndarray, item: int) -> tuple[int, int, int, int]:
        minx, maxy, kx, scale, ox, oy = self.frames.get(item, self.frames.get(-1))
        x0 = ox + int(math.floor((b[0] - minx) * kx * scale))
        x1 = ox + int(math.ceil((b[2] - minx) * kx * scale))
        y0 = oy + int(math.floor((maxy - b[3]) * scale))
        y1 = oy + int(math.ceil((maxy - b[1]) * scale))
        if x1 - x0 < 3:
            x0, x1 = (x0 + x1) // 2 - 1, (x0 + x1) // 2 + 2
        if y1 - y0 < 3:
            y0, y1 = (y0 + y1) // 2 - 1, (y0 + y1) // 2 + 2
        w, h = self.size
        return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
