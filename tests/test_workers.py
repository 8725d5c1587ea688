"""Fetch + prepare in worker processes: same results for any `workers`, bad values refused before any
fetch, a dying worker fails only its item, unpicklable errors still read well, Ctrl-C leaves no process
behind; and the `precision=` option's validation and record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("rs_embed_baseline")

from rs_embed import OutputSpec, PointBuffer, TemporalSpec, export_batch, get_embedding, get_embeddings_batch  # noqa: E402
from rs_embed_core.errors import SpecError  # noqa: E402
from rs_embed_core.providers.local import LocalProvider  # noqa: E402
from rs_embed_core.raster import Raster  # noqa: E402
from rs_embed_core.testing import FakeProvider  # noqa: E402
from rs_embed_core.workers import WorkerDiedError, plan_workers  # noqa: E402

T = TemporalSpec.range("2022-06-01", "2022-09-01")
ROIS = [PointBuffer(121.47 + 0.006 * i, 31.17 + 0.004 * (i % 3), 300) for i in range(7)]


@pytest.fixture(scope="module")
def scene(sample_scene):
    return sample_scene


class PidProvider(LocalProvider):
    """The local provider, noting in each raster's meta which process read it."""

    def fetch(self, request):
        r = super().fetch(request)
        return r.replace(meta={**r.meta, "pid": os.getpid()})


class DyingProvider(LocalProvider):
    """Kills the process that reads the second of ROIS (centre 121.476 E), as the OOM killer would."""

    def fetch(self, request):
        west, _, east, _ = request.grid.footprint_lonlat()
        if abs((west + east) / 2 - 121.476) < 0.001:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fetch(request)


class _Odd(Exception):
    def __init__(self, a, b):  # two required arguments: cannot be rebuilt from its args when unpickled
        super().__init__(f"odd failure {a}/{b}")


class OddErrorProvider(LocalProvider):
    def fetch(self, request):
        raise _Odd(1, 2)


def test_same_results_for_any_number_of_workers(scene):
    runs = {w: get_embeddings_batch("spectral_stats", ROIS, T, OutputSpec.grid(), backend=LocalProvider(scene),
                                    workers=w, progress=False) for w in (1, 2, 3, None)}
    for w, embs in runs.items():
        for a, b in zip(runs[1], embs):
            np.testing.assert_array_equal(a.data, b.data, err_msg=f"workers={w}")
            assert a.grid == b.grid


def test_local_reads_run_in_worker_processes_and_workers_1_in_this_one(scene):
    def pids(w):
        embs = get_embeddings_batch("spectral_stats", ROIS, T, backend=PidProvider(scene), workers=w, progress=False)
        return {e.meta["source"]["pid"] for e in embs}

    assert pids(1) == {os.getpid()}
    two = pids(2)
    assert os.getpid() not in two and 1 <= len(two) <= 2
    assert plan_workers(LocalProvider(scene), None, 100)[1] == "processes"
    assert plan_workers(FakeProvider(), None, 100) == (16, "threads")  # network-like providers keep threads
    assert plan_workers(LocalProvider(scene), 8, 3) == (3, "processes")  # never more workers than fetches


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_workers_refused_before_any_fetch(bad):
    fake = FakeProvider()
    with pytest.raises(SpecError, match="workers"):
        get_embeddings_batch("spectral_stats", ROIS[:2], T, backend=fake, workers=bad)
    with pytest.raises(SpecError, match="workers"):
        export_batch(ROIS[:2], T, ["spectral_stats"], "/nonexistent/never-written", backend=fake, workers=bad)
    assert fake.calls == 0


@pytest.mark.parametrize("bad", ["fp64", "FP8", None, 16])
def test_bad_precision_refused_before_any_fetch(bad):
    fake = FakeProvider()
    with pytest.raises(SpecError, match="precision"):
        get_embeddings_batch("spectral_stats", ROIS[:2], T, backend=fake, precision=bad)
    with pytest.raises(SpecError, match="precision"):
        get_embedding("spectral_stats", ROIS[0], T, backend=fake, precision=bad)
    assert fake.calls == 0


def test_numpy_models_record_fp32_whatever_is_asked():
    e = get_embedding("spectral_stats", ROIS[0], T, backend=FakeProvider(), precision="bf16")
    assert e.meta["precision"] == "fp32"


