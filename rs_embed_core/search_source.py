"""An export's vectors for one model, read back in bounded chunks, with where each vector lies.

Search must work on exports too large for memory, in every layout `export_batch` writes, so
this reads them piece by piece instead of through `load_export` (which loads everything):
GeoParquet by record batches, Zarr and per-item GeoTIFF / npz one item at a time. A combined
npz file is a single array by construction and is read whole.

Two levels: "item" (one vector per ROI: the pooled vector, or the NaN-aware mean of a grid's
cells) and "cell" (every token cell of a grid export, georeferenced by its item's GridSpec).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from attrs import frozen

from .convert import converter
from .errors import ModelNotInExportError, SearchError, SpecError
from .export import MANIFEST, check_names
from .grid import GridSpec, grid_for
from .specs import BBox, PointBuffer

LEVELS = ("auto", "item", "cell")


_manifests: dict[Path, tuple[tuple[int, int], str, dict[str, Any], dict[str, np.ndarray]]] = {}


def _read_manifest(path: Path) -> tuple[str, dict[str, Any]]:
    """The manifest's sha256 and JSON, parsed once per file version (a million items take seconds to parse)."""
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    hit = _manifests.get(path.resolve())
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    raw = path.read_bytes()
    doc = json.loads(raw)
    digest = hashlib.sha256(raw).hexdigest()
    del raw
    _manifests.clear()  # one export at a time is enough; never a growing cache
    _manifests[path.resolve()] = (stamp, digest, doc, {})
    return digest, doc


def _status(path: Path, manifest: dict[str, Any], key: str) -> np.ndarray:
    """Per item: does `key` hold a vector for it (manifest status "ok")."""
    hit = _manifests.get(path.resolve())
    cache = hit[3] if hit is not None and hit[2] is manifest else {}
    if key not in cache:
        cache[key] = np.asarray([it["status"].get(key, "pending") == "ok" for it in manifest["items"]])
    return cache[key]


@frozen(eq=False)
class Chunk:
    """A run of vectors: their item ids, cell rows/cols (-1 at item level), raw float32 vectors (n, D)."""

    items: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    vectors: np.ndarray


def _grid(crs: str, transform: Any, shape: Any) -> GridSpec:
    a, _, c, _, e, f = (float(v) for v in list(transform)[:6])
    h, w = int(shape[0]), int(shape[1])
    return GridSpec(crs, c, f, a, w, h, None if math.isclose(-e, a, rel_tol=1e-9) else -e)


