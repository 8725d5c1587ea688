"""The approximate nearest-neighbour index of an export (usearch HNSW, cosine), kept beside it.

Files, under `EXPORT/.search/` (a dot folder: export and resume leave it alone):
`<model>.<level>.usearch` (the index, vectors stored as float16), `<model>.<level>.keys.npz`
(index key -> item, row, col) and `<model>.<level>.json`, which records what was indexed: the
export's source files by size and mtime *and* by content sha256 (manifest included), and the
index files' own sizes, mtimes and sha256.

An index is used only when it provably indexes the export as it is now: when a source file's
size or mtime differs from the record, its content digest is recomputed, and a different
digest means the export changed: the index is rebuilt (with a warning), never used. Index files
whose size or mtime differ from the record are checked against their sha256 the same way; a
mismatch, or a file usearch cannot load, is a corrupted index: rebuilt. (A change that keeps a
file's size and mtime exactly is not looked for: rebuild with `build_index(..., rebuild=True)`.)
Scores from the index are cosines of float16-stored vectors (about 1e-3 off the exact ones).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SearchError
from .export import atomic_write
from .search_source import Chunk, ExportVectors

INDEX_DIR = ".search"
FORMAT_VERSION = 1
DTYPE = "f16"
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 16, 128, 64

_loaded: dict[Path, tuple[str, Any, dict[str, np.ndarray]]] = {}  # sidecar path -> (its text, index, keys)


def approx_index(src: ExportVectors) -> ApproxIndex:
    if importlib.util.find_spec("usearch") is None:
        raise SearchError("index='approx' needs usearch: pip install usearch (the core's `search` extra), "
                          "or use the exact search (index='exact')")
    return ApproxIndex(src)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class ApproxIndex:
    def __init__(self, src: ExportVectors) -> None:
        from .export import _file_stem

        self.src = src
        base = src.root / INDEX_DIR / f"{_file_stem(src.key)}.{src.level}"
        self.index_path = base.with_name(base.name + ".usearch")
        self.keys_path = base.with_name(base.name + ".keys.npz")
        self.record_path = base.with_name(base.name + ".json")

    # ------------------------------------------------------------ freshness

    def _record(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None

    def stale_reason(self) -> str | None:
        """None when the index on disk indexes the export as it is now; otherwise why not."""
        rec = self._record()
        if rec is None:
            return "no index yet" if not self.record_path.exists() else "its record is unreadable"
        want = {"format": FORMAT_VERSION, "model": self.src.key, "level": self.src.level, "dim": self.src.dim,
                "dtype": DTYPE}
        if any(rec.get(k) != v for k, v in want.items()):
            return "it was built with other settings"
        for path, name in ((self.index_path, "index"), (self.keys_path, "keys")):
            if not path.is_file():
                return f"its {name} file is missing"
            if _stat(path) != rec.get(f"{name}_stat") and _sha256(path) != rec.get(f"{name}_sha256"):
                return f"its {name} file is corrupted (sha256 differs from the record)"
        try:
            stat = self.src.stat_fingerprint()
        except FileNotFoundError as exc:
            return f"a source file is missing ({exc.filename})"
        if stat != rec.get("source_stat"):
            if self.src.content_digest() != rec.get("source_sha256"):
                return "the export changed since it was built"
            rec["source_stat"] = stat  # touched, not changed: remember the new times
            self._write_record(rec)
        return None

    def _write_record(self, rec: dict[str, Any]) -> None:
        atomic_write(self.record_path, lambda p: p.write_text(json.dumps(rec, indent=1)))

    # ------------------------------------------------------------ build / load

    def ensure(self, force: bool = False) -> tuple[Any, dict[str, np.ndarray]]:
        """The loaded index and its key table, (re)built first when missing, stale or corrupted."""
        reason = "rebuild asked for" if force else self.stale_reason()
        if reason is not None:
            if reason not in ("no index yet", "rebuild asked for"):
                warnings.warn(f"rebuilding the search index of {self.src.root} ({self.src.key}, {self.src.level}): "
                              f"{reason}", stacklevel=3)
            _loaded.pop(self.record_path, None)
            self._build()
        text = self.record_path.read_text()
        hit = _loaded.get(self.record_path)
        if hit is not None and hit[0] == text:
            return hit[1], hit[2]
        Index = _usearch()
        try:
            index = Index.restore(str(self.index_path), view=True)
            with np.load(self.keys_path, allow_pickle=False) as z:
                keys = {k: z[k] for k in ("items", "rows", "cols")}
        except Exception as exc:  # noqa: BLE001 - any unreadable index is rebuilt, never used
            if force:
                raise SearchError(f"the search index just built at {self.index_path} cannot be read: {exc}") from exc
            warnings.warn(f"rebuilding the search index {self.index_path}: it cannot be read ({exc})", stacklevel=3)
            return self.ensure(force=True)
        if index is None or len(index) != len(keys["items"]) or index.ndim != self.src.dim:
            if force:
                raise SearchError(f"the search index just built at {self.index_path} does not match its keys")
            return self.ensure(force=True)
        _loaded[self.record_path] = (text, index, keys)
        return index, keys

    def _build(self) -> None:
        Index = _usearch()
        src = self.src
        stat, digest = src.stat_fingerprint(), src.content_digest()
        index = Index(ndim=src.dim, metric="cos", dtype=DTYPE, connectivity=CONNECTIVITY,
                      expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
        items, rows, cols = [], [], []
        n = 0
        for chunk in src.chunks():
            norms = np.linalg.norm(chunk.vectors, axis=1)
            ok = norms > 0
            vec = chunk.vectors[ok] / norms[ok, None]
            index.add(np.arange(n, n + len(vec), dtype=np.uint64), vec)
            n += len(vec)
            items.append(chunk.items[ok])
            rows.append(chunk.rows[ok])
            cols.append(chunk.cols[ok])
        if n == 0:
            raise SearchError(f"{src.root}: {src.key} has no vectors to index")
        keys = {"items": np.concatenate(items).astype(np.int64), "rows": np.concatenate(rows).astype(np.int32),
                "cols": np.concatenate(cols).astype(np.int32)}
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        self.record_path.unlink(missing_ok=True)  # no record while the files change: a crash leaves no "fresh" index
        atomic_write(self.index_path, lambda p: index.save(str(p)))

        def write_keys(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, **keys)

        atomic_write(self.keys_path, write_keys)
        if src.stat_fingerprint() != stat:
            raise SearchError(f"{src.root} changed while its search index was built; search again when the export "
                              "is finished")
        self._write_record({
            "format": FORMAT_VERSION, "model": src.key, "level": src.level, "dim": src.dim, "dtype": DTYPE,
            "count": n, "usearch": _usearch_version(), "source_stat": stat, "source_sha256": digest,
            "index_stat": _stat(self.index_path), "index_sha256": _sha256(self.index_path),
            "keys_stat": _stat(self.keys_path), "keys_sha256": _sha256(self.keys_path),
        })

    # ------------------------------------------------------------ query

    def search(self, q: np.ndarray, k: int, keep: Any) -> Any:
        """Top-k through the index, as a TopK; asks for more candidates while `keep` filters some out.
        None when no candidate passes `keep` (the caller then scans exactly)."""
        from .search import TopK

        index, keys = self.ensure()
        total = len(index)
        count = min(total, k)
        while True:
            m = index.search(q, count)
            idx = np.asarray(m.keys, np.int64)
            chunk = Chunk(keys["items"][idx], keys["rows"][idx].astype(np.int64), keys["cols"][idx].astype(np.int64),
                          np.zeros((len(idx), 0), np.float32))
            ok = keep(chunk)
            kept = len(idx) if ok is None else int(ok.sum())
            if kept >= min(k, total) or count >= total:
                if kept == 0 and total:
                    return None
                top = TopK(k)
                top.add(chunk, (1.0 - np.asarray(m.distances, np.float64)).astype(np.float32), ok)
                return top
            count = min(total, count * 4)

    def describe(self) -> dict[str, Any]:
        rec = self._record() or {}
        return {"index": str(self.index_path), "count": rec.get("count"), "dim": rec.get("dim"),
                "level": rec.get("level"), "dtype": rec.get("dtype"), "source_sha256": rec.get("source_sha256")}


def _usearch() -> Any:
    """usearch.index.Index. PROJ (pyproj) is loaded first: usearch's extension carries its own C++ runtime,
    and loaded before PROJ it makes every later CRS lookup fail ("non double value")."""
    import pyproj  # noqa: F401

    from usearch.index import Index

    return Index


def _usearch_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("usearch")
    except metadata.PackageNotFoundError:
        return "unknown"
