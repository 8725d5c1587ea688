"""The hardening issue's reproducers: each test failed on the foundation's main and passes now."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import rs_embed
from rs_embed import (
    BatchError, BBox, ItemError, LowValidDataWarning, OutputSpec, PointBuffer, SensorSpec, SpecError, TemporalSpec,
    TransientProviderError, get_embedding, get_embeddings_batch,
)
from rs_embed_core import runner
from rs_embed_core.errors import FetchTimeoutError, ProviderError
from rs_embed_core.plugins import pm
from rs_embed_core.retry import RetryPolicy
from rs_embed_core.runner import clear_model_cache, raster_cache

from world_plugin import BANDS, WINDOW, WorldProvider, _Plugin

FAST = RetryPolicy(max_retries=3, base_delay_s=0.001, max_delay_s=0.01)


@pytest.fixture(autouse=True)
def plugin(monkeypatch):
    p = _Plugin()
    pm.register(p, name="test-hardening-plugin")
    raster_cache.clear()
    clear_model_cache()
    monkeypatch.setattr(runner, "DEFAULT_RETRY", FAST)
    yield
    pm.unregister(p)


def pts(n: int) -> list[PointBuffer]:
    return [PointBuffer(121.5 + 0.01 * i, 31.2, 160) for i in range(n)]


def _in_thread(fn, limit_s: float = 60.0):
    """Run fn in a thread; fail (instead of hanging the suite) if it does not return in time."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"call did not return within {limit_s} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------- 1. first-use race


def test_concurrent_first_calls_all_see_the_installed_plugins():
    code = textwrap.dedent("""
        import threading
        from rs_embed_core.registry import embedder_class
        barrier = threading.Barrier(8)
        out = []
        def call():
            barrier.wait()
            try:
                out.append(embedder_class("mosaiks").card.id)
            except Exception as e:
                out.append(type(e).__name__)
        ts = [threading.Thread(target=call) for _ in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(",".join(out))
    """)
    env = {k: v for k, v in os.environ.items() if k != "RS_EMBED_PLUGINS"}
    for _ in range(2):  # fresh processes: first use each time
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().split(",") == ["mosaiks"] * 8


# ---------------------------------------------------------------- 2. stuck fetches


class Hanging(WorldProvider):
    """Never answers for the ROIs in `stuck` (a hung server)."""

    fetch_timeout_s = 0.3

    def __init__(self, stuck=()):
        super().__init__()
        self.stuck = set(stuck)
        self.release = threading.Event()

    def fetch(self, req):
        if req.grid.x0 in self.stuck:
            self.release.wait()  # never set: the call hangs
        return super().fetch(req)


def test_a_hung_fetch_times_out_and_only_its_roi_fails():
    rois = pts(4)
    from rs_embed_core.grid import grid_for

    prov = Hanging(stuck={grid_for(rois[2], 10).x0})
    out = _in_thread(lambda: get_embeddings_batch("tiny_test_model", rois, WINDOW, backend=prov,
                                                  continue_on_error=True, max_retries=1))
    assert [type(r).__name__ for r in out] == ["Embedding", "Embedding", "ItemError", "Embedding"]
    err = out[2]
    assert err.error_type == "FetchTimeoutError" and err.stage == "fetch" and err.attempts == 2
    assert "121.52" in err.spatial  # names the ROI


def test_single_call_hang_raises_fetch_timeout():
    p = pts(1)[0]
    from rs_embed_core.grid import grid_for

    prov = Hanging(stuck={grid_for(p, 10).x0})
    with pytest.raises(FetchTimeoutError, match="fetch_timeout_s"):
        _in_thread(lambda: get_embedding("tiny_test_model", p, WINDOW, backend=prov, max_retries=0))


