"""Tiling benchmark (figures printed, nothing asserted): 32 ROIs of 512 x 512 px through RemoteCLIP
ViT-B-32 on random weights with input_prep="tile", in tiles/s, against the bare forward on the same
number of 224 px tiles.

    python bench/bench_tiling.py [--rois 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rois", type=int, default=32)
    args = ap.parse_args()

    import numpy as np
    import torch

    from rs_embed import OutputSpec, PointBuffer, TemporalSpec, get_embeddings_batch
    from rs_embed_core.embedder import BatchContext
    from rs_embed_core.registry import embedder_class
    from rs_embed_core.runner import load_embedder
    from rs_embed_core.testing import FakeProvider, random_weights

    temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
    spatials = [PointBuffer(121.5 + 0.06 * i, 31.2, 2560) for i in range(args.rois)]  # 512 px at 10 m
    with tempfile.TemporaryDirectory() as d, random_weights("remoteclip", None, d):
        cls = embedder_class("remoteclip")
        get_embeddings_batch("remoteclip", spatials[:1], temporal, OutputSpec.grid(), backend=FakeProvider(),
                             input_prep="tile", progress=False)  # load + warm
        t = time.perf_counter()
        out = get_embeddings_batch("remoteclip", spatials, temporal, OutputSpec.grid(), backend=FakeProvider(),
                                   input_prep="tile", progress=False, batch_size=16)
        t_tiled = time.perf_counter() - t
        tiles = sum(e.meta["tiling"]["tiles"] for e in out)
        model = load_embedder(cls, cls.card.variant(None), "cpu")
        x = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 1, 3, 224, 224)).astype(np.float32))
        ctx = BatchContext(grids=(), centers_lonlat=(), times=(), temporal=temporal, sensor=None, want="grid")
        with torch.inference_mode():
            model.forward(x, ctx)
            t = time.perf_counter()
            for _ in range((tiles + 15) // 16):
                model.forward(x, ctx)
            t_bare = time.perf_counter() - t
    bare_rate = 16 * ((tiles + 15) // 16) / t_bare
    print(f"{args.rois} ROIs of 512 px = {tiles} tiles: tiled pipeline {tiles / t_tiled:.1f} tiles/s, bare forward "
          f"{bare_rate:.1f} tiles/s (ratio {tiles / t_tiled / bare_rate:.2f}, goal >= 0.9)")


if __name__ == "__main__":
    main()
