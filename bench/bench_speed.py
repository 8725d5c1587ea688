"""Speed benchmark (figures printed, nothing asserted): single-call overhead, the ViT forward against
open_clip's, and model load time / peak RSS against open_clip's own load -- RemoteCLIP ViT-B-32 on
random weights, 32 Sentinel-2 RGB patches of 256 x 256 px, torch threads as set (default 2).

    python bench/bench_speed.py [--threads 2] [--rois 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_LOAD_CHILD = textwrap.dedent("""
    import json, sys, time
    import torch

    def hwm_mb():  # peak resident set so far (VmHWM), MB
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    torch.set_num_threads(1)
    which, ckpt, root = sys.argv[1], sys.argv[2], sys.argv[3]
    base = hwm_mb()
    t = time.perf_counter()
    if which == "open_clip":
        from rs_embed_core.testing.references import import_torchvision
        import_torchvision()
        import open_clip
        base = hwm_mb()
        t = time.perf_counter()
        model = open_clip.create_model("ViT-B-32", pretrained=None)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    else:
        import attrs, os
        os.environ["RS_EMBED_CACHE"] = root + "/rs"
        import rs_embed_remoteclip as rc
        from rs_embed_core.testing import offline_hub, weights_spec_for
        import rs_embed_remoteclip_model as rcm
        spec = json.loads(sys.argv[4])
        from rs_embed_core.card import WeightsSpec
        with offline_hub(root + "/hub"):
            base = hwm_mb()
            t = time.perf_counter()
            model = rcm.build(attrs.evolve(rc.VIT_B_32, weights=WeightsSpec(**spec)), "cpu", vision=True, text=True)
    dt = time.perf_counter() - t
    print(json.dumps({"seconds": dt, "peak_mb": hwm_mb() - base}))
""")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rois", type=int, default=32)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from rs_embed import OutputSpec, PointBuffer, TemporalSpec, get_embedding, get_embeddings_batch
    from rs_embed_core.embedder import BatchContext
    from rs_embed_core.registry import embedder_class
    from rs_embed_core.runner import load_embedder, raster_cache
    from rs_embed_core.testing import FakeProvider, build_hf_cache, offline_hub, random_weights, weights_spec_for
    from rs_embed_core.testing.references import import_torchvision

    temporal = TemporalSpec.range("2022-06-01", "2022-09-01")
    spatials = [PointBuffer(121.5 + 0.03 * i, 31.2, 1280) for i in range(args.rois)]  # 256 px at 10 m
    out = OutputSpec.pooled()
    with tempfile.TemporaryDirectory() as d, random_weights("remoteclip", None, d):
        cls = embedder_class("remoteclip")
        model = load_embedder(cls, cls.card.variant(None), "cpu")
        get_embedding("remoteclip", spatials[0], temporal, out, backend=FakeProvider(), device="cpu")  # warm
        raster_cache.clear()
        prov = FakeProvider()
        t = time.perf_counter()
        get_embeddings_batch("remoteclip", spatials, temporal, out, backend=prov, device="cpu", progress=False)
        t_batch = time.perf_counter() - t
        raster_cache.clear()
        t = time.perf_counter()
        for s in spatials:
            get_embedding("remoteclip", s, temporal, out, backend=prov, device="cpu")
        t_loop = time.perf_counter() - t
        x1 = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 3, 224, 224)).astype(np.float32))
        ctx = BatchContext(grids=(), centers_lonlat=(), times=(), temporal=temporal, sensor=None, want="pooled")
        raster_cache.clear()
        with torch.inference_mode():
            t = time.perf_counter()
            for _ in spatials:
                model.forward(x1, ctx)
            t_bare1 = time.perf_counter() - t
        fetch = FakeProvider()
        from rs_embed_core.grid import grid_for
        from rs_embed_core.providers import FetchRequest
        from rs_embed_core.specs import SensorSpec

        sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"), 10)
        t = time.perf_counter()
        for s in spatials:
            fetch.fetch(FetchRequest(grid_for(s, 10), temporal, sensor))
        t_fetch = time.perf_counter() - t
    n = len(spatials)
    overhead_ms = (t_loop - t_bare1 - t_fetch) / n * 1000
    print(f"get_embedding loop: {n / t_loop:.1f} ROI/s vs get_embeddings_batch {n / t_batch:.1f} ROI/s "
          f"(ratio {t_batch / t_loop:.2f}); per-call overhead beyond a batch-1 forward and the fetch itself: "
          f"{overhead_ms:.1f} ms (goal < 20 ms)")

    import_torchvision()
    import open_clip

    import rs_embed_remoteclip as rc
    from rs_embed_remoteclip_model import CLIP

    ref = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    ours = CLIP(rc.VIT_B_32.params, vision=True, text=False).eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k.startswith("visual.")}, strict=True)
    x = torch.randn(16, 3, 224, 224)
    with torch.inference_mode():
        diff = float((ref.visual(x) - ours.visual(x)[0]).abs().max())
        times = {"open_clip": [], "ours": []}
        for _ in range(3):  # interleaved, best of 3
            for name, fn in (("open_clip", ref.visual), ("ours", lambda v: ours.visual(v)[0])):
                t = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - t)
    ratio = min(times["open_clip"]) / min(times["ours"])
    print(f"ViT-B-32 forward, batch 16: ours {16 / min(times['ours']):.1f} img/s, open_clip "
          f"{16 / min(times['open_clip']):.1f} img/s (ours/open_clip speed {ratio:.2f}, goal >= 1.0; max |diff| {diff:.1e})")

    with tempfile.TemporaryDirectory() as d:
        ckpt = Path(d) / "RemoteCLIP-ViT-B-32.pt"
        torch.save(ref.state_dict(), ckpt)
        rev = "3" * 40
        build_hf_cache(Path(d) / "hub", rc.REPO_ID, rev, {ckpt.name: ckpt})
        spec = weights_spec_for(rc.REPO_ID, rev, ckpt.name, ckpt)
        spec_json = json.dumps({k: getattr(spec, k) for k in ("repo_id", "revision", "filename", "sha256", "license")})
        res = {}
        for which in ("ours-first", "ours", "open_clip"):  # first: .pt -> safetensors conversion; then the mmap'd load
            child = subprocess.run([sys.executable, "-c", _LOAD_CHILD, which.split("-")[0], str(ckpt), d, spec_json],
                                   capture_output=True, text=True, check=True)
            res[which] = json.loads(child.stdout.strip().splitlines()[-1])
        size_mb = ckpt.stat().st_size / 2**20
        print(f"model load (checkpoint {size_mb:.0f} MB): ours {res['ours']['seconds']:.2f} s, +{res['ours']['peak_mb']:.0f} "
              f"MB peak RSS (first load with conversion {res['ours-first']['seconds']:.2f} s, +{res['ours-first']['peak_mb']:.0f} "
              f"MB); open_clip {res['open_clip']['seconds']:.2f} s, +{res['open_clip']['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
