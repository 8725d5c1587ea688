"""Search benchmark (figures printed, nothing asserted): exact search over N random D-dimensional rows of a
GeoParquet export (ms per query, peak RSS), and the approximate index's build time, recall@10 and speed-up.

    python bench/bench_search.py [--rows 1000000] [--dim 768] [--queries 20] [--dir /tmp/rs-embed-bench-search]

The rows are clustered (4096 random centres plus Gaussian noise of the same scale), as embeddings of real places
are; on uniform random vectors every neighbour is about as far as every other and no index does well. The export
is written in the export's own schema (manifest + GeoParquet) without running a model. Each measurement runs in a
child process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np


def make_export(root: Path, rows: int, dim: int, seed: int = 0) -> None:
    """A pooled parquet export of `rows` synthetic vectors (what export_batch writes, minus the model run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rs_embed_core.search_source import ring_wkb

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, dim)).astype(np.float32)
    ring = ring_wkb([(0.0, 0.0), (0.01, 0.0), (0.01, 0.01), (0.0, 0.01), (0.0, 0.0)])
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("geometry", pa.binary()),
                        ("embedding", pa.list_(pa.float32(), dim)), ("status", pa.string())])
    with pq.ParquetWriter(root / "bench.parquet", schema) as w:
        for lo in range(0, rows, 65536):
            n = min(65536, rows - lo)
            vec = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim), np.float32)
            w.write_table(pa.table({
                "id": np.arange(lo, lo + n), "name": [f"r{i}" for i in range(lo, lo + n)], "geometry": [ring] * n,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), dim),
                "status": ["ok"] * n}, schema=schema))
    spatials = [{"type": "point_buffer", "lon": 0.005, "lat": 0.005, "buffer_m": 500.0}] * rows
    manifest = {
        "type": "rs-embed-export",
        "request": {"names": [f"r{i}" for i in range(rows)], "spatials": spatials, "format": "parquet",
                    "layout": "per_item", "backend": "local", "temporal": {"start": "2022-06-01", "end": "2022-09-01"},
                    "models": [{"model": "bench", "variant": None}], "input_prep": "resize"},
        "models": {"bench": {"model": "bench", "variant": "default", "dimensions": dim, "weights": None,
                             "output": {"mode": "pooled", "pooling": "model"}, "preprocessing": [],
                             "sensors": [{"scale_m": 10.0}]}},
        "items": [{"id": i, "status": {"bench": "ok"}} for i in range(rows)],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))


_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from rs_embed import search, build_index

    def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

    root, index, nq, dim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(1)
    centres = np.random.default_rng(0).standard_normal((4096, dim)).astype(np.float32)  # the data's centres
    queries = [centres[rng.integers(0, 4096)] + rng.standard_normal(dim).astype(np.float32) for _ in range(nq)]
    out = {"rss_start_mb": peak_mb()}
    if index == "approx":
        t = time.perf_counter(); build_index(root); out["build_s"] = time.perf_counter() - t
        search(root, queries[0], k=10, index="approx")  # load once (memory-mapped), like a warm process
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        hits = search(root, q, k=10, index=index)
        times.append(time.perf_counter() - t)
        ids.append(hits.column("id").to_pylist())
    out.update(ms_per_query=1000 * float(np.median(times)), first_ms=1000 * times[0], ids=ids, peak_rss_mb=peak_mb())
    print(json.dumps(out))
""")


def measure(root: Path, index: str, queries: int, dim: int) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, str(root), index, str(queries), str(dim)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--dir", default="/tmp/rs-embed-bench-search")
    args = ap.parse_args()
    root = Path(args.dir)
    if not (root / "manifest.json").is_file():
        t = time.perf_counter()
        make_export(root, args.rows, args.dim)
        print(f"wrote {args.rows:,} x {args.dim} rows to {root} in {time.perf_counter() - t:.0f} s "
              f"({(root / 'bench.parquet').stat().st_size / 2**30:.2f} GiB parquet)")
    exact = measure(root, "exact", args.queries, args.dim)
    print(f"exact : {exact['ms_per_query']:.0f} ms/query (median of {args.queries}; the first, which also parses the "
          f"manifest, {exact['first_ms']:.0f} ms), peak RSS {exact['peak_rss_mb']:.0f} MB "
          f"(after imports {exact['rss_start_mb']:.0f} MB)")
    approx = measure(root, "approx", args.queries, args.dim)
    recall = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx["ids"], exact["ids"])])
    print(f"approx: index build {approx['build_s']:.0f} s, {approx['ms_per_query']:.1f} ms/query, "
          f"recall@10 {recall:.3f}, speed-up x{exact['ms_per_query'] / approx['ms_per_query']:.0f}, "
          f"peak RSS {approx['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
