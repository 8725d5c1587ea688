"""Pipeline benchmark (figures printed, nothing asserted) for issue 26, on the synthetic sample scene
(`rs_embed_core.sample`, written to a temp dir), ROIs of 256 x 256 px (PointBuffer 1280 m at 10 m) spread
deterministically over both sites, random weights:

(a) data path: fetch + prepare alone (12 bands x 3 dated files, 256^2 px, median composite) through a
    near-zero-cost model registered in-process, with workers=1, 2 and N (the CPUs this process may use,
    when > 2): ROIs/s and the ratio to one worker;
(b) the whole `get_embeddings_batch` call (after a warm-up call) against the model's bare forward,
    replayed on the first batch of inputs the pipeline itself handed to `forward` (captured on the way,
    so the bare figure is the same model on the same tensors), synchronised on CUDA; also the share of
    the pipeline's wall time spent inside `forward` (CUDA events on the GPU, wall clock on the CPU); on
    the CPU also the data path's own CPU cost per ROI (a call with a free forward, all processes) and the
    best pipeline / bare the shared cores allow, forward / (forward + data CPU / CPUs);
    (b) runs twice: reading the GeoTIFFs (local provider), and with the pixels already in memory (a provider
    that hands back rasters it read before the timed call: "arrays in", so only prepare, batching,
    forward and assembly remain, the setting the issue compares with another tool's arrays-in batch);
(c) the same under precision="bf16" (GeoTIFFs), with the cosine of each ROI's bf16 embedding to its fp32 one;
(d) ms per ROI of `LocalProvider.fetch` (12 bands x 3 files, median) against the few lines a user would
    write: rasterio window reads from datasets kept open, float32, np.nanmedian over the dates with nodata
    masked (the same composite: its largest difference to the provider's is printed), and the same with a
    plain np.median that ignores nodata (a floor: numpy's masked medians cost about 4x the plain one).

`workers=` and `precision=` are passed only when `get_embeddings_batch` takes them, so the script also
runs on a core without them (and says so). Goals are the issue's; compare ratios, not seconds, on a
shared machine.

    python bench/bench_pipeline.py [--device cpu|cuda] [--rois N] [--batch-size B]
        [--models remoteclip,satmaepp] [--threads T] [--quick] [--json OUT]

Defaults: cuda 256 ROIs at batch 64, cpu 32 ROIs at batch 16. `--quick` is a small CPU smoke run
(8 ROIs, batch 4, remoteclip only). On a GPU machine see bench/device_bench.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant
from rs_embed_core.embedder import EmbedOutput, Embedder
from rs_embed_core.sample import BANDS, COLLECTION

BUFFER_M = 1280.0  # 256 px a side at 10 m
GSD = 10.0
WINDOW = ("2022-06-01", "2022-09-01")  # holds all three sample dates


class DataPathProbe(Embedder):
    """Near-zero-cost model so (a) times fetch + prepare alone: the pooled vector is each band's first pixel."""

    card = ModelCard(
        id="bench-data-path",
        description="benchmark probe: returns one pixel per band",
        input=InputSpec(COLLECTION, BANDS, GSD, image_size=None, frames=1, composite="median"),
        variants=(Variant("probe", pooled_dim=len(BANDS), grid_dim=len(BANDS)),),
        preprocessing=(Step("scale", {"factor": 1e-4}),),
    )

    def forward(self, x: Any, ctx: Any) -> EmbedOutput:
        return EmbedOutput(pooled=np.ascontiguousarray(x[:, 0, :, 0, 0]))


# ---------------------------------------------------------------- scene and ROIs


def scene_rois(files: Sequence[Path], n: int, seed: int = 0) -> list[Any]:
    """`n` PointBuffers alternating between the sites, centres uniform over each site's extent less the
    ROI's half-side and a pixel, so every ROI lies inside all three dated files of its site."""
    import rasterio
    from pyproj import Transformer

    from rs_embed import PointBuffer

    extents: dict[tuple[float, ...], str] = {}
    for f in files:
        with rasterio.open(f) as src:
            extents.setdefault(tuple(src.bounds), src.crs.to_string())
    rng = np.random.default_rng(seed)
    sites = sorted(extents.items())
    out = []
    for i in range(n):
        (left, bottom, right, top), crs = sites[i % len(sites)]
        margin = BUFFER_M + GSD
        x = rng.uniform(left + margin, right - margin)
        y = rng.uniform(bottom + margin, top - margin)
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        out.append(PointBuffer(float(lon), float(lat), BUFFER_M))
    return out