def test_a_dead_worker_fails_only_its_item_and_a_fresh_one_carries_on(scene):
    out = get_embeddings_batch("spectral_stats", ROIS, T, backend=DyingProvider(scene), workers=2,
                               continue_on_error=True, progress=False)
    failed = [i for i, e in enumerate(out) if not hasattr(e, "data")]
    assert failed == [1]
    err = out[1]
    assert err.error_type == WorkerDiedError.__name__ and "SIGKILL" in err.message and err.stage == "fetch"
    assert "PointBuffer" in err.spatial
    ref = get_embeddings_batch("spectral_stats", [r for i, r in enumerate(ROIS) if i != 1], T,
                               backend=LocalProvider(scene), workers=1, progress=False)
    for a, b in zip([e for i, e in enumerate(out) if i != 1], ref):
        np.testing.assert_array_equal(a.data, b.data)


def test_an_unpicklable_worker_error_still_reads_well(scene):
    out = get_embeddings_batch("spectral_stats", ROIS[:3], T, backend=OddErrorProvider(scene), workers=2,
                               continue_on_error=True, progress=False)
    assert all(not hasattr(e, "data") for e in out)
    assert all("_Odd" in e.message and "odd failure 1/2" in e.message for e in out)


_CTRL_C = textwrap.dedent("""
    import os, sys, time
    from rs_embed import PointBuffer, TemporalSpec, get_embeddings_batch
    from rs_embed_core.providers.local import LocalProvider

    class Slow(LocalProvider):
        def fetch(self, request):
            with open(sys.argv[2], "a") as f:
                f.write(f"{os.getpid()}\\n")
            time.sleep(60)

    rois = [PointBuffer(121.47 + 0.001 * i, 31.17, 100) for i in range(20)]
    print("ready", flush=True)
    get_embeddings_batch("spectral_stats", rois, TemporalSpec.year(2022), backend=Slow(sys.argv[1]), workers=2,
                         progress=False)
""")


def test_ctrl_c_stops_every_worker_promptly(scene, tmp_path):
    pidfile = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C, str(scene), str(pidfile)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not pidfile.exists() or len(pidfile.read_text().split()) < 2):
            time.sleep(0.1)
        workers = [int(p) for p in pidfile.read_text().split()]
        assert len(workers) == 2 and proc.pid not in workers
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    time.sleep(0.5)
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_raster_travels_back_from_a_worker_intact(scene):
    """What a worker process sends back is the raster the provider read (data, mask, grid, times, meta)."""
    from rs_embed_core.fetching import fetch_stream
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.specs import SensorSpec

    sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B8"), 10)
    reqs = [FetchRequest(grid_for(r, 10), T, sensor) for r in ROIS[:4]]
    here = [LocalProvider(scene).fetch(q) for q in reqs]
    there = [r for _, r, _, _ in fetch_stream(LocalProvider(scene), reqs, workers=2)]
    for a, b in zip(here, there):
        assert isinstance(b, Raster)
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.valid, b.valid)
        assert (a.grid, a.times, a.bands, a.meta) == (b.grid, b.times, b.bands, b.meta)


