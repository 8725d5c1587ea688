"""PCA-to-RGB pictures of embeddings: one grid embedding, or an export's items or token cells on a map.

Colours (one rule for every picture): the vectors are L2-normalised (search compares them that way),
centred on their mean and projected on the first three principal components of all the vectors in
that one picture: PC1 -> red, PC2 -> green, PC3 -> blue. Each component is stretched linearly from its
2nd to its 98th percentile onto 0..255 and clipped beyond, so a few outliers do not wash the rest
out. One basis per picture means equal vectors get equal colours and near vectors near colours; two
pictures have two bases, so their colours are not comparable. Each component's sign is fixed (its
largest loading positive), so a rerun paints the same colours. A basis is fitted on at most
FIT_ROWS vectors (an even subsample of larger exports), then every vector is painted with it.

The PNGs are plain RGB written without an imaging library: title, lon/lat ticks, a scale bar and a
legend with the components' shares of the variance. `quicklook_map` builds an interactive folium
map (the core's `maps` extra) of the same colours.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from attrs import frozen

from .bitmap_text import draw_text, fit_text, text_size
from .errors import MissingExtraError, SearchError, SpecError

STRETCH = (2.0, 98.0)  # percentiles mapped to 0 and 255
FIT_ROWS = 50_000
MAX_MAP_FEATURES = 20_000  # an interactive map of more polygons is too heavy for a browser
_BG, _INK, _DIM = (24, 24, 24), (235, 235, 235), (150, 150, 150)
_METRES_PER_DEGREE = 111_195.0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


@frozen(eq=False)
class PCABasis:
    """Three principal axes of a set of vectors and the percentile stretch that turns them into RGB."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (3, D); zero rows where the vectors span fewer than three dimensions
    explained: np.ndarray  # (3,) share of the total variance along each component
    lo: np.ndarray  # (3,) the STRETCH percentiles of the projections
    hi: np.ndarray
    n_fit: int

    @classmethod
    def fit(cls, vectors: np.ndarray, stretch: tuple[float, float] = STRETCH) -> PCABasis:
        """The basis of (n, D) finite vectors."""
        x = np.asarray(vectors)
        if x.ndim != 2 or not len(x):
            raise SpecError(f"PCA colours need an (n, D) array of vectors, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise SpecError("PCA colours need finite vectors; drop the NaN rows (failed or masked cells) first")
        x = _unit(x)
        mean = x.mean(axis=0)
        xc = x - mean
        n, d = xc.shape
        if n >= d:  # covariance: one (D, D) product
            w, v = np.linalg.eigh(xc.T @ xc)
            order = np.argsort(w)[::-1][:3]
            var, comps = np.maximum(w[order], 0.0), v[:, order].T
        else:
            _, s, vt = np.linalg.svd(xc, full_matrices=False)
            var, comps = s[:3] ** 2, vt[:3]
        total = float((xc ** 2).sum())
        keep = var > max(total, 1e-300) * 1e-12
        comps = np.where(keep[:, None], comps, 0.0)
        big = np.argmax(np.abs(comps), axis=1)
        comps = comps * np.where(comps[np.arange(len(comps)), big] < 0, -1.0, 1.0)[:, None]
        components = np.zeros((3, d))
        components[:len(comps)] = comps
        explained = np.zeros(3)
        explained[:len(var)] = np.where(keep, var, 0.0) / total if total > 0 else 0.0
        proj = xc @ components.T
        lo, hi = np.percentile(proj, stretch, axis=0)
        return cls(mean, components, explained, lo, hi, n)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        return (_unit(vectors) - self.mean) @ self.components.T

    def rgb(self, vectors: np.ndarray) -> np.ndarray:
        """(n, D) vectors -> (n, 3) uint8 colours (a flat component is mid grey)."""
        p = self.project(vectors)
        span = self.hi - self.lo
        flat = span <= 1e-12
        t = np.where(flat, 0.5, (p - self.lo) / np.where(flat, 1.0, span))
        return np.round(np.clip(t, 0.0, 1.0) * 255).astype(np.uint8)

    def legend(self) -> list[str]:
        pct = " ".join(f"{100 * e:.0f}%" for e in self.explained)
        return [f"R G B = PC1 PC2 PC3 OF {self.n_fit} VECTORS: {pct} OF VARIANCE",
                f"EACH STRETCHED {STRETCH[0]:g}-{STRETCH[1]:g} PERCENTILE; SIMILAR COLOUR = SIMILAR EMBEDDING"]


def grid_rgb(data: np.ndarray, basis: PCABasis | None = None) -> tuple[np.ndarray, PCABasis]:
    """A (D, h, w) grid embedding -> (h, w, 3) uint8 image (row 0 = the grid's first row, north for
    north-up grids) and the basis used (fitted on the grid's finite cells unless given); cells with a
    NaN are background grey."""
    a = np.asarray(data)
    if a.ndim != 3:
        raise SpecError(f"a PCA picture needs a grid embedding (D, h, w); this one has shape {a.shape} "
                        "(a pooled vector: export several places and use rs_embed.quicklook on the export)")
    d, h, w = a.shape
    vec = a.reshape(d, h * w).T
    ok = np.isfinite(vec).all(axis=1)
    if not ok.any():
        raise SpecError("every cell of this grid embedding is NaN: nothing to colour")
    basis = basis or PCABasis.fit(vec[ok])
    img = np.empty((h * w, 3), np.uint8)
    img[:] = _BG
    img[ok] = basis.rgb(vec[ok])
    return img.reshape(h, w, 3), basis


# ------------------------------------------------------------------ one grid embedding


def write_embedding_png(emb: Any, path: str | Path, title: str | None = None) -> str:
    """`Embedding.quicklook`: the grid's PCA colours, north up, with lon/lat ticks when it has a GridSpec."""
    from .api import _png_rgb

    _check_out(path, (".png",))
    return _embedding_canvas(emb, title).write(path, _png_rgb)


def _embedding_canvas(emb: Any, title: str | None = None) -> _Canvas:
    cells, basis = grid_rgb(emb.data)
    h, w = cells.shape[:2]
    s = max(1, 512 // max(h, w))
    pic = cells.repeat(s, 0).repeat(s, 1)
    meta = emb.meta or {}
    model = str(meta.get("model") or meta.get("model_id") or "embedding")
    title = title or f"{model}  PCA RGB  {h} X {w} CELLS  D={emb.data.shape[0]}"
    canvas = _Canvas(pic, title, basis.legend())
    g = emb.grid
    if g is not None:
        from .grid import _transformer

        to_ll = _transformer(g.crs, "EPSG:4326")
        px = np.arange(pic.shape[1] + 1, dtype=np.float64)
        lon, _ = to_ll.transform(g.x0 + px / s * g.res, np.full(px.shape, g.y0 - h * g.yres))
        py = np.arange(pic.shape[0] + 1, dtype=np.float64)
        _, lat = to_ll.transform(np.full(py.shape, g.x0), g.y0 - py / s * g.yres)
        canvas.lon_ticks(px, np.asarray(lon))
        canvas.lat_ticks(py, np.asarray(lat))
        if _projected(g.crs):
            canvas.scale_bar(g.res / s)
    return canvas


def _projected(crs: str) -> bool:
    from pyproj import CRS

    return bool(CRS.from_user_input(crs).is_projected)


# ------------------------------------------------------------------ an export


class _Sample:
    """An even subsample of a stream of rows, at most `cap` long: keeps every `stride`-th row and doubles
    the stride (dropping every other kept row) when full. `complete` while it holds every row."""

    def __init__(self, cap: int) -> None:
        self.cap, self.stride, self.seen = cap, 1, 0
        self.parts: list[np.ndarray] = []
        self.size = 0

    def add(self, rows: np.ndarray) -> None:
        first = (-self.seen) % self.stride
        part = np.array(rows[first::self.stride])  # a copy: a view would keep the whole chunk alive
        self.seen += len(rows)
        self.parts.append(part)
        self.size += len(part)
        while self.size > self.cap:
            kept = np.concatenate(self.parts)[::2]
            self.parts, self.size, self.stride = [kept], len(kept), self.stride * 2

    @property
    def complete(self) -> bool:
        return self.stride == 1

    def rows(self) -> np.ndarray:
        return np.concatenate(self.parts)


@frozen(eq=False)
class ExportColours:
    """Every vector of one model and level of an export with its place and its PCA colour."""

    src: Any  # ExportVectors
    items: np.ndarray
    rows: np.ndarray  # token-cell rows/cols; -1 at item level
    cols: np.ndarray
    rgb: np.ndarray  # (n, 3) uint8
    basis: PCABasis


def export_colours(export: str | Path, model: str | None = None, level: str = "auto",
                   chunk_rows: int = 16384) -> ExportColours:
    """One PCA basis over every item (or token cell) of `export`, and each one's colour. At most FIT_ROWS
    vectors are held at once (larger exports are read twice: fit on a subsample, then paint)."""
    from .search_source import ExportVectors

    src = ExportVectors(export, model, level)
    sample = _Sample(FIT_ROWS)
    items, rows, cols = [], [], []
    for ch in src.chunks(chunk_rows):
        sample.add(ch.vectors)
        items.append(ch.items)
        rows.append(ch.rows)
        cols.append(ch.cols)
    if not sample.seen:
        raise SearchError(f"{export}: no finite vector of {src.key} to colour")
    basis = PCABasis.fit(sample.rows())
    if sample.complete:
        rgb = basis.rgb(sample.rows())
    else:
        rgb = np.concatenate([basis.rgb(ch.vectors) for ch in src.chunks(chunk_rows)])
    return ExportColours(src, np.concatenate(items), np.concatenate(rows), np.concatenate(cols), rgb, basis)


def quicklook(export: str | Path, out: str | Path, model: str | None = None, level: str = "auto") -> str:
    """Write a PNG map of the PCA colours of an export's items (footprints) or token cells; returns its path.

    The map is plate carrée in lon/lat (x shrunk by cos(latitude)) with lon/lat ticks and a scale bar;
    places far apart relative to their size get one panel each, named, instead (as the search score map).
    """
    from .api import _png_rgb

    _check_out(out, (".png",))
    return _export_canvas(export_colours(export, model, level)).write(out, _png_rgb)


def _export_canvas(ec: ExportColours) -> _Canvas:
    from .search_map import Footprints, _Layout

    fp = Footprints(ec.src)
    boxes = fp.box_of(ec.items, ec.rows, ec.cols)
    layout = _Layout.choose(boxes, ec.items, {int(i): fp.item_box(int(i)) for i in np.unique(ec.items)})
    w, h = layout.size
    pic = np.empty((h, w, 3), np.uint8)
    pic[:] = _BG
    for j in range(len(boxes)):
        x0, y0, x1, y1 = layout.pixels(boxes[j], int(ec.items[j]))
        pic[y0:y1, x0:x1] = ec.rgb[j]
    what = "cells" if ec.src.level == "cell" else "items"
    title = f"{ec.src.root.name}  {ec.src.key}  PCA RGB OF {len(boxes)} {what}"
    canvas = _Canvas(pic, title, ec.basis.legend())
    if -1 in layout.frames:
        minx, maxy, kx, scale, _, _ = layout.frames[-1]
        px, py = np.arange(w + 1, dtype=np.float64), np.arange(h + 1, dtype=np.float64)
        canvas.lon_ticks(px, minx + px / (kx * scale))
        canvas.lat_ticks(py, maxy - py / scale)
        canvas.scale_bar(_METRES_PER_DEGREE / scale)
    else:
        for i, (*_, ox, oy) in layout.frames.items():
            canvas.label(ec.src.names[i], ox, oy)
        canvas.note("ONE PANEL PER ITEM (PLACES FAR APART), EXPORT ORDER; EACH FOOTPRINT FILLS ITS PANEL")
    return canvas


def quicklook_map(export: str | Path, model: str | None = None, level: str = "auto",
                  max_features: int = MAX_MAP_FEATURES) -> Any:
    """An interactive folium.Map of the PCA colours of an export's items or token cells (Jupyter shows it;
    `.save("map.html")` writes it). Needs the core's `maps` extra (folium)."""
    try:
        import folium
    except ImportError:
        raise MissingExtraError("an interactive quicklook map needs folium: pip install 'rs-embed-core[maps]' "
                                "(or pip install folium); rs_embed.quicklook writes a PNG without it",
                                extra="maps") from None
    from .search_source import ExportVectors

    src = ExportVectors(export, model, level)
    n = _feature_count(src)
    if n > max_features:
        raise SearchError(f"{n} {src.level}s are too many polygons for an interactive map (max_features="
                          f"{max_features}); use level='item', or the PNG: rs_embed.quicklook(export, 'map.png')")
    ec = export_colours(export, model, level)
    feats = list(_features(ec))
    m = folium.Map(tiles="OpenStreetMap", control_scale=True)
    folium.GeoJson(
        {"type": "FeatureCollection", "features": feats},
        name=f"{ec.src.key} PCA RGB",
        style_function=lambda f: {"fillColor": f["properties"]["colour"], "color": f["properties"]["colour"],
                                  "weight": 1, "fillOpacity": 0.85},
        tooltip=folium.GeoJsonTooltip(fields=["name", "row", "col"] if ec.src.level == "cell" else ["name"]),
    ).add_to(m)
    lons = [p[0] for f in feats for p in f["geometry"]["coordinates"][0]]
    lats = [p[1] for f in feats for p in f["geometry"]["coordinates"][0]]
    m.fit_bounds([[min(lats), min(lons)], [max(lats), max(lons)]])
    legend = "<br>".join(html.escape(t.lower()) for t in [ec.src.key, *ec.basis.legend()])
    m.get_root().html.add_child(folium.Element(
        f'<div style="position:fixed;bottom:24px;left:12px;z-index:9999;background:white;padding:4px 8px;'
        f'font:12px sans-serif;opacity:.9">{legend}</div>'))
    return m


def _feature_count(src: Any) -> int:
    if src.level == "item":
        return int(src.status.sum())
    total = 0
    for i in range(src.n_items):
        g = src.item_grid(i)
        total += 0 if g is None else g.width * g.height
    return total


def _features(ec: ExportColours) -> Iterator[dict[str, Any]]:
    hexes = [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in ec.rgb.tolist()]
    if ec.src.level == "item":
        for j, i in enumerate(ec.items.tolist()):
            ring = [list(p) for p in ec.src.item_footprint(i)]
            yield _feature(ring, ec.src.names[i], i, None, None, hexes[j])
        return
    for i in np.unique(ec.items).tolist():
        sel = np.flatnonzero(ec.items == i)
        rings = ec.src.cell_footprints(i, ec.rows[sel], ec.cols[sel])
        for j, ring in zip(sel.tolist(), rings):
            yield _feature([list(p) for p in ring], ec.src.names[i], i, int(ec.rows[j]), int(ec.cols[j]), hexes[j])


def _feature(ring: list[list[float]], name: str, item: int, row: int | None, col: int | None,
             colour: str) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"name": name, "id": item, "row": row, "col": col, "colour": colour}}