def api_takes(name: str) -> bool:
    from rs_embed import get_embeddings_batch

    return name in inspect.signature(get_embeddings_batch).parameters


def clear_raster_cache() -> None:
    """Drop fetched rasters kept in-process, so a timed call fetches everything again."""
    from rs_embed_core import fetching

    cache = getattr(fetching, "raster_cache", None)
    if cache is not None:
        cache.clear()


def _temporal() -> Any:
    from rs_embed import TemporalSpec

    return TemporalSpec.range(*WINDOW)


# ---------------------------------------------------------------- (a) data path


def data_path(scene: Path, rois: Sequence[Any], batch_size: int) -> dict[str, Any]:
    """ROIs/s of get_embeddings_batch with the probe model, per worker count (or once, without `workers=`)."""
    from rs_embed import get_embeddings_batch
    from rs_embed_core.testing import registered

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts: list[int | None] = [1, 2] + ([cpus] if cpus > 2 else []) if api_takes("workers") else [None]
    res: dict[str, Any] = {"rois": len(rois), "cpus": cpus, "rois_per_s": {}}
    with registered(DataPathProbe, name="bench:data-path"):
        def call(spatials: Sequence[Any], workers: int | None) -> float:
            extra = {} if workers is None else {"workers": workers}
            clear_raster_cache()
            t = time.perf_counter()
            get_embeddings_batch(DataPathProbe.card.id, spatials, _temporal(), backend=f"local:{scene}",
                                 device="cpu", batch_size=batch_size, progress=False, **extra)
            return time.perf_counter() - t

        for w in counts:  # warm: headers, the OS file cache, imports, and each count's worker processes
            call(rois[:2 * (w or 1)], w)  # (they start once per process and serve every later call)
        for w in counts:
            res["rois_per_s"]["default" if w is None else str(w)] = len(rois) / call(rois, w)
    rate = res["rois_per_s"]
    if "1" in rate:
        res["ratio_to_1"] = {k: v / rate["1"] for k, v in rate.items()}
        line = ", ".join(f"workers={k} {v:.1f} ROI/s ({res['ratio_to_1'][k]:.2f}x)" for k, v in rate.items())
        print(f"(a) data path, {len(rois)} ROIs x 12 bands x 3 files, 256^2 px: {line} (goal: 2 workers >= 1.8x)")
    else:
        print(f"(a) data path, {len(rois)} ROIs x 12 bands x 3 files, 256^2 px: {rate['default']:.1f} ROI/s "
              "(this core has no workers=: one figure, its default concurrency)")
    return res


# ---------------------------------------------------------------- (b), (c) pipeline vs bare forward


