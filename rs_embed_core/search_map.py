"""A PNG map of search scores over an export's item footprints or token cells, no GIS needed.

Plate carrée in lon/lat with the x axis shrunk by cos(latitude) so shapes look right; every
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


class ScoreMap:
    """Collects (box, score) of every scanned row, then paints them (`add` is the scan's callback)."""

    def __init__(self, src: ExportVectors) -> None:
        self.src = src
        self.boxes: list[np.ndarray] = []  # (n, 4): minlon, minlat, maxlon, maxlat
        self.scores: list[np.ndarray] = []
        self.kept: list[np.ndarray] = []  # False: left out by `where` or the query itself (drawn grey)
        self._item_box: dict[int, np.ndarray] = {}

    def add(self, chunk: Chunk, scores: np.ndarray, kept: np.ndarray | None) -> None:
        self.boxes.append(self.box_of(chunk.items, chunk.rows, chunk.cols))
        self.scores.append(np.asarray(scores, np.float64))
        self.kept.append(np.ones(len(scores), bool) if kept is None else kept)

    def box_of(self, items: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.src.level == "item":
            return np.stack([self._item(int(i)) for i in items]) if len(items) else np.zeros((0, 4))
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

    def _item(self, i: int) -> np.ndarray:
        box = self._item_box.get(i)
        if box is None:
            ring = np.asarray(self.src.item_footprint(i))
            box = self._item_box[i] = np.array([ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max()])
        return box

    def write(self, path: str, hits: Any, parts: list[Any]) -> str:
        from .api import _png_rgb

        boxes = np.concatenate(self.boxes) if self.boxes else np.zeros((0, 4))
        scores = np.concatenate(self.scores) if self.scores else np.zeros(0)
        kept = np.concatenate(self.kept) if self.kept else np.zeros(0, bool)
        lo, hi = (float(scores[kept].min()), float(scores[kept].max())) if kept.any() else (0.0, 1.0)
        minx, miny = boxes[:, 0].min(), boxes[:, 1].min()
        maxx, maxy = boxes[:, 2].max(), boxes[:, 3].max()
        kx = math.cos(math.radians((miny + maxy) / 2))
        span = max((maxx - minx) * kx, maxy - miny, 1e-9)
        pad = span * 0.04
        scale = (SIZE - 1) / (span + 2 * pad)
        w = max(16, int(math.ceil(((maxx - minx) * kx + 2 * pad) * scale)) + 1)
        h = max(16, int(math.ceil((maxy - miny + 2 * pad) * scale)) + 1)
        img = np.empty((h + _BAR + 4, w, 3), np.uint8)
        img[:] = _BACKGROUND

        def pixels(b: np.ndarray) -> tuple[int, int, int, int]:
            x0 = int(math.floor(((b[0] - minx) * kx + pad) * scale))
            x1 = int(math.ceil(((b[2] - minx) * kx + pad) * scale))
            y0 = int(math.floor((maxy - b[3] + pad) * scale))
            y1 = int(math.ceil((maxy - b[1] + pad) * scale))
            if x1 - x0 < 3:
                x0, x1 = (x0 + x1) // 2 - 1, (x0 + x1) // 2 + 2
            if y1 - y0 < 3:
                y0, y1 = (y0 + y1) // 2 - 1, (y0 + y1) // 2 + 2
            return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)

        colours = ramp((scores - lo) / max(hi - lo, 1e-12))
        colours[~kept] = _LEFT_OUT
        for j in np.argsort(np.where(kept, scores, -np.inf), kind="stable"):
            x0, y0, x1, y1 = pixels(boxes[j])
            img[y0:y1, x0:x1] = colours[j]

        def outline(b: np.ndarray, colour: tuple[int, int, int], fill: bool = False) -> None:
            x0, y0, x1, y1 = pixels(b)
            if fill:
                img[y0:y1, x0:x1] = colour
            x0, y0, x1, y1 = max(x0 - 1, 0), max(y0 - 1, 0), min(x1 + 1, w), min(y1 + 1, h)
            img[y0, x0:x1] = img[y1 - 1, x0:x1] = colour
            img[y0:y1, x0] = img[y0:y1, x1 - 1] = colour

        t = hits.to_pydict()
        rows = [-1 if r is None else r for r in t["row"]]
        cols = [-1 if c is None else c for c in t["col"]]
        for b in self.box_of(np.asarray(t["id"], np.int64), np.asarray(rows), np.asarray(cols)):
            outline(b, _HIT)
        for p in parts:
            if p.exclude_item is not None:
                outline(self._item(p.exclude_item), _QUERY, fill=self.src.level == "item")
            elif p.exclude_cell is not None:
                i, r, c = p.exclude_cell
                outline(self.box_of(np.asarray([i]), np.asarray([r]), np.asarray([c]))[0], _QUERY, fill=True)
        img[h + 2:h + 2 + _BAR] = ramp(np.linspace(0, 1, w))[None]
        Path(path).write_bytes(_png_rgb(img))
        return str(path)
