"""The Ray executor on a local Ray instance (2 CPUs): the same files as a local export, row for row; item
errors as locally; one fetch per input for all models; resume after a killed driver; a killed worker;
refusals before any fetch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import attrs
import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
torch = pytest.importorskip("torch")
pytest.importorskip("rs_embed_baseline")

from rs_embed import ModelRequest, OutputSpec, PointBuffer, TemporalSpec, export_batch, load_export  # noqa: E402
from rs_embed_core.card import Variant  # noqa: E402
from rs_embed_core.embedder import EmbedOutput, Embedder  # noqa: E402
from rs_embed_core.errors import ExecutorError, TransientProviderError, UnknownExecutorError  # noqa: E402
from rs_embed_core.grid import grid_for  # noqa: E402
from rs_embed_core.testing import FakeProvider, random_weights_file, registered  # noqa: E402
from rs_embed_core.weights import load_state_dict, strict_load  # noqa: E402

from rs_embed_ray import RayExecutor  # noqa: E402

# the exports with a failed item are incomplete on purpose
pytestmark = pytest.mark.filterwarnings("ignore::rs_embed_core.export.ExportWarning")

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
ROOT = Path(__file__).resolve().parents[3]


def rois(n: int) -> list[PointBuffer]:
    return [PointBuffer(121.5 + 0.013 * i, 31.2 + 0.007 * (i % 3), 320) for i in range(n)]


# ---------------------------------------------------------------- a torch model on random weights


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 8)
        self.norm = torch.nn.LayerNorm(8)


class TinyTorch(Embedder):
    """Three of mosaiks' bands (so its fetch merges with theirs), 4x4 patches, Linear + LayerNorm."""

    uses_torch = True

    def load(self) -> None:
        self.net = _Net().eval()
        strict_load(self.net, load_state_dict(self.variant.weights))

    def forward(self, x, ctx):
        b, _, c, h, w = x.shape
        p = x.mean(dim=1)[:, :, : h // 4 * 4, : w // 4 * 4].reshape(b, c, h // 4, 4, w // 4, 4).mean(dim=(3, 5))
        g = self.net.norm(self.net.proj(p.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return EmbedOutput(pooled=g.mean(dim=(2, 3)), grid=g)


def _tiny_card():
    from rs_embed_baseline import Mosaiks
    from rs_embed_core.card import Step

    bands = Mosaiks.card.input.bands[:3]
    return attrs.evolve(
        Mosaiks.card, id="ray_test_torch", aliases=(), variants=(Variant("s", 8, 8),), default_variant="s",
        input=attrs.evolve(Mosaiks.card.input, bands=bands),
        preprocessing=(Step("select_bands", {"bands": list(bands)}), Step("scale", {"factor": 1e-4})))


TinyTorch.card = _tiny_card()


class CountingProvider(FakeProvider):
    """Writes one line per fetch to `log` (the fetches happen in Ray worker processes)."""

    def __init__(self, log: Path, **kw) -> None:
        super().__init__(**kw)
        self.log = str(log)

    def fetch(self, request):
        with open(self.log, "a") as f:
            f.write(request.key + "\n")
        return super().fetch(request)


class Faulty(FakeProvider):
    """A transient fault, always, for the ROIs at x0 in `bad` (retried, then a fetch-stage item error); NaN
    pixels for those in `nan` (the models' output is NaN: a model-stage item error, found by batch isolation)."""

    def __init__(self, bad: set[float], nan: set[float], **kw) -> None:
        super().__init__(**kw)
        self.bad, self.nan = bad, nan

    def fetch(self, request):
        if request.grid.x0 in self.bad:
            raise TransientProviderError("HTTP 503 from the fake server")
        raster = super().fetch(request)
        return raster.replace(data=np.full_like(raster.data, np.nan)) if request.grid.x0 in self.nan else raster


# ---------------------------------------------------------------- one Ray instance for the module


@pytest.fixture(scope="module")
def cluster():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module's classes travel by value
    ctx = ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ctx
    ray.shutdown()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from rs_embed_core.sample import make_sample_scene

    root = tmp_path_factory.mktemp("scene") / "sample"
    make_sample_scene(root)
    return root


@pytest.fixture
def tiny(tmp_path):
    path = random_weights_file(_Net(), tmp_path / "tiny.safetensors", seed=3)
    with registered(TinyTorch, name="ray-test"):
        yield ModelRequest("ray_test_torch", weights=str(path))


def _journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / ".journal.jsonl").read_text().splitlines()]


def _parts_meta(out: Path) -> dict[str, dict]:
    from rs_embed_core.export import _load_part

    return {str(p.relative_to(out)): _load_part(p).meta for p in sorted((out / ".parts").rglob("*.npz"))}


def assert_same_export(a: Path, b: Path) -> None:
    """Arrays, status, per-item errors, the rows of every parquet, and every part's meta."""
    la, lb = load_export(a), load_export(b)
    assert la.names == lb.names and sorted(la.embeddings) == sorted(lb.embeddings)
    for key in la.embeddings:
        np.testing.assert_array_equal(la.embeddings[key], lb.embeddings[key])
        np.testing.assert_array_equal(la.status[key], lb.status[key])
        assert pq.read_table(a / f"{key}.parquet").equals(pq.read_table(b / f"{key}.parquet")), key
    assert la.items == lb.items
    assert _parts_meta(a) == _parts_meta(b)
    errors = lambda out: {(r["item"], r["model"]): r.get("error") for r in _journal(out)}  # noqa: E731
    assert errors(a) == errors(b)
    counts = lambda out: {k: v for k, v in load_export(out).manifest["counts"].items()}  # noqa: E731
    assert counts(a) == counts(b)


# ---------------------------------------------------------------- equality with the local export


def test_ray_export_equals_the_local_export_row_for_row(cluster, tiny, tmp_path):
    spatials = rois(10)
    bad, nan = {grid_for(spatials[4], 10.0).x0}, {grid_for(spatials[7], 10.0).x0}
    models = ["mosaiks", "spectral_stats", tiny]
    kw = dict(batch_size=2, max_retries=1, device="cpu")
    t0 = time.perf_counter()
    local = export_batch(spatials, WINDOW, models, tmp_path / "local", backend=Faulty(bad, nan), **kw)
    t_local = time.perf_counter() - t0
    log = tmp_path / "fetches.log"
    t0 = time.perf_counter()
    remote = export_batch(spatials, WINDOW, models, tmp_path / "ray", backend=Faulty(bad, nan), **kw,
                          executor=RayExecutor(chunk_size=4))
    t_ray = time.perf_counter() - t0
    assert (local.ok, local.failed) == (remote.ok, remote.failed) == (26, 4)
    assert_same_export(tmp_path / "local", tmp_path / "ray")
    errors = [(r["item"], r["error"]) for r in _journal(tmp_path / "ray") if r["status"] != "ok"]
    assert {(i, e["stage"], e["error_type"], e["attempts"]) for i, e in errors if i == 4} == {
        (4, "fetch", "TransientProviderError", 2)}
    assert [(i, e["stage"]) for i, e in errors if i != 4] == [(7, "model")]  # its batch's others still ok
    ok = next(m for p, m in _parts_meta(tmp_path / "ray").items() if "ray_test_torch" in p)
    assert ok["plugin"] == "ray-test" and ok["attempts"] == 1 and ok["weights"]["repo_id"] == "local"
    print(f"local {t_local:.2f} s, ray {t_ray:.2f} s")  # noqa: T201

    # one fetch per ROI for all three models (their bands merged), counted where it happens: in the workers
    export_batch(spatials, WINDOW, models, tmp_path / "counted", backend=CountingProvider(log), batch_size=2,
                 device="cpu", executor="ray")
    keys = log.read_text().split()
    assert len(keys) == len(set(keys)) == len(spatials)


def test_the_local_sample_scene_through_the_local_provider(cluster, scene, tmp_path):
    """The local provider (worker processes locally) pickles to the fetch tasks and reads the same pixels."""
    spatials = [PointBuffer(121.5 + 0.004 * i, 31.2 - 0.003 * i, 400) for i in range(6)]
    for name, ex in (("local", "local"), ("ray", RayExecutor(workers=1))):
        res = export_batch(spatials, TemporalSpec.range("2022-06-01", "2022-09-01"), ["mosaiks", "spectral_stats"],
                           tmp_path / name, backend=f"local:{scene}", batch_size=4, executor=ex)
        assert res.ok == 12
    assert_same_export(tmp_path / "local", tmp_path / "ray")


def test_grids_and_npz_layouts_equal_too(cluster, tmp_path):
    spatials = rois(5)
    for name, ex in (("local", "local"), ("ray", "ray")):
        export_batch(spatials, WINDOW, ["mosaiks"], tmp_path / name, backend=FakeProvider(), layout="combined",
                     format="npz", output=OutputSpec.grid(), batch_size=2, executor=ex, save_inputs=True)
    a, b = load_export(tmp_path / "local"), load_export(tmp_path / "ray")
    np.testing.assert_array_equal(a.embeddings["mosaiks"], b.embeddings["mosaiks"])
    assert a.grids == b.grids and _parts_meta(tmp_path / "local") == _parts_meta(tmp_path / "ray")
    inputs = lambda out: sorted(p.name for p in (out / "inputs").iterdir())  # noqa: E731
    assert inputs(tmp_path / "local") == inputs(tmp_path / "ray") and len(inputs(tmp_path / "ray")) == 5


# ---------------------------------------------------------------- faults


def _wait_for_records(out: Path, n: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        j = out / ".journal.jsonl"
        got = len(j.read_text().splitlines()) if j.is_file() else 0
        if got >= n:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{out}: fewer than {n} journal records after {timeout_s} s")


def test_resume_after_the_driver_is_killed_redoes_no_finished_part(cluster, tmp_path):
    spatials = rois(16)
    out = tmp_path / "ray"
    script = textwrap.dedent(f"""
        import ray
        from rs_embed import PointBuffer, TemporalSpec, export_batch
        from rs_embed_core.testing import FakeProvider
        from rs_embed_ray import RayExecutor
        spatials = [PointBuffer(121.5 + 0.013 * i, 31.2 + 0.007 * (i % 3), 320) for i in range(16)]
        export_batch(spatials, TemporalSpec.range("2022-06-01", "2022-09-01"), ["mosaiks", "spectral_stats"],
                     {str(out)!r}, backend=FakeProvider(latency_s=0.3), batch_size=2,
                     executor=RayExecutor(address={cluster.address_info["address"]!r}, chunk_size=2, workers=1))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_records(out, 4)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {(r["item"], r["model"]): r for r in _journal(out)}
    assert 4 <= len(before) < 32, "the driver was to die mid-run"
    stamps = {k: (out / ".parts" / k[1] / f"{k[0]:06d}.npz").stat().st_mtime_ns for k in before}
    with pytest.raises(Exception, match="resume=True"):  # the same folder again needs resume
        export_batch(spatials, WINDOW, ["mosaiks", "spectral_stats"], out, backend=FakeProvider(), batch_size=2,
                     executor="ray")
    res = export_batch(spatials, WINDOW, ["mosaiks", "spectral_stats"], out, backend=FakeProvider(), batch_size=2,
                       resume=True, executor="ray")
    assert res.skipped == len(before) and res.ok == 32
    assert {k: (out / ".parts" / k[1] / f"{k[0]:06d}.npz").stat().st_mtime_ns for k in before} == stamps
    records = [(r["item"], r["model"]) for r in _journal(out)]
    assert len(records) == len(set(records)) == 32
    export_batch(spatials, WINDOW, ["mosaiks", "spectral_stats"], tmp_path / "local", backend=FakeProvider(),
                 batch_size=2)
    a, b = load_export(tmp_path / "local"), load_export(out)
    for key in a.embeddings:
        np.testing.assert_array_equal(a.embeddings[key], b.embeddings[key])


def test_a_worker_killed_mid_run_leaves_no_duplicate_or_missing_row(cluster, tmp_path):
    spatials = rois(16)
    ex = RayExecutor(chunk_size=2, workers=1)
    out = tmp_path / "ray"
    box: dict = {}

    def export() -> None:
        try:
            box["res"] = export_batch(spatials, WINDOW, ["mosaiks"], out, backend=FakeProvider(latency_s=0.15),
                                      batch_size=2, executor=ex)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=export)
    t.start()
    at_kill = _wait_for_records(out, 2)
    actor = ex.actors[0]
    pid = ray.get(actor.pid.options(concurrency_group="control").remote())
    os.kill(pid, signal.SIGKILL)
    t.join(180)
    assert not t.is_alive() and "error" not in box, box.get("error")
    assert at_kill < 16 and box["res"].ok == 16 and box["res"].failed == 0
    records = [(r["item"], r["model"]) for r in _journal(out)]
    assert sorted(records) == [(i, "mosaiks") for i in range(16)]  # each once
    export_batch(spatials, WINDOW, ["mosaiks"], tmp_path / "local", backend=FakeProvider(), batch_size=2)
    assert_same_export(tmp_path / "local", out)


# ---------------------------------------------------------------- refusals, before any fetch


def test_an_unreachable_address_is_refused_within_seconds_before_any_fetch(cluster, tmp_path):
    provider = FakeProvider()
    t0 = time.perf_counter()
    with pytest.raises(ExecutorError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        export_batch(rois(2), WINDOW, ["mosaiks"], tmp_path / "out", backend=provider,
                     executor=RayExecutor(address="127.0.0.1:9", connect_timeout_s=3))
    assert time.perf_counter() - t0 < 5 and provider.calls == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["/proc/rs-embed-out", "s3://bucket/run1"])
def test_an_output_the_driver_cannot_write_is_refused_before_any_fetch(cluster, out):
    provider = FakeProvider()
    with pytest.raises(ExecutorError, match="cannot be written|is a URL"):
        export_batch(rois(2), WINDOW, ["mosaiks"], out, backend=provider, executor="ray")
    assert provider.calls == 0


def test_a_provider_that_cannot_travel_is_refused_before_any_fetch(cluster, tmp_path):
    provider = FakeProvider()
    provider.gate = threading.Lock()  # a lock does not pickle
    with pytest.raises(ExecutorError, match="cannot be sent to Ray workers"):
        export_batch(rois(2), WINDOW, ["mosaiks"], tmp_path / "out", backend=provider, executor="ray")
    assert provider.calls == 0


def test_executor_ray_without_the_plugin_names_the_package(tmp_path):
    code = ("from rs_embed import PointBuffer, TemporalSpec, export_batch\n"
            "from rs_embed_core.errors import UnknownExecutorError\n"
            "try:\n"
            f"    export_batch([PointBuffer(121.5, 31.2, 320)], TemporalSpec.year(2022), ['mosaiks'], {str(tmp_path / 'o')!r},"
            " executor='ray')\n"
            "except UnknownExecutorError as e:\n"
            "    print('REFUSED', e)\n")
    env = {**os.environ, "RS_EMBED_PLUGINS": "rs-embed-baseline"}  # rs-embed-ray installed but not allowed
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "REFUSED" in r.stdout and "plugin package rs-embed-ray" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "o").exists()
    assert issubclass(UnknownExecutorError, LookupError)


def test_cli_executor_flags(cluster, scene, tmp_path):
    from click.testing import CliRunner

    from rs_embed_core.cli import main

    base = ["export", "--point", "121.5,31.2", "--buffer-m", "320", "--year", "2022", "--models", "mosaiks",
            "--backend", f"local:{scene}"]
    r = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "a"), "--executor", "ray",
                                  "--ray-address", "127.0.0.1:9"])
    assert r.exit_code != 0 and "cannot reach the Ray cluster" in r.output, r.output
    r = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "b"), "--ray-address", "127.0.0.1:9"])
    assert r.exit_code != 0 and "--ray-address needs --executor ray" in r.output, r.output
    r = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "c"), "--executor", "dask"])
    assert r.exit_code != 0 and "no export executor 'dask'" in r.output, r.output
    r = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "d"), "--executor", "ray", "--quiet"])
    assert r.exit_code == 0 and "1 of 1 ok" in r.output, r.output
    assert load_export(tmp_path / "d").status["mosaiks"].tolist() == ["ok"]


def test_the_core_and_the_plugin_load_without_importing_ray():
    code = ("import sys, rs_embed\n"
            "from rs_embed_core.plugins import executor_factories, load_plugins\n"
            "load_plugins(); assert 'ray' in executor_factories()\n"
            "print('ray' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stdout + r.stderr
