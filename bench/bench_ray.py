"""Ray executor benchmark (figures printed, nothing asserted): items/s of the same export run locally and on a
local Ray instance with 1 and 2 forward workers, and the ratio Ray / local.

    python bench/bench_ray.py [--rois 512] [--models mosaiks,spectral_stats] [--latency 0] [--repeats 2]

On one machine Ray can only add overhead (object store transfers, task scheduling, actor start-up); the
figure to watch is that overhead: Ray with 1 worker should keep >= 0.8 x the local items/s. `--latency`
gives the fake provider a per-fetch delay (seconds), where Ray's parallel fetch tasks pay off. Each timed
export includes the start of its actors and their model loading, as a real export's would. Ray gets
`num_cpus` logical CPUs (default 4 here, so 2 workers still leave CPUs for the fetch tasks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rois", type=int, default=512)
    ap.add_argument("--models", default="mosaiks,spectral_stats")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.0, help="per-fetch delay of the fake provider (s)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-cpus", type=int, default=4, help="Ray's logical CPUs")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray

    from rs_embed import PointBuffer, TemporalSpec, export_batch
    from rs_embed_core.testing import FakeProvider
    from rs_embed_ray import RayExecutor

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    spatials = [PointBuffer(100 + (i % 64) * 0.01, 10 + (i // 64) * 0.01, 320) for i in range(args.rois)]
    when = TemporalSpec.range("2022-06-01", "2022-09-01")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
    runs = {"local": lambda: "local", "ray x1": lambda: RayExecutor(workers=1), "ray x2": lambda: RayExecutor(workers=2)}

    def once(executor) -> float:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            res = export_batch(spatials, when, models, d + "/out", backend=FakeProvider(latency_s=args.latency),
                               batch_size=args.batch_size, progress=False, executor=executor)
            dt = time.perf_counter() - t0
            assert res.ok == len(spatials) * len(models), res.manifest["counts"]
        return dt

    for make in runs.values():  # warm: imports, plugins, Ray workers' first start
        once(make())
    seconds = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every executor alike
        for name, make in runs.items():
            seconds[name].append(once(make()))
    rate = {name: args.rois / statistics.median(s) for name, s in seconds.items()}
    print(f"{args.rois} ROIs x {len(models)} models ({', '.join(models)}), batch {args.batch_size}, "
          f"fetch latency {args.latency:g} s, {os.cpu_count()} cores, Ray num_cpus={args.num_cpus}")
    for name, r in rate.items():
        print(f"  {name:7s} {r:8.1f} ROIs/s  (median of {args.repeats}: {statistics.median(seconds[name]):.2f} s)")
    for name in ("ray x1", "ray x2"):
        print(f"  ratio {name} / local = {rate[name] / rate['local']:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
