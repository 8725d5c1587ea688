"""Diagnostic: where a pipeline call's time goes, per stage (timers patched in; figures printed).

    python bench/trace_pipeline.py [cuda|cpu] [ROIS] [model,model]

For each worker count: the main process's time waiting for data, issuing batches (stack, copy, the model's
calls: `forward.launch`), waiting for their outputs (`Launched.collect`; on CUDA a batch is collected
after the next one is issued) and elsewhere; each
worker task's own time (timed in the worker process) against the round trip its pool thread sees, and
the workers' busy share. On the H200 host (2026-12-04) remoteclip at 16 workers: 531 ROI/s, tasks 25 ms
each in the workers against 13 ms alone (16 concurrent tasks on 16 host CPUs), round trip 27.7 ms,
workers 83 % busy: the data path is bound by the workers' compute, not by the main process.
"""
import glob, os, sys, tempfile, threading, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import bench_pipeline as bp
from rs_embed import get_embeddings_batch
from rs_embed_core import batching, fetching, forward, workers
from rs_embed_core.sample import make_sample_scene
from rs_embed_core.testing import random_weights

TR = tempfile.mkdtemp(prefix="trace")
real_task = fetching.fetch_task


def timed_task(*a):  # runs in the worker process
    t = time.perf_counter()
    out = real_task(*a)
    with open(f"{TR}/child-{os.getpid()}.txt", "a") as f:
        f.write(f"{time.perf_counter() - t}\n")
    return out


fetching.fetch_task = timed_task
rtt, main_wait, fwd, land = [], [], [], []
real_call = workers.ProcessWorker.__call__


def timed_call(self, *payload):
    t = time.perf_counter()
    out = real_call(self, *payload)
    rtt.append(time.perf_counter() - t)
    return out


workers.ProcessWorker.__call__ = timed_call


class TimedEvent(threading.Event):
    def wait(self, timeout=None):
        t = time.perf_counter()
        r = super().wait(timeout)
        if threading.current_thread() is threading.main_thread():
            main_wait.append(time.perf_counter() - t)
        return r


real_slot_init = fetching._Slot.__init__


def slot_init(self, owner):
    real_slot_init(self, owner)
    self.done = TimedEvent()


fetching._Slot.__init__ = slot_init
real_launch, real_collect = batching.launch, forward.Launched.collect


def timed(real, into):
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = real(*a, **k)
        into.append(time.perf_counter() - t)
        return out
    return wrapper


batching.launch = timed(real_launch, fwd)
forward.Launched.collect = timed(real_collect, land)
device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
models = sys.argv[3].split(",") if len(sys.argv) > 3 else ["remoteclip"]
d = tempfile.mkdtemp()
files = make_sample_scene(Path(d) / "scene")
rois = bp.scene_rois(files, n)
for model in models:
    with random_weights(model, None, d + "/w" + model):
        for wk in (16, 8) if device == "cuda" else (2,):
            def call(sp):
                bp.clear_raster_cache()
                return get_embeddings_batch(model, sp, bp._temporal(), backend=f"local:{d}/scene", device=device,
                                            batch_size=64, progress=False, workers=wk)
            call(rois[:128])
            for f in glob.glob(f"{TR}/child-*.txt"):
                os.unlink(f)
            rtt.clear(); main_wait.clear(); fwd.clear(); land.clear()
            t = time.perf_counter()
            call(rois)
            wall = time.perf_counter() - t
            child = [float(x) for f in glob.glob(f"{TR}/child-*.txt") for x in open(f).read().split()]
            print(f"{model} {device} workers={wk}: {n / wall:.0f} ROI/s, wall {wall:.2f} s; main waiting for data "
                  f"{sum(main_wait):.2f} s; issuing batches {sum(fwd):.2f} s ({len(fwd)} batches); waiting for "
                  f"their outputs {sum(land):.2f} s; other main {wall - sum(main_wait) - sum(fwd) - sum(land):.2f} s",
                  flush=True)
            print(f"   worker task: mean {1000 * sum(child) / max(len(child), 1):.1f} ms over {len(child)}; thread round trip "
                  f"mean {1000 * sum(rtt) / max(len(rtt), 1):.1f} ms; busy share of workers "
                  f"{sum(child) / (wk * wall):.0%}", flush=True)
