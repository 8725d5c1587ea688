"""Similarity search over an export: the k items (or token cells) most like a query.

`search(export, query, k)` scores every vector of one model of an export folder (any layout and
format `export_batch` writes) by cosine similarity with the query: both sides L2-normalised, so
the score is a dot product in [-1, 1]. The exact scan reads the export in bounded chunks
(GeoParquet record batches, one grid item at a time) and keeps a running top-k, so memory is
flat in the number of rows. `index="approx"` uses an HNSW index (usearch, the `search` extra)
built once and kept beside the export under `.search/`, with the digest of what it indexes; a
stale or corrupted index is rebuilt, never used (search_index.py).

Queries, all resolved before the scan and checked before any heavy work:
- an item of the export: its name (str) or index (int); it is left out of its own results;
- `LonLat(lon, lat)`: the exported vector at that place (the token cell there for grid exports,
  the item whose footprint holds it otherwise);
- a `PointBuffer` / `BBox`: embedded on the fly with exactly the export's recorded model,
  variant, weights (repo, revision, sha256), sensor(s), preprocessing chain, output, input
  preparation and time window, so it is comparable; grid exports take the mean of its cells;
- a vector (numpy array (D,), or (n, D) for the mean of n) or an `Embedding` (its model, variant
  and weights must be the export's);
- `TextQuery("...")`, or a str that names no item, for models with a text tower (RemoteCLIP):
  the text embedding in the pooled image space;
- a list of any of these: the mean of their normalised vectors (normalised again).
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Any, Sequence

import numpy as np
from attrs import field, frozen

from .embedding import Embedding
from .errors import (
    BatchError, DimensionMismatchError, IncomparableQueryError, NoTextTowerError, SearchError, SpecError, UnknownItemError,
)
from .search_source import Chunk, ExportVectors, ring_wkb
from .specs import BBox, PointBuffer, _check_lat, _check_lon, _finite

INDEXES = ("exact", "approx")
DEFAULT_CHUNK_ROWS = 16384  # 16 k rows x 768 float32 = 48 MB a chunk


@frozen
class TextQuery:
    """Text to embed with the export model's text tower (CLIP-style models only)."""

    text: str = field()

    @text.validator
    def _check(self, _: Any, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise SpecError(f"TextQuery needs non-empty text, got {value!r}")


@frozen
class LonLat:
    """A place whose already exported vector is the query (the cell there, or the item holding it)."""

    lon: float = field(converter=lambda v: _finite("lon", v))
    lat: float = field(converter=lambda v: _finite("lat", v))

    def __attrs_post_init__(self) -> None:
        _check_lon("lon", self.lon)
        _check_lat("lat", self.lat)


# ---------------------------------------------------------------- queries -> one unit vector


@frozen
class _Part:
    """One parsed query: how to get its vector, and what to leave out of the results."""

    kind: str  # item | cell | spatial | vector | text
    value: Any
    exclude_item: int | None = None
    exclude_cell: tuple[int, int, int] | None = None


def _parse(src: ExportVectors, query: Any, backend: Any) -> list[_Part]:
    """Validate every query part against the export; no model work, no scan."""
    items = list(query) if isinstance(query, list) else [query]
    if not items:
        raise SpecError("query is an empty list")
    parts = [_parse_one(src, q, backend) for q in items]
    return parts


def _parse_one(src: ExportVectors, q: Any, backend: Any) -> _Part:
    if isinstance(q, bool):
        raise SpecError(f"not a query: {q!r}")
    if isinstance(q, (int, np.integer)):
        i = int(q)
        if not 0 <= i < src.n_items:
            raise UnknownItemError(f"item index {i} is outside the export (0..{src.n_items - 1})")
        return _item_part(src, i)
    if isinstance(q, str):
        if q in src.names:
            return _item_part(src, src.names.index(q))
        if _text_tower(src) is not None:
            return _text_part(src, TextQuery(q))
        close = difflib.get_close_matches(q, src.names, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownItemError(f"no item named {q!r} in the export.{hint} ({src.info['model']} has no text tower, "
                               "so the string cannot be a text query either)")
    if isinstance(q, TextQuery):
        return _text_part(src, q)
    if isinstance(q, LonLat):
        if src.level == "cell":
            hit = src.cell_at(q.lon, q.lat)
            if hit is None:
                raise UnknownItemError(f"{q} lies in no token cell of the export; pass PointBuffer(lon, lat, buffer_m) "
                                       "to embed that place on the fly")
            return _Part("cell", hit, exclude_cell=hit)
        hits = src.item_at(q.lon, q.lat)
        if not hits:
            raise UnknownItemError(f"{q} lies in no item footprint of the export; pass PointBuffer(lon, lat, "
                                   "buffer_m) to embed that place on the fly")
        return _item_part(src, hits[0])
    if isinstance(q, (PointBuffer, BBox)):
        _check_embeddable(src, backend)
        return _Part("spatial", q)
    if isinstance(q, Embedding):
        _check_same_model(src, q.meta)
        data = np.asarray(q.data, np.float32)
        vec = data if data.ndim == 1 else np.nanmean(data.reshape(data.shape[0], -1), axis=1)
        return _Part("vector", _check_dim(src, vec[None]))
    if isinstance(q, np.ndarray):
        if q.ndim not in (1, 2) or q.size == 0:
            raise SpecError(f"a vector query is a (D,) or (n, D) array, got shape {q.shape}")
        return _Part("vector", _check_dim(src, np.atleast_2d(q).astype(np.float32)))
    raise SpecError(f"not a query: {q!r} (an item name or index, LonLat, PointBuffer, BBox, a numpy vector, an "
                    "Embedding, TextQuery, or a list of these)")


def _item_part(src: ExportVectors, i: int) -> _Part:
    if not src.status[i]:
        raise UnknownItemError(f"item {i} ({src.names[i]!r}) has no {src.key} embedding (it failed or is pending)")
    return _Part("item", i, exclude_item=i)


def _check_dim(src: ExportVectors, vec: np.ndarray) -> np.ndarray:
    if vec.shape[1] != src.dim:
        raise DimensionMismatchError(f"the query vector has {vec.shape[1]} dimensions, the export's {src.key} "
                                     f"{src.level} vectors have {src.dim}")
    if not np.isfinite(vec).all():
        raise SpecError("the query vector holds NaN or infinite values")
    return vec


def _check_same_model(src: ExportVectors, meta: dict[str, Any]) -> None:
    """Vectors from another model, variant or checkpoint live in another space: refuse them."""
    info = src.info
    theirs = {"model": meta.get("model"), "variant": meta.get("variant"),
              "sha256": (meta.get("weights") or {}).get("sha256")}
    ours = {"model": info["model"], "variant": info["variant"], "sha256": (info.get("weights") or {}).get("sha256")}
    diff = [f"{k} {theirs[k]!r} (export: {ours[k]!r})" for k in ours if theirs[k] != ours[k]]
    if diff:
        raise IncomparableQueryError("the query Embedding comes from another model than the export's, so their "
                                     f"vectors are not comparable: {', '.join(diff)}. Embed the query with the "
                                     "export's model, or pass a PointBuffer/BBox to have it embedded that way")


def _text_tower(src: ExportVectors) -> type | None:
    from .registry import embedder_class

    cls = embedder_class(src.info["model"])
    return cls if callable(getattr(cls, "embed_text", None)) else None


def _text_part(src: ExportVectors, q: TextQuery) -> _Part:
    cls = _text_tower(src)
    if cls is None:
        raise NoTextTowerError(f"{src.info['model']} has no text tower, so a text query cannot be compared with "
                               "its vectors; text search needs a CLIP-style model such as remoteclip")
    pooled_dim = cls.card.variant(src.info["variant"]).pooled_dim
    if src.dim != pooled_dim:
        raise DimensionMismatchError(
            f"text embeddings of {src.info['model']} live in its pooled space ({pooled_dim} dimensions); the "
            f"export's {src.key} {src.level} vectors have {src.dim} (grid tokens come before the projection). "
            "Search a pooled export of this model for text")
    return _Part("text", q.text)


def _check_embeddable(src: ExportVectors, backend: Any) -> None:
    from .registry import embedder_class

    embedder_class(src.info["model"])  # the plugin must be installed
    if backend is None and not isinstance(src.request.get("backend"), str):
        raise SearchError("the export was made with a provider object; pass backend= (the same data source) to "
                          "embed a place on the fly")


def _query_vector(src: ExportVectors, parts: list[_Part], backend: Any, device: str | None) -> np.ndarray:
    """The mean of the parts' L2-normalised vectors, normalised again."""
    vecs: list[np.ndarray] = []
    spatial = [p.value for p in parts if p.kind == "spatial"]
    embedded = iter(_embed_spatials(src, spatial, backend, device) if spatial else [])
    texts = [p.value for p in parts if p.kind == "text"]
    text_vecs = iter(_embed_texts(src, texts, device) if texts else [])
    for p in parts:
        if p.kind == "item":
            v = src.item_vector(p.value)
            if v is None:
                raise UnknownItemError(f"item {p.value} ({src.names[p.value]!r}) has no finite {src.key} vector")
            vecs.append(v[None])
        elif p.kind == "cell":
            i, r, c = p.value
            cells = src.item_cells(i)
            vecs.append(cells[:, r, c][None])
        elif p.kind == "spatial":
            vecs.append(next(embedded)[None])
        elif p.kind == "text":
            vecs.append(next(text_vecs)[None])
        else:
            vecs.append(p.value)
    units = []
    for v in vecs:
        if not np.isfinite(v).all():
            raise SearchError("a query vector holds NaN (the place has no valid pixels in the export's data)")
        units.append(_normalise(v.astype(np.float64)))
    q = np.concatenate(units).mean(axis=0)
    n = float(np.linalg.norm(q))
    if not n > 1e-12:
        raise SearchError("the query vectors cancel out (their mean is zero); give a different set")
    return (q / n).astype(np.float32)


def _normalise(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    if (n <= 1e-12).any():
        raise SearchError("a query vector is all zeros; it has no direction to compare")
    return v / n


def recorded_weights(src: ExportVectors) -> Any:
    """The export's weights (repo, revision, sha256, or your local file) as a WeightsSpec, or None."""
    from .card import WeightsSpec
    from .registry import embedder_class

    w = src.info.get("weights")
    if w is None:
        return None
    card_w = embedder_class(src.info["model"]).card.variant(src.info["variant"]).weights
    same = card_w is not None and (card_w.repo_id, card_w.filename) == (w["repo_id"], w["filename"])
    return WeightsSpec(w["repo_id"], w["revision"], w["filename"], w["sha256"],
                       card_w.license if same else "as recorded in the export", w.get("path"))


def _embed_spatials(src: ExportVectors, spatials: list[Any], backend: Any, device: str | None) -> list[np.ndarray]:
    """Embed places exactly as the export did: its model, variant, weights, sensors, chain, output, window."""
    from .api import get_embeddings_batch as _embed_batch
    from .card import Step
    from .convert import converter
    from .export import ModelRequest
    from .specs import OutputSpec, SensorSpec, TemporalSpec
    from .tiling import TileSpec

    req, info = src.request, src.info
    rq = next((m for m in req["models"] if ModelRequest(m["model"], m.get("variant")).key == src.key), {})
    prep = rq.get("input_prep") or req["input_prep"]
    sensors = tuple(converter.structure(s, SensorSpec) for s in info["sensors"])
    try:
        embs = _embed_batch(
            info["model"], spatials, converter.structure(req["temporal"], TemporalSpec),
            converter.structure(info["output"], OutputSpec), backend if backend is not None else req["backend"],
            device, prep if isinstance(prep, str) else converter.structure(prep, TileSpec),
            sensor=sensors[0] if len(sensors) == 1 else sensors, variant=info["variant"],
            preprocessing=[Step.of(s) for s in info["preprocessing"]], weights=recorded_weights(src), progress=False)
    except BatchError as exc:  # one failed place: its own typed error, as get_embedding raises it
        cause = exc.errors[0].cause
        raise (cause if cause is not None else exc.errors[0].to_exception()) from None
    out = []
    for e in embs:
        d = np.asarray(e.data, np.float32)
        out.append(d if d.ndim == 1 else np.nanmean(d.reshape(d.shape[0], -1), axis=1))
    return out


def _embed_texts(src: ExportVectors, texts: list[str], device: str | None) -> np.ndarray:
    """Text embeddings from the text tower of exactly the export's variant and weights."""
    import attrs

    from .runner import resolve_device

    cls = _text_tower(src)
    assert cls is not None
    var = cls.card.variant(src.info["variant"])
    w = recorded_weights(src)
    if w is not None:
        var = attrs.evolve(var, weights=w)
    model = cls(var, resolve_device(device, bool(cls.uses_torch)))
    return np.asarray(model.embed_text(texts), np.float32)


# ---------------------------------------------------------------- where


def _where_mask(src: ExportVectors, where: Any) -> np.ndarray | None:
    """Items allowed by `where`: names / indices, a BBox (item centre inside), or a callable on the manifest item."""
    if where is None:
        return None
    n = src.n_items
    mask = np.zeros(n, bool)
    if isinstance(where, BBox):
        for i in range(n):
            mask[i] = _inside(where, *src.spatial(i).center)
        return mask
    if callable(where):
        for i, it in enumerate(src.manifest["items"]):
            mask[i] = bool(where(it))
        return mask
    if isinstance(where, (str, int)) or not isinstance(where, (list, tuple, set, frozenset)):
        raise SpecError(f"where takes a list of item names or indices, a BBox, or a function of the manifest item; "
                        f"got {where!r}")
    for w in where:
        if isinstance(w, str) and w in src.names:
            mask[src.names.index(w)] = True
        elif isinstance(w, (int, np.integer)) and not isinstance(w, bool) and 0 <= int(w) < n:
            mask[int(w)] = True
        else:
            raise UnknownItemError(f"where names {w!r}, which is not an item of the export")
    return mask


def _inside(box: BBox, lon: float, lat: float) -> bool:
    if not box.minlat <= lat <= box.maxlat:
        return False
    if box.crosses_antimeridian:
        return lon >= box.minlon or lon <= box.maxlon
    return box.minlon <= lon <= box.maxlon


# ---------------------------------------------------------------- exact scan


class TopK:
    """A running top-k over scored chunks; ties keep the earlier row (export order)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores = np.zeros(0, np.float32)
        self.order = np.zeros(0, np.int64)  # position in the scan, for stable ties
        self.items = np.zeros(0, np.int64)
        self.rows = np.zeros(0, np.int64)
        self.cols = np.zeros(0, np.int64)
        self.seen = 0

    def add(self, chunk: Chunk, scores: np.ndarray, keep: np.ndarray | None = None) -> None:
        order = np.arange(self.seen, self.seen + len(scores))
        self.seen += len(scores)
        if keep is not None:
            chunk = Chunk(chunk.items[keep], chunk.rows[keep], chunk.cols[keep], chunk.vectors[:0])
            scores, order = scores[keep], order[keep]
        s = np.concatenate([self.scores, scores])
        o = np.concatenate([self.order, order])
        it = np.concatenate([self.items, chunk.items])
        r = np.concatenate([self.rows, chunk.rows])
        c = np.concatenate([self.cols, chunk.cols])
        if len(s) > self.k:
            best = np.lexsort((o, -s))[:self.k]
            s, o, it, r, c = s[best], o[best], it[best], r[best], c[best]
        self.scores, self.order, self.items, self.rows, self.cols = s, o, it, r, c

    def result(self) -> tuple[np.ndarray, ...]:
        best = np.lexsort((self.order, -self.scores))
        return self.scores[best], self.items[best], self.rows[best], self.cols[best]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero and score 0)."""
    n = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(n > 0, n, 1.0)


def scan(src: ExportVectors, q: np.ndarray, k: int, keep_mask: Any, chunk_rows: int, on_scores: Any = None) -> TopK:
    """Exact cosine scores of every row, chunk by chunk; `keep_mask(chunk)` -> bool rows allowed (or None)."""
    top = TopK(k)
    for chunk in src.chunks(chunk_rows):
        scores = unit_rows(chunk.vectors) @ q
        ok = keep_mask(chunk)
        if on_scores is not None:
            on_scores(chunk, scores, ok)
        top.add(chunk, scores, ok)
    return top


# ---------------------------------------------------------------- the public call


def search(
    export: Any,
    query: Any,
    k: int = 10,
    model: str | None = None,
    where: Any = None,
    *,
    level: str = "auto",
    index: str = "exact",
    exclude_query: bool = True,
    backend: Any = None,
    device: str | None = "auto",
    quicklook: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Any:
    """The k vectors of `export` most similar to `query` (see the module docs), as a pyarrow Table.

    Columns: rank, id (item index), name, row / col (the token cell; null at item level), score
    (cosine, 1 = same direction), lon / lat (the centre), geometry (WGS 84 polygon, WKB: the
    item footprint or the cell). The table's "geo" metadata makes `pyarrow.parquet.write_table`
    write GeoParquet; `.to_pandas()` gives a DataFrame.

    model: the export's model key or id (needed when it holds several). where: item names or
    indices, a BBox (items whose centre lies inside), or a function of the manifest item record
    -> bool. level: "item", "cell" (grid exports: every token cell) or "auto" (cells for grid
    exports). index: "exact" (chunked scan) or "approx" (usearch HNSW index beside the export).
    backend: the data source for places embedded on the fly (default: the export's own, as
    recorded). quicklook: also write a PNG of all scores over the footprints / cells (this needs
    every score, so it scans exactly even with index="approx").
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise SpecError(f"k must be a positive integer, got {k!r}")
    if index not in INDEXES:
        raise SpecError(f"index must be one of {INDEXES}, got {index!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows <= 0:
        raise SpecError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    _need_pyarrow()
    src = ExportVectors(export, model, level)
    parts = _parse(src, query, backend)
    allowed = _where_mask(src, where)
    if quicklook:
        from .cli import _writable_file

        _writable_file(quicklook, "quicklook")
    if index == "approx":
        from .search_index import approx_index

        approx = approx_index(src)  # checks the extra is installed before any model work
    q = _query_vector(src, parts, backend, device)

    ex_items = {p.exclude_item for p in parts if p.exclude_item is not None} if exclude_query else set()
    ex_cells = {p.exclude_cell for p in parts if p.exclude_cell is not None} if exclude_query else set()

    def keep(chunk: Chunk) -> np.ndarray | None:
        ok = np.ones(len(chunk.items), bool) if allowed is None else allowed[chunk.items]
        if ex_items:
            ok &= ~np.isin(chunk.items, list(ex_items))
        for i, r, c in ex_cells:
            ok &= ~((chunk.items == i) & (chunk.rows == r) & (chunk.cols == c))
        return None if ok.all() else ok

    used = "exact"
    painter = None
    if quicklook:
        from .search_map import ScoreMap

        painter = ScoreMap(src)
    if index == "approx" and painter is None:
        top = approx.search(q, k, keep)
        used = "approx" if top is not None else "exact (approx found too few rows passing where)"
    else:
        top = None
    if top is None:
        top = scan(src, q, int(k), keep, chunk_rows, painter.add if painter else None)
    scores, items, rows, cols = top.result()
    table = _table(src, scores, items, rows, cols, {"query": _describe(parts), "index": used})
    if painter is not None:
        painter.write(quicklook, table, parts)
    return table


def _need_pyarrow() -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise SearchError("search returns a pyarrow Table: pip install pyarrow (the core's `export` extra)")


def _describe(parts: list[_Part]) -> list[str]:
    out = []
    for p in parts:
        if p.kind == "vector":
            out.append(f"vector{list(p.value.shape)}")
        else:
            out.append(f"{p.kind}:{p.value}")
    return out


def _table(src: ExportVectors, scores, items, rows, cols, extra: dict[str, Any]) -> Any:
    import pyarrow as pa

    from .grid import _transformer

    geoms, lons, lats = [], [], []
    cell = src.level == "cell"
    for i, r, c in zip(items, rows, cols):
        ring = src.cell_footprints(int(i), np.asarray([r]), np.asarray([c]))[0] if cell else src.item_footprint(int(i))
        geoms.append(ring_wkb(ring))
        if cell:
            g = src.item_grid(int(i))
            x, y = g.x0 + (c + 0.5) * g.res, g.y0 - (r + 0.5) * g.yres
            lon, lat = _transformer(g.crs, "EPSG:4326").transform(x, y)
        else:
            lon, lat = src.spatial(int(i)).center
        lons.append(lon)
        lats.append(lat)
    bbox = _bbox(geoms)
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {
        "encoding": "WKB", "geometry_types": ["Polygon"], **({"bbox": bbox} if bbox else {})}}}
    meta = {"export": str(src.root), "model": src.key, "level": src.level, **extra}
    schema = pa.schema([
        ("rank", pa.int32()), ("id", pa.int64()), ("name", pa.string()), ("row", pa.int32()), ("col", pa.int32()),
        ("score", pa.float64()), ("lon", pa.float64()), ("lat", pa.float64()), ("geometry", pa.binary()),
    ], metadata={"geo": json.dumps(geo), "rs_embed_search": json.dumps(meta, default=str)})
    return pa.table({
        "rank": list(range(1, len(scores) + 1)), "id": [int(i) for i in items],
        "name": [src.names[int(i)] for i in items],
        "row": [int(r) if cell else None for r in rows], "col": [int(c) if cell else None for c in cols],
        "score": [float(s) for s in scores], "lon": lons, "lat": lats, "geometry": geoms,
    }, schema=schema)


def _bbox(geoms: list[bytes]) -> list[float] | None:
    from .search_source import wkb_ring

    if not geoms:
        return None
    pts = np.concatenate([wkb_ring(g) for g in geoms])
    return [float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())]


def build_index(export: Any, model: str | None = None, level: str = "auto", *, rebuild: bool = False) -> Any:
    """Build (or check) the approximate index of one model of an export; returns its description."""
    from .search_index import approx_index

    idx = approx_index(ExportVectors(export, model, level))
    idx.ensure(force=rebuild)
    return idx.describe()


def hits_geojson(table: Any) -> dict[str, Any]:
    """A search result as a GeoJSON FeatureCollection (WGS 84), properties = every other column."""
    from .search_source import wkb_ring

    feats = []
    for row in table.to_pylist():
        ring = wkb_ring(row.pop("geometry"))
        feats.append({"type": "Feature", "properties": {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                                         for k, v in row.items()},
                      "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]}})
    return {"type": "FeatureCollection", "features": feats}


__all__: Sequence[str] = ("LonLat", "TextQuery", "build_index", "hits_geojson", "search")
