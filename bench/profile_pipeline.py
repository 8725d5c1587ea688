"""Where the main process spends a pipeline call (cProfile of the calling thread; figures printed).

    python bench/profile_pipeline.py [--model remoteclip] [--device cuda] [--rois 512] [--batch-size 64]

The scene and ROIs are bench_pipeline's; the model runs on random weights. Worker processes are not
profiled: their time shows here as waits (`acquire`) when the main process starves.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_pipeline as bp  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="remoteclip")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rois", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()

    from rs_embed import get_embeddings_batch
    from rs_embed_core.sample import make_sample_scene
    from rs_embed_core.testing import random_weights

    with tempfile.TemporaryDirectory() as d:
        files = make_sample_scene(Path(d) / "scene")
        rois = bp.scene_rois(files, args.rois)
        with random_weights(args.model, None, d + "/w"):
            def call(spatials):
                bp.clear_raster_cache()
                return get_embeddings_batch(args.model, spatials, bp._temporal(), backend=f"local:{d}/scene",
                                            device=args.device, batch_size=args.batch_size, progress=False)

            call(rois[:args.batch_size])  # warm: model, kernels, worker pool
            prof = cProfile.Profile()
            t = time.perf_counter()
            prof.enable()
            call(rois)
            prof.disable()
            wall = time.perf_counter() - t
    print(f"{args.model} on {args.device}, {args.rois} ROIs at batch {args.batch_size}: {args.rois / wall:.1f} ROI/s")
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
