"""Earth Engine provider throughput: a batch vs a loop of single calls, through the real
earthengine-api client against the loopback fake server answering with a fixed latency.

Each ROI costs two calls (the scene listing and one computePixels); the batch overlaps them
across ROIs (GEEProvider.max_concurrency, max_inflight), a loop cannot. Goal: batch >= 8x loop
at 200 ms latency for 64 ROIs. Also prints the calls made and the server's peak concurrency.

Run: python bench/bench_gee.py [--rois 64] [--latency 0.2] [--model spectral_stats]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rois", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--model", default="spectral_stats")
    args = ap.parse_args()

    from rs_embed import PointBuffer, TemporalSpec, get_embedding, get_embeddings_batch
    from rs_embed_core.fetching import raster_cache
    from rs_embed_gee import auth
    from rs_embed_gee.fake import S2, FakeEarthEngine, month_scenes

    rng = np.random.default_rng(0)
    rois = [PointBuffer(float(lon), float(lat), 320) for lon, lat in zip(rng.uniform(100, 125, args.rois),
                                                                         rng.uniform(20, 40, args.rois))]
    temporal = TemporalSpec.range("2022-06-01", "2022-07-01")
    with FakeEarthEngine(scenes={S2: month_scenes()}) as fake:
        provider = fake.provider(listing_ttl_s=0)  # every call really made: no scene list reused between runs
        get_embedding(args.model, spatial=rois[0], temporal=temporal, backend=provider)  # sign in, load the model
        fake.latency_s = args.latency

        raster_cache.clear()
        fake.requests.clear()
        fake.max_in_flight = 0
        t = time.perf_counter()
        get_embeddings_batch(args.model, spatials=rois, temporal=temporal, backend=provider)
        t_batch = time.perf_counter() - t
        batch_calls, batch_peak = len(fake.requests), fake.max_in_flight

        raster_cache.clear()
        fake.requests.clear()
        t = time.perf_counter()
        for roi in rois:
            get_embedding(args.model, spatial=roi, temporal=temporal, backend=provider)
        t_loop = time.perf_counter() - t
        loop_calls = len(fake.requests)
    auth.reset()

    print(f"{args.rois} ROIs, {args.latency * 1000:.0f} ms per Earth Engine call, model {args.model}")
    print(f"batch: {t_batch:.2f} s ({batch_calls} calls, peak {batch_peak} in flight)")
    print(f"loop:  {t_loop:.2f} s ({loop_calls} calls)")
    print(f"batch vs loop: x{t_loop / t_batch:.1f} (goal >= 8)")


if __name__ == "__main__":
    main()
