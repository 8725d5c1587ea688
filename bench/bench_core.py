"""Core benchmarks, all figures from one run (this machine is shared: compare ratios, not seconds).

1. `import rs_embed` wall time (fresh interpreter, median of several, minus bare interpreter start).
2. get_embeddings_batch over 64 ROIs vs a loop of get_embedding, FakeProvider at 300 ms latency.
3. Pipeline throughput (fetch + preprocess + batch + forward) vs the bare forward of the baseline
   model on the same preprocessed arrays.

Run: python bench/bench_core.py [--rois 64] [--latency 0.3] [--model mosaiks]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np


def import_time(repeats: int = 5) -> tuple[float, float]:
    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    bare = statistics.median(run("pass") for _ in range(repeats))
    full = statistics.median(run("import rs_embed") for _ in range(repeats))
    return full - bare, bare


def rois(n: int):
    from rs_embed import PointBuffer

    rng = np.random.default_rng(0)
    return [PointBuffer(float(lon), float(lat), 640) for lon, lat in
            zip(rng.uniform(-60, 60, n), rng.uniform(-50, 50, n))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rois", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--model", default="mosaiks")
    args = ap.parse_args()

    from rs_embed import OutputSpec, TemporalSpec, get_embedding, get_embeddings_batch
    from rs_embed_core.embedder import BatchContext
    from rs_embed_core.preprocess import apply_chain
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.grid import grid_for
    from rs_embed_core.registry import embedder_class
    from rs_embed_core.runner import default_sensor, load_embedder, raster_cache
    from rs_embed_core.testing import FakeProvider

    t_imp, t_bare = import_time()
    print(f"import rs_embed: {t_imp * 1000:.0f} ms (interpreter start {t_bare * 1000:.0f} ms excluded)")

    temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
    spatials = rois(args.rois)
    out = OutputSpec.pooled()

    # warm the model once so neither side pays for loading
    get_embedding(args.model, spatials[0], temporal, out, backend=FakeProvider())

    raster_cache.clear()
    slow = FakeProvider(latency_s=args.latency)
    t = time.perf_counter()
    batch = get_embeddings_batch(args.model, spatials, temporal, out, backend=slow, progress=False)
    t_batch = time.perf_counter() - t
    raster_cache.clear()
    slow = FakeProvider(latency_s=args.latency)
    t = time.perf_counter()
    loop = [get_embedding(args.model, s, temporal, out, backend=slow) for s in spatials]
    t_loop = time.perf_counter() - t
    same = all(np.allclose(a.data, b.data, rtol=1e-5, atol=1e-6) for a, b in zip(batch, loop))
    print(f"{args.rois} ROIs at {args.latency * 1000:.0f} ms fetch latency: batch {t_batch:.2f} s, "
          f"loop {t_loop:.2f} s, speed-up x{t_loop / t_batch:.1f} (results equal: {same})")

    # pipeline vs bare forward
    cls = embedder_class(args.model)
    card = cls.card
    emb = load_embedder(cls, card.variant(None), "cpu")
    sensor = default_sensor(card)
    fast = FakeProvider()
    raster_cache.clear()
    t = time.perf_counter()
    get_embeddings_batch(args.model, spatials, temporal, out, backend=fast, progress=False)
    t_pipe = time.perf_counter() - t
    prepped = [apply_chain(fast.fetch(FetchRequest(grid_for(s, sensor.scale_m), temporal, sensor)),
                           card.preprocessing) for s in spatials]
    bs = 16
    t = time.perf_counter()
    for i in range(0, len(prepped), bs):
        chunk = prepped[i:i + bs]
        x = np.stack([p.data for p in chunk])
        ctx = BatchContext(grids=tuple(p.grid for p in chunk), centers_lonlat=tuple(s.center for s in spatials[i:i + bs]),
                           times=tuple(p.times for p in chunk), temporal=temporal, sensor=sensor, want="pooled",
                           band_names=chunk[0].bands, valid=np.stack([p.valid for p in chunk]))
        emb.forward(x, ctx)
    t_fwd = time.perf_counter() - t
    n = len(spatials)
    print(f"{args.model} throughput: pipeline {n / t_pipe:.1f} ROI/s, bare forward {n / t_fwd:.1f} ROI/s, "
          f"pipeline/forward = {t_fwd / t_pipe:.2f}")


if __name__ == "__main__":
    main()