class ExportVectors:
    """One model of an export folder, at one level ("item" or "cell")."""

    def __init__(self, path: Any, model: str | None = None, level: str = "auto") -> None:
        root = Path(path).expanduser()
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise SearchError(f"{root} holds no rs-embed export ({MANIFEST} not found); pass the folder export_batch "
                              "or `rs-embed export` wrote")
        self.root = root
        self.manifest_sha256, self.manifest = _read_manifest(mpath)
        models: dict[str, Any] = self.manifest.get("models") or {}
        if not models:
            raise SearchError(f"{root} holds no embeddings (the export saved none, or never finished a model); "
                              "export again with save_embeddings=True")
        self.key = self._pick(models, model)
        self.info: dict[str, Any] = models[self.key]
        self.request: dict[str, Any] = self.manifest["request"]
        self.names: list[str] = list(self.request["names"])
        self.mode: str = self.info["output"]["mode"]
        if level not in LEVELS:
            raise SpecError(f"level must be one of {LEVELS}, got {level!r}")
        if level == "cell" and self.mode != "grid":
            raise SearchError(f"level='cell' needs a grid export; {self.key} holds pooled vectors (one per item)")
        self.level = ("cell" if self.mode == "grid" else "item") if level == "auto" else level
        self.dim = int(self.info["dimensions"])
        self.fmt: str = self.request["format"]
        self.layout: str = self.request["layout"]
        self.status = _status(mpath, self.manifest, self.key)
        if not self.status.any():
            raise SearchError(f"{root}: no item of {self.key} has an embedding (every item failed or is pending)")

    @staticmethod
    def _pick(models: dict[str, Any], model: str | None) -> str:
        if model is None:
            if len(models) == 1:
                return next(iter(models))
            raise ModelNotInExportError(f"the export holds several models {sorted(models)}; name one with model=")
        if model in models:
            return model
        by_id = [k for k, v in models.items() if str(v.get("model", "")).lower() == str(model).lower()]
        if len(by_id) == 1:
            return by_id[0]
        if by_id:
            raise ModelNotInExportError(f"the export holds {model!r} several times {sorted(by_id)}; name one of those")
        raise ModelNotInExportError(f"model {model!r} is not in this export; it holds {sorted(models)}")

    # ------------------------------------------------------------ what the export holds

    @property
    def n_items(self) -> int:
        return len(self.names)

    @cached_property
    def stems(self) -> list[str]:
        """File-name stems of the items (per-item layouts), as export derives them."""
        return check_names(self.names, len(self.names))

    def spatial(self, i: int) -> PointBuffer | BBox:
        return converter.structure(self.request["spatials"][i], PointBuffer | BBox)

    @property
    def gsd(self) -> float:
        return float(self.info["sensors"][0]["scale_m"])

    def files(self) -> list[Path]:
        """Every file the vectors of this model are read from (what an index is a function of)."""
        r, key = self.root, self.key
        if self.fmt == "npz":
            return [r / f"{key}.npz"] if self.layout == "combined" else [
                r / "items" / s / f"{key}.npz" for s, ok in zip(self.stems, self.status) if ok]
        if self.mode == "pooled":
            return [r / f"{key}.parquet"]
        if self.layout == "combined":
            z = r / f"{key}.zarr"
            return sorted(p for p in z.rglob("*") if p.is_file())
        return [r / "items" / s / f"{key}.tif" for s, ok in zip(self.stems, self.status) if ok]

    def stat_fingerprint(self) -> str:
        """Cheap: the manifest's bytes and every source file's path, size and mtime."""
        h = hashlib.sha256(self.manifest_sha256.encode())
        for f in self.files():
            st = f.stat()
            h.update(f"{f.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def content_digest(self) -> str:
        """Exact: the sha256 of the manifest and of every source file's bytes, in order."""
        h = hashlib.sha256(self.manifest_sha256.encode())
        for f in self.files():
            h.update(f"{f.relative_to(self.root)}\n".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        return h.hexdigest()

    # ------------------------------------------------------------ reading

    def chunks(self, rows: int = 16384) -> Iterator[Chunk]:
        """Every vector of this level in export order, at most about `rows` a chunk (NaN/failed rows dropped)."""
        if self.mode == "pooled":
            yield from self._pooled_chunks(rows)
            return
        buf: list[Chunk] = []
        size = 0
        for i in range(self.n_items):
            if not self.status[i]:
                continue
            cells = self.item_cells(i)
            if cells is None:
                continue
            c = self._cells_chunk(i, cells) if self.level == "cell" else self._mean_chunk(i, cells)
            if len(c.items):
                buf.append(c)
                size += len(c.items)
            if size >= rows:
                yield _concat(buf)
                buf, size = [], 0
        if buf:
            yield _concat(buf)

    def _pooled_chunks(self, rows: int) -> Iterator[Chunk]:
        if self.fmt == "npz":
            for i0, arr in self._npz_pooled():
                for lo in range(0, len(arr), rows):
                    part = arr[lo:lo + rows]
                    ids = np.arange(i0 + lo, i0 + lo + len(part))
                    yield _finite(ids, part)
            return
        import pyarrow.parquet as pq

        # pre_buffer would keep every row group read so far: memory would grow with the file (3 GB per 1 M x 768)
        pf = pq.ParquetFile(self.root / f"{self.key}.parquet", pre_buffer=False)
        for batch in pf.iter_batches(batch_size=rows, columns=["id", "embedding"]):
            col, ids = batch.column("embedding"), batch.column("id")
            if col.null_count:  # failed items: null rows
                valid = col.is_valid()
                col, ids = col.filter(valid), ids.filter(valid)
            vec = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            yield _finite(ids.to_numpy().astype(np.int64), vec.reshape(-1, self.dim))

    def _npz_pooled(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.layout == "combined":
            with np.load(self.root / f"{self.key}.npz", allow_pickle=False) as z:
                yield 0, z["embeddings"]
            return
        for i, (s, ok) in enumerate(zip(self.stems, self.status)):
            if ok:
                with np.load(self.root / "items" / s / f"{self.key}.npz", allow_pickle=False) as z:
                    yield i, z["embeddings"]

    @cached_property
    def _combined_npz(self) -> dict[str, np.ndarray]:
        with np.load(self.root / f"{self.key}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in ("embeddings", "crs", "transform", "grid_shape")}

    @cached_property
    def _zarr(self) -> Any:
        import zarr

        return zarr.open_group(str(self.root / f"{self.key}.zarr"), mode="r")["embedding"]

    def item_grid(self, i: int) -> GridSpec | None:
        """The token grid of item i (grid exports), None where it has none."""
        if not self.status[i]:
            return None
        if self.fmt == "npz":
            if self.layout == "combined":
                z = self._combined_npz
                crs, tr, hw = str(z["crs"][i]), z["transform"][i], z["grid_shape"][i]
            else:
                with np.load(self.root / "items" / self.stems[i] / f"{self.key}.npz", allow_pickle=False) as f:
                    crs, tr, hw = str(f["crs"][0]), f["transform"][0], f["grid_shape"][0]
            return _grid(crs, tr, hw) if crs else None
        if self.layout == "combined":
            it = self._zarr.attrs["items"][i]
            return None if it.get("crs") is None else _grid(it["crs"], it["transform"], it["shape"])
        import rasterio

        f = self.root / "items" / self.stems[i] / f"{self.key}.tif"
        if not f.is_file():
            return None
        with rasterio.open(f) as src:
            return _grid(src.crs.to_string(), list(src.transform)[:6], (src.height, src.width))

    def item_cells(self, i: int) -> np.ndarray | None:
        """Item i's grid embedding (D, h, w), cropped to its own shape."""
        if self.fmt == "npz":
            if self.layout == "combined":
                z = self._combined_npz
                arr, hw = z["embeddings"][i], z["grid_shape"][i]
            else:
                with np.load(self.root / "items" / self.stems[i] / f"{self.key}.npz", allow_pickle=False) as f:
                    arr, hw = f["embeddings"][0], f["grid_shape"][0]
            return np.asarray(arr[:, :int(hw[0]), :int(hw[1])], np.float32)
        if self.layout == "combined":
            it = self._zarr.attrs["items"][i]
            if it.get("shape") is None:
                return None
            h, w = it["shape"]
            return np.asarray(self._zarr[i, :, :h, :w], np.float32)
        import rasterio

        f = self.root / "items" / self.stems[i] / f"{self.key}.tif"
        if not f.is_file():
            return None
        with rasterio.open(f) as src:
            return src.read().astype(np.float32, copy=False)

    def _cells_chunk(self, i: int, cells: np.ndarray) -> Chunk:
        d, h, w = cells.shape
        rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        vec = cells.reshape(d, h * w).T
        ok = np.isfinite(vec).all(axis=1)
        return Chunk(np.full(int(ok.sum()), i, np.int64), rr.ravel()[ok], cc.ravel()[ok], np.ascontiguousarray(vec[ok]))

    def _mean_chunk(self, i: int, cells: np.ndarray) -> Chunk:
        vec = cells.reshape(cells.shape[0], -1).T
        vec = vec[np.isfinite(vec).all(axis=1)]
        if not len(vec):
            return Chunk(*(np.zeros(0, np.int64),) * 3, np.zeros((0, self.dim), np.float32))
        return Chunk(np.asarray([i]), np.asarray([-1]), np.asarray([-1]), vec.mean(axis=0, keepdims=True))

    def item_vector(self, i: int) -> np.ndarray | None:
        """Item i's vector at item level (pooled, or the mean of its cells); None if it has none."""
        if not self.status[i]:
            return None
        if self.mode == "grid":
            cells = self.item_cells(i)
            c = None if cells is None else self._mean_chunk(i, cells)
            return None if c is None or not len(c.items) else c.vectors[0]
        if self.fmt == "npz":
            if self.layout == "combined":
                with np.load(self.root / f"{self.key}.npz", allow_pickle=False) as z:
                    v = z["embeddings"][i]
            else:
                with np.load(self.root / "items" / self.stems[i] / f"{self.key}.npz", allow_pickle=False) as z:
                    v = z["embeddings"][0]
        else:
            import pyarrow.compute as pc
            import pyarrow.parquet as pq

            t = pq.read_table(self.root / f"{self.key}.parquet", columns=["id", "embedding"],
                              filters=pc.field("id") == i)
            v = t.column("embedding")[0].values.to_numpy() if t.num_rows and t.column("embedding")[0].is_valid else None
        return None if v is None or not np.isfinite(v).all() else np.asarray(v, np.float32)

    # ------------------------------------------------------------ geometry

    def item_at(self, lon: float, lat: float) -> list[int]:
        """Items whose footprint (their grid at the export's GSD) holds (lon, lat)."""
        from .grid import _transformer

        hits = []
        for i in range(self.n_items):
            if not self.status[i]:
                continue
            g = grid_for(self.spatial(i), self.gsd)
            x, y = _transformer("EPSG:4326", g.crs).transform(lon, lat)
            left, bottom, right, top = g.bounds
            if left <= x < right and bottom < y <= top:
                hits.append(i)
        return hits

    def cell_at(self, lon: float, lat: float) -> tuple[int, int, int] | None:
        """(item, row, col) of the first token cell holding (lon, lat), or None."""
        from .grid import _transformer

        for i in range(self.n_items):
            g = self.item_grid(i)
            if g is None:
                continue
            x, y = _transformer("EPSG:4326", g.crs).transform(lon, lat)
            col, row = math.floor((x - g.x0) / g.res), math.floor((g.y0 - y) / g.yres)
            if 0 <= row < g.height and 0 <= col < g.width:
                return i, row, col
        return None

    def item_footprint(self, i: int) -> list[tuple[float, float]]:
        """Item i's footprint ring in lon/lat: its token grid's bounds, else its ROI grid's (as export writes)."""
        g = self.item_grid(i) if self.mode == "grid" else None
        if g is None:
            g = grid_for(self.spatial(i), self.gsd)
        return _ring(g, 0, 0, g.width, g.height, 8)

    def cell_footprints(self, i: int, rows: np.ndarray, cols: np.ndarray) -> list[list[tuple[float, float]]]:
        g = self.item_grid(i)
        assert g is not None
        return [_ring(g, int(c), int(r), 1, 1, 1) for r, c in zip(rows, cols)]


def _ring(g: GridSpec, col: int, row: int, w: int, h: int, n: int) -> list[tuple[float, float]]:
    """The lon/lat ring of a window of grid g, each edge cut into n segments (closed, counter-clockwise)."""
    from .grid import _transformer

    left, top = g.x0 + col * g.res, g.y0 - row * g.yres
    right, bottom = left + w * g.res, top - h * g.yres
    pts = ([(left + (right - left) * k / n, bottom) for k in range(n)]
           + [(right, bottom + (top - bottom) * k / n) for k in range(n)]
           + [(right - (right - left) * k / n, top) for k in range(n)]
           + [(left, top - (top - bottom) * k / n) for k in range(n)])
    lons, lats = _transformer(g.crs, "EPSG:4326").transform([p[0] for p in pts], [p[1] for p in pts])
    ring = list(zip(lons, lats))
    return ring + [ring[0]]


def ring_wkb(ring: list[tuple[float, float]]) -> bytes:
    """A one-ring polygon as little-endian WKB."""
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(struct.pack("<dd", x, y) for x, y in ring)


def wkb_ring(wkb: bytes) -> np.ndarray:
    """The outer ring (n, 2) of a little-endian WKB polygon (what export and `ring_wkb` write)."""
    order, kind, nrings, npts = struct.unpack_from("<BIII", wkb)
    if order != 1 or kind != 3 or nrings < 1:
        raise SpecError("geometry is not a little-endian WKB polygon")
    return np.frombuffer(wkb, "<f8", count=2 * npts, offset=13).reshape(npts, 2)


def _finite(ids: np.ndarray, vec: np.ndarray) -> Chunk:
    ok = np.isfinite(vec).all(axis=1)
    n = int(ok.sum())
    return Chunk(ids[ok], np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.ascontiguousarray(vec[ok], np.float32))


def _concat(parts: list[Chunk]) -> Chunk:
    return Chunk(np.concatenate([p.items for p in parts]), np.concatenate([p.rows for p in parts]),
                 np.concatenate([p.cols for p in parts]), np.concatenate([p.vectors for p in parts]))