class ForwardProbe:
    """Wraps `cls.forward` for the block: keeps the first batch (embedder, input, ctx) it sees and the
    time spent inside every call (CUDA events on a GPU, so nothing is synchronised mid-run)."""

    def __init__(self, cls: type, device: str) -> None:
        self.cls, self.cuda = cls, device.startswith("cuda")
        self.original: Callable[..., Any] = cls.forward
        self.own = "forward" in cls.__dict__
        self.first: tuple[Any, Any, Any] | None = None
        self.first_out: Any = None  # the first EmbedOutput: its shapes, for the free forward of `data_cpu`
        self.spans: list[Any] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[ForwardProbe]:
        probe, original = self, self.original

        def forward(emb: Any, x: Any, ctx: Any) -> Any:
            if probe.first is None:
                probe.first = (emb, x.clone() if hasattr(x, "clone") else np.array(x), ctx)
            if probe.cuda:
                import torch

                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = original(emb, x, ctx)
                end.record()
                probe.spans.append((start, end))
                return out
            t = time.perf_counter()
            out = original(emb, x, ctx)
            probe.spans.append(time.perf_counter() - t)
            if probe.first_out is None:
                probe.first_out = out
            return out

        self.cls.forward = forward
        try:
            yield self
        finally:
            self.restore()

    def restore(self) -> None:
        """The class's own forward back (or none of its own, as before)."""
        if self.own:
            self.cls.forward = self.original
        elif "forward" in self.cls.__dict__:
            del self.cls.forward

    def seconds_inside(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return sum(s.elapsed_time(e) for s, e in self.spans) / 1000.0
        return float(sum(self.spans))


@contextlib.contextmanager
def precision_context(precision: str | None, device: str) -> Iterator[None]:
    """What the runner applies around forward, for the bare replay: None = torch's defaults (a core without
    `precision=`); "fp32" = TF32 off; "tf32" = TF32 on; "bf16"/"fp16" = autocast."""
    import torch

    kind = device.split(":")[0]
    if precision in ("bf16", "fp16"):
        with torch.autocast(kind, dtype=torch.bfloat16 if precision == "bf16" else torch.float16):
            yield
        return
    if precision is None or kind != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def bare_forward(probe: ForwardProbe, precision: str | None, device: str, repeats: int) -> float:
    """Seconds per call of the original forward on the captured batch (median of `repeats`, after 3 warm)."""
    import torch

    emb, x, ctx = probe.first  # type: ignore[misc]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with torch.inference_mode(), precision_context(precision, device):
        for k in range(3 + repeats):
            sync()
            t = time.perf_counter()
            probe.original(emb, x, ctx)
            sync()
            if k >= 3:
                times.append(time.perf_counter() - t)
    return statistics.median(times)


def _process_cpu_s() -> float | None:
    """CPU seconds of this process (all threads) and of its child processes that are alive (the worker
    pool's), read from /proc; None where there is no /proc."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    total = me.ru_utime + me.ru_stime
    try:
        threads = os.listdir(f"/proc/{os.getpid()}/task")
    except OSError:
        return None
    kids = []
    for t in threads:
        with contextlib.suppress(OSError):  # a helper thread that has ended since the listing
            with open(f"/proc/{os.getpid()}/task/{t}/children") as f:
                kids += f.read().split()
    for pid in kids:
        with contextlib.suppress(OSError):  # a process that has ended
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def data_cpu(probe: ForwardProbe, call: Callable[[], Any]) -> float | None:
    """CPU seconds per ROI of a pipeline call whose forward is free (zeros of the model's output shapes):
    fetch, prepare, transport and assembly in every process, without the model."""
    import torch

    from rs_embed_core.embedder import EmbedOutput

    first = probe.first_out

    def free(emb: Any, x: Any, ctx: Any) -> Any:
        def like(a: Any) -> Any:
            return None if a is None else torch.zeros((x.shape[0], *a.shape[1:]))
        return EmbedOutput(pooled=like(first.pooled), grid=like(first.grid))

    probe.cls.forward = free
    try:
        call()  # warm: the same ROIs, as for the timed pipeline call
        clear_raster_cache()
        c0 = _process_cpu_s()
        n = len(call())
        c1 = _process_cpu_s()
    finally:
        probe.restore()
    return None if c0 is None or c1 is None else (c1 - c0) / n


class InMemory:
    """Arrays in: the rasters of a provider, read once and then handed back from memory."""

    name = "memory"
    max_concurrency = 4

    def __init__(self, inner: Any) -> None:
        self.inner, self.rasters = inner, {}

    def check(self, sensor: Any) -> None:
        self.inner.check(sensor)

    def fetch(self, request: Any) -> Any:
        key = request.key
        if key not in self.rasters:
            self.rasters[key] = self.inner.fetch(request)
        return self.rasters[key]


def pipeline_vs_bare(model: str, scene: Path, rois: Sequence[Any], device: str, batch_size: int,
                     precision: str | None, repeats: int, in_memory: bool = False) -> dict[str, Any]:
    """One model at one precision: warm-up call, timed call, bare replay. Call inside random_weights.
    `in_memory`: the pixels are read during the warm-up (which then covers every ROI) and served from memory."""
    from rs_embed import get_embeddings_batch
    from rs_embed_core.providers.local import LocalProvider
    from rs_embed_core.registry import embedder_class

    extra = {} if precision is None else {"precision": precision}
    backend: Any = InMemory(LocalProvider(scene)) if in_memory else f"local:{scene}"
    probe = ForwardProbe(embedder_class(model), device)
    with probe.installed():
        clear_raster_cache()
        get_embeddings_batch(model, rois if in_memory else rois[:batch_size], _temporal(), backend=backend,
                             device=device, batch_size=batch_size, progress=False, **extra)  # warm: load, kernels
        if probe.first is None:
            raise RuntimeError(f"{model}: the pipeline never called {probe.cls.__name__}.forward")
        probe.spans.clear()
        clear_raster_cache()
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        t = time.perf_counter()
        embs = get_embeddings_batch(model, rois, _temporal(), backend=backend, device=device,
                                    batch_size=batch_size, progress=False, **extra)
        wall = time.perf_counter() - t
        inside = probe.seconds_inside()
    per_batch = bare_forward(probe, precision, device, repeats)
    n_first = int(probe.first[1].shape[0])  # type: ignore[index]
    res = {
        "rois": len(rois), "batch": n_first, "pipeline_rois_per_s": len(rois) / wall,
        "bare_rois_per_s": n_first / per_batch, "forward_share": inside / wall,
    }
    res["ratio"] = res["pipeline_rois_per_s"] / res["bare_rois_per_s"]
    res["_vectors"] = np.stack([e.data.reshape(-1) for e in embs])
    if not device.startswith("cuda") and probe.first_out is not None:
        # On the CPU the forward and the data path share the cores: with the forward using all of them
        # (torch threads = CPUs), the pipeline can at best reach forward / (forward + data CPU / CPUs).
        import torch

        from rs_embed_core.workers import available_cpus

        per_roi = data_cpu(probe, lambda: get_embeddings_batch(
            model, rois, _temporal(), backend=backend, device=device, batch_size=batch_size,
            progress=False, **extra))
        if per_roi is not None:
            fwd = 1.0 / res["bare_rois_per_s"]
            cpus = available_cpus()
            res["data_cpu_ms_per_roi"] = 1e3 * per_roi
            if torch.get_num_threads() >= cpus:
                res["ceiling"] = fwd / (fwd + per_roi / cpus)
    return res


def model_figures(model: str, scene: Path, rois: Sequence[Any], device: str, batch_size: int, repeats: int,
                  cache_dir: str) -> dict[str, Any]:
    """(b) and (c) for one model on random weights."""
    from rs_embed_core.runner import clear_model_cache
    from rs_embed_core.testing import random_weights

    has_precision = api_takes("precision")
    out: dict[str, Any] = {}
    with random_weights(model, None, cache_dir), contextlib.ExitStack() as cleanup:
        cleanup.callback(clear_model_cache)  # drop the model (GPU memory) however this ends
        fp32 = pipeline_vs_bare(model, scene, rois, device, batch_size, "fp32" if has_precision else None, repeats)
        out["fp32"] = fp32
        _print_model("(b)", model, "fp32" if has_precision else "fp32 (torch defaults: no precision= here)", fp32)
        mem = pipeline_vs_bare(model, scene, rois, device, batch_size, "fp32" if has_precision else None, repeats,
                               in_memory=True)
        if not np.allclose(mem["_vectors"], fp32["_vectors"], rtol=1e-5, atol=1e-5):
            raise RuntimeError(f"{model}: the in-memory run's embeddings differ from the GeoTIFF run's")
        out["fp32_in_memory"] = mem
        _print_model("(b)", model, "fp32, pixels in memory", mem)
        if not has_precision:
            out["bf16"] = {"skipped": "this core's get_embeddings_batch has no precision="}
            print(f"(c) {model}: bf16 skipped: this core's get_embeddings_batch has no precision=")
        else:
            try:
                bf16 = pipeline_vs_bare(model, scene, rois, device, batch_size, "bf16", repeats)
            except Exception as exc:  # the device cannot, or the core refuses: a figure we cannot have
                out["bf16"] = {"skipped": f"{type(exc).__name__}: {exc}"}
                print(f"(c) {model}: bf16 skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            else:
                a, b = fp32["_vectors"], bf16["_vectors"]
                cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                bf16["min_cosine_to_fp32"] = float(cos.min())
                out["bf16"] = bf16
                _print_model("(c)", model, "bf16", bf16)
    for v in out.values():
        v.pop("_vectors", None)
    return out


def _print_model(tag: str, model: str, precision: str, r: dict[str, Any]) -> None:
    cos = f", min cosine to fp32 {r['min_cosine_to_fp32']:.5f}" if "min_cosine_to_fp32" in r else ""
    data = ""
    if "data_cpu_ms_per_roi" in r:
        data = f"; the data path alone costs {r['data_cpu_ms_per_roi']:.1f} CPU-ms per ROI (all processes)"
        if "ceiling" in r:
            data += f", so on these CPUs, shared with the forward, pipeline / bare can reach at most {r['ceiling']:.3f}"
    print(f"{tag} {model} {precision}, {r['rois']} ROIs at batch {r['batch']}: pipeline {r['pipeline_rois_per_s']:.1f} "
          f"ROI/s, bare forward {r['bare_rois_per_s']:.1f} ROI/s, pipeline / bare {r['ratio']:.3f}, "
          f"{r['forward_share']:.0%} of the pipeline's time inside forward{cos}{data}")


# ---------------------------------------------------------------- (d) local read vs a user's few lines


def user_composite(srcs: Sequence[Any], grid: Any, masked: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """What a user would write: window reads from open datasets, float32, then the median over the dates,
    with nodata -> NaN and np.nanmedian (masked), or a plain np.median that ignores nodata (the floor)."""
    from rasterio.windows import from_bounds

    frames = []
    for src in srcs:
        win = from_bounds(*grid.bounds, transform=src.transform).round_offsets().round_lengths()
        a = src.read(window=win, out_dtype="float32")
        if masked:
            a[:, (a == src.nodata).any(axis=0)] = np.nan
        frames.append(a)
    if not masked:
        return np.median(np.stack(frames), axis=0), np.ones(frames[0].shape[1:], bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no date is valid there
        med = np.nanmedian(np.stack(frames), axis=0)
    ok = ~np.isnan(med).any(axis=0)
    return np.where(ok, med, 0.0).astype(np.float32), ok


def read_comparison(files: Sequence[Path], rois: Sequence[Any]) -> dict[str, Any]:
    """ms per ROI of LocalProvider.fetch vs user_composite (masked, and the unmasked floor), one thread each,
    after one untimed pass of each, plus how far the provider's composite is from the masked one."""
    import rasterio

    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.providers.local import LocalProvider
    from rs_embed_core.specs import SensorSpec

    sensor = SensorSpec(COLLECTION, BANDS, GSD, composite="median")
    grids = [grid_for(s, GSD) for s in rois]
    dirs = {Path(f).parent for f in files}
    provider = LocalProvider([str(d) for d in sorted(dirs)])
    requests = [FetchRequest(g, _temporal(), sensor) for g in grids]
    for f in files:  # warm: the OS file cache for every timed read, then headers and imports
        Path(f).read_bytes()
    provider.fetch(requests[0])
    srcs = [rasterio.open(f) for f in files]
    try:
        by_site: dict[tuple[float, ...], list[Any]] = {}
        for s in srcs:
            by_site.setdefault(tuple(s.bounds), []).append(s)

        def site_of(g: Any) -> list[Any]:
            left, bottom, right, top = g.bounds
            return next(v for (a, b, c, d), v in by_site.items() if a <= left and b <= bottom and right <= c and top <= d)

        for r, g in zip(requests, grids):  # warm both alike: every block each reads decompressed once already,
            provider.fetch(r)                # so neither is timed on the other's cold cache (steady-state cost)
            user_composite(site_of(g), g)
        t = time.perf_counter()
        ours = [provider.fetch(r) for r in requests]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        theirs = [user_composite(site_of(g), g) for g in grids]
        t_user = time.perf_counter() - t
        t = time.perf_counter()
        for g in grids:
            user_composite(site_of(g), g, masked=False)
        t_floor = time.perf_counter() - t
    finally:
        for s in srcs:
            s.close()
    diff, mismatch, scale = 0.0, 0, 1.0
    for r, (med, ok) in zip(ours, theirs):
        both = r.valid[0] & ok
        mismatch += int((r.valid[0] != ok).sum())
        if both.any():
            diff = max(diff, float(np.abs(r.data[0][:, both] - med[:, both]).max()))
            scale = max(scale, float(np.abs(med[:, both]).max()))
    n = len(rois)
    res = {"rois": n, "provider_ms": 1000 * t_ours / n, "user_ms": 1000 * t_user / n,
           "user_unmasked_ms": 1000 * t_floor / n, "max_abs_diff": diff, "max_rel_diff": diff / scale,
           "mask_mismatch_px": mismatch}
    res["ratio"] = res["provider_ms"] / res["user_ms"]
    res["ratio_unmasked"] = res["provider_ms"] / res["user_unmasked_ms"]
    print(f"(d) local read, {n} ROIs x 12 bands x 3 files, 256^2 px, median: LocalProvider.fetch "
          f"{res['provider_ms']:.1f} ms/ROI; rasterio window reads from open datasets + np.nanmedian with nodata "
          f"masked {res['user_ms']:.1f} ms/ROI (ratio {res['ratio']:.2f}, goal <= 1.5); plain np.median ignoring "
          f"nodata (floor) {res['user_unmasked_ms']:.1f} ms/ROI (ratio {res['ratio_unmasked']:.2f}); "
          f"the provider's composite differs from the masked one by max {diff:.3g} DN, {mismatch} px of validity")
    return res


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--rois", type=int, help="ROIs per timed call (default: 256 on cuda, 32 on cpu)")
    ap.add_argument("--batch-size", type=int, help="default: 64 on cuda, 16 on cpu")
    ap.add_argument("--read-rois", type=int, help="ROIs timed in (d) (default: --rois, at most 64)")
    ap.add_argument("--models", help="comma-separated (default: remoteclip,satmaepp; --quick: remoteclip)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=10, help="timed replays of the bare forward")
    ap.add_argument("--quick", action="store_true", help="small CPU smoke run")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)

    cuda = args.device.startswith("cuda")
    rois_n = args.rois or (8 if args.quick else 256 if cuda else 32)
    batch = args.batch_size or (4 if args.quick else 64 if cuda else 16)
    models = (args.models or ("remoteclip" if args.quick else "remoteclip,satmaepp")).split(",")
    repeats = 3 if args.quick else args.repeats

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import rs_embed_core
    from rs_embed_core.sample import make_sample_scene

    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__, "rs_embed_core": rs_embed_core.__version__, "torch_threads": torch.get_num_threads(),
        "api": {"workers": api_takes("workers"), "precision": api_takes("precision")},
    }
    print(f"device {figures['device']}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"get_embeddings_batch takes workers= {figures['api']['workers']}, precision= {figures['api']['precision']}")
    failed: list[str] = []

    def part(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One figure. A failure is printed and recorded, the parts after it still run, and the JSON is
        rewritten after every part: one device run must bring back all it can."""
        try:
            out = fn()
        except Exception as exc:
            traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(f"{name} failed: {type(exc).__name__}: {first}")
            failed.append(name)
            out = {"failed": f"{type(exc).__name__}: {exc}"}
        return out

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))

    with tempfile.TemporaryDirectory() as d:
        scene = Path(d) / "scene"
        files = make_sample_scene(scene)
        rois = scene_rois(files, rois_n)
        figures["data_path"] = part("(a)", lambda: data_path(scene, rois, batch))
        save()
        figures["models"] = {}
        for m in models:
            figures["models"][m] = part(f"(b)/(c) {m}", lambda m=m: model_figures(
                m, scene, rois, args.device, batch, repeats, str(Path(d) / m)))
            save()
        figures["read"] = part("(d)", lambda: read_comparison(files, rois[:args.read_rois or min(rois_n, 64)]))
        save()
    figures["failed"] = failed
    save()
    return figures


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