def test_cli_workers_and_precision(scene, tmp_path):
    import json

    from click.testing import CliRunner

    from rs_embed_core.cli import main

    def embed(*extra):
        out = tmp_path / f"e{len(extra)}{'_'.join(extra)}.json"
        r = CliRunner().invoke(main, ["embed", "spectral_stats", "--backend", f"local:{scene}", "--point",
                                      "121.48,31.18,300", "--point", "121.49,31.18,300", "--start", "2022-06-01",
                                      "--end", "2022-09-01", "--quiet", "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        return json.loads(out.read_text())

    one, two = embed("--workers", "1"), embed("--workers", "2", "--precision", "bf16")
    assert len(one) == 2 and [e["embedding"] for e in one] == [e["embedding"] for e in two]
    assert {e["meta"]["precision"] for e in two} == {"fp32"}  # numpy model
    bad = CliRunner().invoke(main, ["embed", "spectral_stats", "--point", "121.48,31.18", "--year", "2022",
                                    "--precision", "fp64"])
    assert bad.exit_code == 2 and "fp64" in bad.output


def test_pixels_stay_in_the_worker_unless_asked_for(scene):
    """With every user prepared in the worker, only the prepared inputs and a RasterHead come back;
    export with save_inputs still gets the pixels."""
    from rs_embed_core.fetching import fetch_stream
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.raster import RasterHead
    from rs_embed_core.runner import prepare_job

    prov = LocalProvider(scene)
    job = prepare_job("spectral_stats", output=OutputSpec.pooled(), provider=prov)
    reqs = [FetchRequest(grid_for(r, 10), T, job.sensors[0]) for r in ROIS[:3]]
    spec = job.prep_spec([job.sensors[0].bands], None)
    for strip in (True, False):
        got = list(fetch_stream(prov, reqs, workers=2, specs=lambda r, s=strip: ([("k", spec)], s)))
        for (_, raster, _, pre), q in zip(got, reqs):
            assert isinstance(raster, RasterHead if strip else Raster)
            full = prov.fetch(q)
            assert raster.grid == full.grid and raster.valid_fraction == full.valid_fraction
            assert isinstance(pre["k"].fetched, RasterHead if strip else Raster)
            assert pre["k"].prepped[0].data.shape[1] == len(job.sensors[0].bands)


def test_worker_processes_serve_later_calls(scene):
    """Starting processes costs more than a batch call in a large parent: the second call reuses them."""
    def pids():
        embs = get_embeddings_batch("spectral_stats", ROIS, T, backend=PidProvider(scene), workers=2, progress=False)
        return {e.meta["source"]["pid"] for e in embs}

    first, second = pids(), pids()
    assert os.getpid() not in first and second & first  # the same processes answered again


def _mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum("rs-embed-batch" in line for line in f)


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="shared memory transport is Linux-only")
def test_large_arrays_travel_through_shared_memory_and_free_it():
    import multiprocessing as mp

    from rs_embed_core.workers import _recv, _send

    here, there = mp.Pipe()
    sent = {"input": np.random.default_rng(0).random((4, 128, 128), dtype=np.float32), "small": np.arange(5)}
    _send(here, sent)
    got = _recv(there)
    assert _mappings() == 1  # the big array lives on the mapping, not in a copy
    np.testing.assert_array_equal(got["input"], sent["input"])
    np.testing.assert_array_equal(got["small"], sent["small"])
    got["input"][0, 0, 0] = -1.0  # writable, like an array that came through the pipe
    del got
    import gc

    gc.collect()
    assert _mappings() == 0  # freed with the last array on it


@pytest.mark.parametrize("refusal", ["memfd_create", "pwrite"])  # no shared memory; a full tmpfs
def test_arrays_fall_back_to_the_pipe_without_shared_memory(monkeypatch, refusal):
    import multiprocessing as mp

    from rs_embed_core import workers

    def refused(*_a):
        raise OSError(12 if refusal == "memfd_create" else 28, "refused")

    monkeypatch.setattr(workers.os, refusal, refused, raising=False)
    import threading

    here, there = mp.Pipe()
    sent = np.arange(200_000, dtype=np.float32).reshape(2, 100_000)
    sender = threading.Thread(target=workers._send, args=(here, sent))  # more than a socket buffer: send aside
    sender.start()
    got = workers._recv(there)
    sender.join()
    np.testing.assert_array_equal(got, sent)
    assert got.flags.writeable


def test_switch_interval_is_short_while_streams_run_and_restored_after_overlapping_ones():
    import sys as _sys

    from rs_embed_core import fetching

    before = _sys.getswitchinterval()
    fetching._short_switch(True)  # stream A
    fetching._short_switch(True)  # stream B, in another thread
    assert _sys.getswitchinterval() == min(before, fetching._SWITCH_S)
    fetching._short_switch(False)  # A ends first: B still runs
    assert _sys.getswitchinterval() == min(before, fetching._SWITCH_S)
    fetching._short_switch(False)
    assert _sys.getswitchinterval() == before


def test_a_batch_call_leaves_the_switch_interval_as_it_found_it(scene):
    import sys as _sys

    before = _sys.getswitchinterval()
    get_embeddings_batch("spectral_stats", ROIS, T, backend=LocalProvider(scene), workers=2, progress=False)
    assert _sys.getswitchinterval() == before


def test_provider_calls_reuse_idle_threads_and_abandon_a_hung_one():
    """A fetch with a timeout runs on a helper thread; helpers are reused by any thread (a fresh one per
    fetch cost ~4 ms), and one left inside a call that timed out is never handed out again."""
    import threading

    from rs_embed_core import fetching
    from rs_embed_core.errors import FetchTimeoutError

    def here():
        return threading.get_ident()

    first = fetching._call_with_timeout(here, 5, "x")
    assert first != threading.get_ident()  # it ran on a helper
    assert fetching._call_with_timeout(here, 5, "x") == first
    seen = []
    other = threading.Thread(target=lambda: seen.append(fetching._call_with_timeout(here, 5, "x")))
    other.start()
    other.join()
    assert seen == [first]  # another thread's call took the same idle helper

    release, hung_on = threading.Event(), []
    with pytest.raises(FetchTimeoutError, match="did not finish within 0.1 s"):
        fetching._call_with_timeout(lambda: hung_on.append(threading.get_ident()) or release.wait(10), 0.1, "hung")
    assert hung_on == [first]
    after = fetching._call_with_timeout(here, 5, "x")
    assert after != first  # the hung helper was abandoned
    release.set()
    assert fetching._call_with_timeout(lambda: 7, 5, "x") == 7 and fetching._call_with_timeout(here, None, "x") == \
        threading.get_ident()  # no timeout: called right here


def test_throttle_holds_new_tasks_back_inside_its_block():
    import threading

    from rs_embed_core.fetching import Throttle

    th, started = Throttle(), []

    def task():
        th.enter()
        started.append(time.monotonic())
        th.leave()

    with th.limited(0):
        t = threading.Thread(target=task)
        t.start()
        time.sleep(0.2)
        assert started == []  # held
        left = time.monotonic()
    t.join(5)
    assert len(started) == 1 and started[0] >= left
    with th.limited(None):  # no limit
        task()
    assert len(started) == 2


def test_cpus_left_beside_a_cpu_forward():
    import torch

    from rs_embed_core.forward import cpus_left
    from rs_embed_core.workers import available_cpus

    class E:
        uses_torch, device = True, "cpu"

    assert cpus_left(E()) == max(0, available_cpus() - torch.get_num_threads())
    E.device = "cuda:0"
    assert cpus_left(E()) is None  # the model computes elsewhere
    E.device, E.uses_torch = "cpu", False
    assert cpus_left(E()) is None


@pytest.mark.parametrize("case", ["no CPU left", "no limit", "network provider"])
def test_no_fetch_starts_while_a_cpu_forward_runs(scene, monkeypatch, case):
    """With no CPU left beside the forward, new fetch tasks wait for it to end (a task begun just before it
    may still run); without a limit (the control case) the worker keeps fetching through it, and so does a
    provider whose fetches wait on the network (parallel = "threads")."""
    from rs_embed_core import batching
    from rs_embed_core.card import InputSpec, ModelCard, Variant
    from rs_embed_core.embedder import EmbedOutput, Embedder
    from rs_embed_core.sample import BANDS, COLLECTION
    from rs_embed_core.testing import registered

    fetches, forwards = [], []

    class TimedProvider(LocalProvider):
        parallel = "threads" if case == "network provider" else "processes"

        def fetch(self, request):
            fetches.append(time.monotonic())
            return super().fetch(request)

    class SlowTorchModel(Embedder):
        card = ModelCard(id="test-slow-torch", description="fixture: a slow forward on the CPU",
                         input=InputSpec(COLLECTION, BANDS[:2], 10.0, image_size=None, frames=1, composite="median"),
                         variants=(Variant("v", pooled_dim=2, grid_dim=2),), preprocessing=())
        uses_torch = True

        def forward(self, x, ctx):
            t0 = time.monotonic()
            time.sleep(0.3)
            forwards.append((t0, time.monotonic()))
            return EmbedOutput(pooled=x[:, 0, :, 0, 0])

    monkeypatch.setattr(batching, "cpus_left", lambda e: None if case == "no limit" else 0)
    with registered(SlowTorchModel):
        embs = get_embeddings_batch("test-slow-torch", ROIS, T, backend=TimedProvider(scene), device="cpu",
                                    batch_size=2, workers=1, progress=False)
    assert len(embs) == len(ROIS) and len(forwards) == 4 and len(fetches) == len(ROIS)
    most = max(sum(a < f < b for f in fetches) for a, b in forwards)  # fetches begun during one forward
    if case == "no CPU left":
        assert most <= 1  # at most the task one worker had begun before the forward did
    else:
        assert most >= 2


def test_requests_of_one_cell_go_to_one_worker_and_idle_workers_take_the_rest():
    """Worker processes keep their own decompressed blocks: ROIs that share a cell of LOCALITY_PX pixels
    go to the same worker (least busy when the cell is first seen); a worker without work of its own
    takes the oldest request of the busiest other one."""
    from rs_embed_core.fetching import LOCALITY_PX, _Dispatch, locality
    from rs_embed_core.grid import GridSpec
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.specs import SensorSpec

    sensor = SensorSpec("C", ("B1",), 10.0)
    cell = LOCALITY_PX * 10.0

    def req(x, y):
        return FetchRequest(GridSpec("EPSG:32651", x, y, 10.0, 64, 64), T, sensor)

    a1, a2 = req(5 * cell + 100, 9 * cell + 900), req(5 * cell + 2000, 9 * cell + 3000)  # same cell
    b1 = req(7 * cell + 100, 9 * cell + 900)
    assert locality(a1) == locality(a2) != locality(b1)
    d = _Dispatch(2, by_locality=True)
    for r in (a1, b1, a2):
        d.put(r, r)
    assert d.get(0) is a1 and d.get(0) is a2  # worker 0's home cell
    assert d.get(1) is b1
    c1, c2 = req(20 * cell, 20 * cell), req(20 * cell + 10, 20 * cell)
    d.put(c1, c1)  # a new cell: both idle, worker 0 (first least busy) is its home
    d.put(c2, c2)
    assert d.get(1) is c1 and d.get(0) is c2  # worker 1 has nothing of its own: takes the oldest of worker 0's
    shared = _Dispatch(2, by_locality=False)  # threads share one process: one queue, first in first out
    for r in (a1, b1, a2):
        shared.put(r, r)
    assert [shared.get(1), shared.get(0), shared.get(1)] == [a1, b1, a2]
    d.close()
    assert d.get(0) is None and d.get(1) is None

    import rs_embed_core.fetching as fetching

    saved, fetching._HOMES = fetching._HOMES, 2  # the cells remembered are bounded (a long export)
    try:
        small = _Dispatch(2, by_locality=True)
        for r in (a1, b1, c1, a2):
            small.put(r, r)
        assert len(small._home) == 2 and locality(b1) not in small._home
    finally:
        fetching._HOMES = saved


class GdalCacheProvider(LocalProvider):
    """The local provider, noting in each raster's meta the GDAL block cache size of the process that read it."""

    def fetch(self, request):
        from rasterio.env import get_gdal_config

        r = super().fetch(request)
        return r.replace(meta={**r.meta, "pid": os.getpid(), "cachemax": get_gdal_config("GDAL_CACHEMAX")})


@pytest.mark.skipif("GDAL_CACHEMAX" in os.environ, reason="your GDAL_CACHEMAX wins over the workers' cap")
def test_worker_processes_cap_their_gdal_block_cache(scene):
    """GDAL's default cache is 5 % of RAM per process: each worker is held to WORKER_GDAL_CACHE instead."""
    from rasterio.env import get_gdal_config

    from rs_embed_core.workers import WORKER_GDAL_CACHE

    embs = get_embeddings_batch("spectral_stats", ROIS, T, backend=GdalCacheProvider(scene), workers=2,
                                progress=False, output=OutputSpec.pooled())
    seen = {(e.meta["source"]["pid"], e.meta["source"]["cachemax"]) for e in embs}
    assert {pid for pid, _ in seen} - {os.getpid()}  # read in worker processes
    assert {int(c) for _, c in seen} == {WORKER_GDAL_CACHE}
    assert get_gdal_config("GDAL_CACHEMAX") in (None, "") or int(get_gdal_config("GDAL_CACHEMAX")) != WORKER_GDAL_CACHE