def test_ctrl_c_returns_promptly_while_a_fetch_hangs(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from rs_embed_core.plugins import pm
        from world_plugin import WorldProvider, WINDOW, _Plugin
        from rs_embed import PointBuffer, get_embeddings_batch
        pm.register(_Plugin(), name="p")
        class Hang(WorldProvider):
            fetch_timeout_s = None  # no timeout: only Ctrl-C can end it
            def fetch(self, req):
                print("fetching", flush=True)
                threading.Event().wait()
        try:
            get_embeddings_batch("tiny_test_model", [PointBuffer(121.5 + 0.01 * i, 31.2, 160) for i in range(6)],
                                 WINDOW, backend=Hang(), progress=False)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """))
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert "fetching" in proc.stdout.readline()  # several workers may print at once
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)  # would hang forever on the old executor
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in out


# ---------------------------------------------------------------- 3. per-item errors and retries


def _flaky(fail: dict, kind=TransientProviderError):
    """A provider failing each ROI (by grid origin) the given number of times before succeeding."""

    class Flaky(WorldProvider):
        def fetch(self, req):
            left = fail.get(req.grid.x0, 0)
            if left:
                fail[req.grid.x0] = left - 1
                raise kind("temporary upstream trouble")
            return super().fetch(req)

    return Flaky()


def test_transient_errors_are_retried_and_recorded():
    from rs_embed_core.grid import grid_for

    rois = pts(3)
    prov = _flaky({grid_for(rois[1], 10).x0: 2})
    out = get_embeddings_batch("tiny_test_model", rois, WINDOW, backend=prov)
    assert [e.meta["attempts"] for e in out] == [1, 3, 1]
    clean = get_embeddings_batch("tiny_test_model", rois, WINDOW, backend=WorldProvider())
    assert all(np.array_equal(a.data, b.data) for a, b in zip(out, clean))


def test_raw_connection_errors_are_typed_and_retried_boundedly():
    from rs_embed_core.grid import grid_for

    rois = pts(3)
    prov = _flaky({grid_for(rois[0], 10).x0: 100}, kind=ConnectionError)
    with pytest.raises(BatchError) as ei:
        get_embeddings_batch("tiny_test_model", rois, WINDOW, backend=prov, max_retries=2)
    (e,) = ei.value.errors
    assert (e.index, e.error_type, e.attempts, e.stage) == (0, "TransientProviderError", 3, "fetch")
    assert "ConnectionError" in e.message and "PointBuffer(lon=121.5" in str(ei.value)
    assert [type(r).__name__ for r in ei.value.results] == ["ItemError", "Embedding", "Embedding"]


def test_permanent_errors_are_not_retried():
    from rs_embed_core.grid import grid_for

    rois = pts(2)
    prov = _flaky({grid_for(rois[1], 10).x0: 1}, kind=ProviderError)
    out = get_embeddings_batch("tiny_test_model", rois, WINDOW, backend=prov, continue_on_error=True)
    assert isinstance(out[1], ItemError) and out[1].attempts == 1 and out[1].error_type == "ProviderError"


def test_fake_provider_one_call_in_ten_failing_gives_partial_results():
    from rs_embed_core.testing import FakeProvider

    prov = FakeProvider(bands=BANDS, fail_on=lambda r: int(r.grid.x0 / 10) % 10 == 0)
    rois = pts(30)
    out = get_embeddings_batch("tiny_test_model", rois, WINDOW, backend=prov, continue_on_error=True, batch_size=4)
    bad = [i for i, r in enumerate(out) if isinstance(r, ItemError)]
    assert 0 < len(bad) < len(rois)
    assert all(out[i].index == i and out[i].stage == "fetch" for i in bad)


def test_a_model_failure_on_one_item_spares_the_rest_of_its_batch():
    from world_plugin import TinyModel

    real = TinyModel.forward

    def forward(self, x, ctx):
        if any(abs(c[0] - 121.52) < 1e-9 for c in ctx.centers_lonlat):
            raise RuntimeError("this input breaks the model")
        return real(self, x, ctx)

    TinyModel.forward = forward
    try:
        out = get_embeddings_batch("tiny_test_model", pts(4), WINDOW, backend=WorldProvider(),
                                   continue_on_error=True, batch_size=4)
    finally:
        TinyModel.forward = real
    assert [type(r).__name__ for r in out] == ["Embedding", "Embedding", "ItemError", "Embedding"]
    assert out[2].stage == "model" and "breaks the model" in out[2].message


# ---------------------------------------------------------------- 4. stale pixels


def test_cache_key_includes_the_source_version():
    class Versioned(WorldProvider):
        version = 1

        def source_token(self, req):
            return f"v{self.version}"

        def fetch(self, req):
            r = super().fetch(req)
            return r.replace(data=r.data + 1000 * self.version)

    prov = Versioned()
    p = pts(1)[0]
    a = get_embedding("tiny_test_model", p, WINDOW, backend=prov)
    again = get_embedding("tiny_test_model", p, WINDOW, backend=prov)
    assert len(prov.fetched) == 1 and np.array_equal(a.data, again.data)  # cached
    prov.version = 2  # the file was rewritten
    b = get_embedding("tiny_test_model", p, WINDOW, backend=prov)
    assert len(prov.fetched) == 2 and not np.array_equal(a.data, b.data)


# ---------------------------------------------------------------- 6. ROI size guard, 7. antimeridian


@pytest.mark.parametrize("spatial, scale", [
    (PointBuffer(121.5, 31.2, 500_000), 10), (PointBuffer(121.5, 31.2, 1e308), 10),
    (PointBuffer(121.5, 31.2, 100), 1e-3), (BBox(-180, -10, 180, 10), 10),
])
def test_huge_grids_are_refused_before_any_fetch(spatial, scale):
    prov = WorldProvider()
    sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS, scale)
    with pytest.raises(SpecError, match="limit|degrees wide") as ei:
        get_embedding("tiny_test_model", spatial, WINDOW, backend=prov, sensor=sensor)
    assert "Split" in str(ei.value)
    assert prov.fetched == []


def test_pixel_limit_is_overridable(monkeypatch):
    from rs_embed_core.grid import grid_for

    monkeypatch.setenv("RS_EMBED_MAX_PIXELS", "100")
    with pytest.raises(SpecError, match="100 pixels"):
        grid_for(PointBuffer(121.5, 31.2, 160), 10)  # 32 x 32


def test_roi_across_the_antimeridian():
    from rs_embed_core.grid import grid_for

    box = BBox(179.95, 0.0, -179.95, 0.05)
    assert box.crosses_antimeridian and box.width_deg == pytest.approx(0.1)
    assert box.center[0] == pytest.approx(180.0) or box.center[0] == pytest.approx(-180.0)
    g = grid_for(box, 10)
    assert g.crs == "EPSG:32660" and 1105 < g.width < 1125  # 0.1 degree of longitude at 10 m
    lo, _, hi, _ = g.footprint_lonlat()
    assert 0.09 < hi - lo < 0.11  # one continuous 0.1 degree span, not the whole globe
    from rs_embed_core.testing import FakeProvider

    e = get_embedding("tiny_test_model", PointBuffer(179.99, 0.0, 160), WINDOW, backend=FakeProvider(bands=BANDS))
    assert np.isfinite(e.data).all()
    with pytest.raises(SpecError, match="antimeridian"):
        BBox(10, 0, 10, 1)


# ---------------------------------------------------------------- 8. degenerate inputs


class Empty(WorldProvider):
    def fetch(self, req):
        r = super().fetch(req)
        return r.replace(valid=np.zeros_like(r.valid))


def test_low_valid_inputs_warn_once_per_call_and_are_recorded():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = get_embeddings_batch("tiny_test_model", pts(3), WINDOW, backend=Empty())
    low = [w for w in caught if issubclass(w.category, LowValidDataWarning)]
    assert len(low) == 1 and "3 of 3 ROI" in str(low[0].message)
    assert out[0].meta["valid_policy"] == {"min_valid_fraction": 0.2, "on_low_valid": "warn"}
    with pytest.raises(BatchError, match="LowValidDataError"):
        get_embeddings_batch("tiny_test_model", pts(2), WINDOW, backend=Empty(), on_low_valid="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_embeddings_batch("tiny_test_model", pts(2), WINDOW, backend=Empty(), on_low_valid="allow")
    with pytest.raises(SpecError, match="on_low_valid"):
        get_embeddings_batch("tiny_test_model", pts(2), WINDOW, backend=Empty(), on_low_valid="ignore")


def test_nan_inputs_do_not_become_silent_nan_embeddings():
    class NaN(WorldProvider):
        def fetch(self, req):
            r = super().fetch(req)
            return r.replace(data=np.full_like(r.data, np.nan))

    out = get_embeddings_batch("tiny_test_model", pts(2), WINDOW, backend=NaN(), continue_on_error=True)
    assert all(isinstance(r, ItemError) and "non-finite" in r.message for r in out)


# ---------------------------------------------------------------- 10. plugin trust


def test_allow_list_is_keyed_by_distribution(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    for dist, mod, model in (("real-plugs", "real_plug", "real_model"), ("evil-plugs", "evil_plug", "evil_model")):
        (site / f"{mod}.py").write_text(textwrap.dedent(f"""
            from rs_embed_core.card import InputSpec, ModelCard, Variant
            from rs_embed_core.embedder import Embedder
            from rs_embed_core.hookspecs import hookimpl
            class M(Embedder):
                card = ModelCard(id="{model}", description="d", input=InputSpec("x", ("a",), 1.0),
                                 variants=(Variant("v", 1, 1),), preprocessing=())
            @hookimpl
            def register_embedders(register):
                register(M)
        """))
        info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[rs_embed]\nsameplug = {mod}\n")  # both claim one name
    code = "import json; from rs_embed_core.plugins import plugin_info; print(json.dumps(plugin_info()))"

    def loaded(allow):
        env = {**os.environ, "PYTHONPATH": str(site), "RS_EMBED_PLUGINS": allow}
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        return {p["name"]: p.get("distribution") for p in json.loads(res.stdout) if not p["builtin"]}

    assert loaded("real-plugs") == {"sameplug": "real-plugs"}
    assert loaded("Real_Plugs:sameplug") == {"sameplug": "real-plugs"}
    assert loaded("evil-plugs:other") == {}
    assert loaded("sameplug") == {}  # a bare entry-point name no longer admits any distribution


# ---------------------------------------------------------------- 11. smaller


def test_bad_step_parameters_fail_before_any_fetch():
    prov = WorldProvider()
    with pytest.raises(SpecError, match="resize.*bad parameters"):
        get_embedding("tiny_test_model", pts(1)[0], WINDOW, backend=prov,
                      preprocessing=[("resize", {"sise": 32})])
    assert prov.fetched == []


def test_devices_are_checked_before_loading():
    from rs_embed_core.runner import resolve_device

    with pytest.raises(SpecError, match="meta"):
        resolve_device("meta", True)
    assert resolve_device(None, False) == "cpu"
    assert resolve_device(None, True) == resolve_device("auto", True)


@pytest.mark.parametrize("make", [
    lambda: PointBuffer(True, 31.2, 100), lambda: PointBuffer(121.5, False, 100), lambda: BBox(0, 0, True, 1),
    lambda: TemporalSpec.year(True), lambda: SensorSpec("x", ("a",), True),
])
def test_bools_are_not_numbers(make):
    with pytest.raises(SpecError):
        make()


def test_aware_datetimes_are_read_in_utc():
    tz = dt.timezone(dt.timedelta(hours=-8))
    t = TemporalSpec(dt.datetime(2022, 6, 30, 20, 0, tzinfo=tz), dt.datetime(2022, 7, 31, 20, 0, tzinfo=tz))
    assert (t.start, t.end) == (dt.date(2022, 7, 1), dt.date(2022, 8, 1))
    assert t.contains(dt.datetime(2022, 6, 30, 17, 0, tzinfo=tz)) is True  # 01:00 UTC on July 1st


def test_item_errors_render_and_export_is_reexported():
    assert rs_embed.ItemError is ItemError and rs_embed.UnknownProviderError
    rec = ItemError(3, "farm", "PointBuffer(lon=1, lat=2, buffer_m=3)", "m", "fetch", "ProviderError", "no", 2)
    assert rec.describe() == ("item 3 (farm) PointBuffer(lon=1, lat=2, buffer_m=3), model m: fetch failed "
                              "after 2 attempts: ProviderError: no")
    assert isinstance(rec.to_exception(), rs_embed.RsEmbedError)


# ---------------------------------------------------------------- sensor fit (issue: your own scenes)


def test_saturating_chains_warn_once_with_the_step_named():
    from rs_embed_core.runner import SaturatedInputWarning

    class Bright(WorldProvider):  # 8-bit-like values far above the chain's expected 0..3000 DN
        def fetch(self, req):
            r = super().fetch(req)
            return r.replace(data=np.full_like(r.data, 9000.0))

    chain = [("select_bands", {"bands": list(BANDS)}), ("to_8bit", {"low": 0, "high": 3000}),
             ("resize", {"size": 32})]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_embeddings_batch("tiny_test_model", pts(3), WINDOW, backend=Bright(), preprocessing=chain)
        get_embeddings_batch("tiny_test_model", pts(3), WINDOW, backend=WorldProvider(), preprocessing=chain)
    sat = [w for w in caught if issubclass(w.category, SaturatedInputWarning)]
    assert len(sat) == 1 and "'to_8bit'" in str(sat[0].message) and "3 of 3" in str(sat[0].message)