def _check_out(out: str | Path, suffixes: tuple[str, ...]) -> None:
    """Before any work: the file's kind, and a folder to write it in."""
    if Path(out).suffix.lower() not in suffixes:
        raise SpecError(f"the quicklook is written as {' or '.join(suffixes)}; got {out}")
    if not Path(out).expanduser().resolve().parent.is_dir():
        raise SpecError(f"the folder of {out} does not exist")


def _write_atomic(path: str | Path, data: bytes) -> None:
    """Through a temporary file and a rename: an interrupted run never leaves half a picture."""
    import os
    import tempfile

    dest = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ the frame around a picture


def _nice_step(span: float, n: int) -> float:
    raw = max(span, 1e-12) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))


def _degrees(v: float, step: float, pos: str, neg: str) -> str:
    d = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{abs(v):.{d}f}°{pos if v >= 0 else neg}"


class _Canvas:
    """A picture with margins: title above, lat ticks left, lon ticks, scale bar and legend below."""

    LEFT, TOP, RIGHT = 72, 30, 36

    def __init__(self, pic: np.ndarray, title: str, legend: list[str]) -> None:
        self.pic = pic
        self.title, self.legend = title, legend
        self.marks: list[tuple[str, int, int, tuple[int, int, int]]] = []  # text in picture coordinates
        self.ticks: list[tuple[str, float, str]] = []  # axis, pixel, label
        self.bar: tuple[int, str] | None = None
        self.notes: list[str] = []

    def lon_ticks(self, px: np.ndarray, lon: np.ndarray) -> None:
        self._ticks("x", px, lon, "E", "W")

    def lat_ticks(self, py: np.ndarray, lat: np.ndarray) -> None:
        self._ticks("y", py, lat, "N", "S")

    def _ticks(self, axis: str, pix: np.ndarray, deg: np.ndarray, pos: str, neg: str) -> None:
        if deg[-1] < deg[0]:
            pix, deg = pix[::-1], deg[::-1]
        length = self.pic.shape[1] if axis == "x" else self.pic.shape[0]
        label_px = text_size("000.0000°E")[0] + 18 if axis == "x" else 28  # room for a label, or a line
        step = _nice_step(float(deg[-1] - deg[0]), max(1, min(6, length // label_px)))
        for v in np.arange(math.ceil(deg[0] / step) * step, deg[-1] + step * 1e-9, step):
            self.ticks.append((axis, float(np.interp(v, deg, pix)), _degrees(float(v), step, pos, neg)))

    def scale_bar(self, metres_per_pixel: float) -> None:
        width_m = self.pic.shape[1] * metres_per_pixel
        m = _nice_step(width_m / 4, 1)
        if m > width_m / 3:
            m = _nice_step(width_m / 8, 1)
        self.bar = (max(1, round(m / metres_per_pixel)), f"{m / 1000:g} KM" if m >= 1000 else f"{m:g} M")

    def label(self, text: str, x: int, y: int) -> None:
        self.marks.append((text, x + 3, y + 3, _INK))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def write(self, path: str | Path, encode: Any) -> str:
        h, w = self.pic.shape[:2]
        lines = self.notes + self.legend
        width = max(w + self.LEFT + self.RIGHT, max(text_size(t)[0] for t in lines + [self.title]) + 2 * 8)
        x_labels = 14 if any(a == "x" for a, _, _ in self.ticks) else 0
        bottom = 6 + x_labels + (16 if self.bar else 0) + 11 * len(lines) + 6
        img = np.empty((self.TOP + h + bottom, width, 3), np.uint8)
        img[:] = _BG
        ox, oy = self.LEFT, self.TOP
        img[oy:oy + h, ox:ox + w] = self.pic
        frame = (90, 90, 90)
        img[oy - 1, ox - 1:ox + w + 1] = img[oy + h, ox - 1:ox + w + 1] = frame
        img[oy - 1:oy + h + 1, ox - 1] = img[oy - 1:oy + h + 1, ox + w] = frame
        draw_text(img, fit_text(self.title, width - 16, 2), 8, 8, _INK, scale=2)
        for text, x, y, colour in self.marks:
            tw, th = text_size(text)
            img[oy + y - 1:oy + y + th + 1, ox + x - 1:ox + x + tw + 1] = _BG
            draw_text(img, text, ox + x, oy + y, colour)
        for axis, p, text in self.ticks:
            tw, th = text_size(text)
            if axis == "x":
                x = ox + int(round(p))
                img[oy + h:oy + h + 4, max(x, 0):x + 1] = _INK
                draw_text(img, text, min(max(x - tw // 2, 0), width - tw), oy + h + 6, _INK)
            else:
                y = oy + int(round(p))
                img[y:y + 1, ox - 5:ox - 1] = _INK
                draw_text(img, text, max(ox - 7 - tw, 0), min(max(y - th // 2, 0), img.shape[0] - th), _INK)
        y = oy + h + 6 + x_labels
        if self.bar:
            n, text = self.bar
            img[y + 4:y + 6, ox:ox + n] = _INK
            img[y + 1:y + 9, ox:ox + 1] = img[y + 1:y + 9, ox + n - 1:ox + n] = _INK
            draw_text(img, text, ox + n + 6, y + 2, _INK)
            y += 16
        for t in lines:
            draw_text(img, t, 8, y, _DIM if t in self.notes else _INK)
            y += 11
        _write_atomic(path, encode(img))
        return str(path)
