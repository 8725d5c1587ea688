"""End-to-end through the public API with the in-process test plugin of world_plugin.py (provider + model)."""

from __future__ import annotations

import numpy as np
import pytest

import rs_embed
from rs_embed import (
    BBox, OutputSpec, PointBuffer, SensorSpec, SpecError, TemporalSpec, UnknownBandError, UnknownModelError,
    get_embedding, get_embeddings_batch,
)
from rs_embed_core.card import Step
from rs_embed_core.errors import ProviderError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm

from world_plugin import BANDS, WINDOW, TinyModel, WorldProvider

pytestmark = pytest.mark.usefixtures("world")


def test_single_equals_batch_item_and_order():
    pts = [PointBuffer(121.5 + 0.01 * i, 31.2, 160) for i in range(7)]
    prov = WorldProvider(jitter=0.02)
    batch = get_embeddings_batch("tiny_test_model", pts, WINDOW, backend=prov, batch_size=3)
    for p, e in zip(pts, batch):
        single = get_embedding("tiny_test_model", p, WINDOW, backend=WorldProvider())
        np.testing.assert_array_equal(single.data, e.data)
        assert e.meta["spatial"]["lon"] == p.lon
    assert batch[0].data.shape == (8,) and batch[0].data.dtype == np.float32


def test_meta_records_what_ran():
    e = get_embedding("TINYALIAS", PointBuffer(121.5, 31.2, 160), WINDOW, backend="world")
    m = e.meta
    assert m["model"] == "tiny_test_model" and m["variant"] == "base" and m["weights"] is None
    assert m["provider"] == "world" and m["plugin"] == "test-world-plugin"
    assert [s["name"] for s in m["preprocessing"]] == ["select_bands", "scale", "resize"]
    assert m["sensor"]["bands"] == list(BANDS) and m["temporal"] == {"start": "2022-06-01", "end": "2022-09-01"}
    assert m["input_shape"] == [1, 4, 32, 32]
    assert m["valid_fraction"] == pytest.approx(1 - 4 / 32**2)
    assert m["versions"]["rs_embed"] == rs_embed.__version__


def test_grid_output_is_georeferenced():
    spatial = PointBuffer(121.5, 31.2, 160)
    e = get_embedding("tiny_test_model", spatial, WINDOW, OutputSpec.grid(), backend="world")
    assert e.data.shape == (8, 4, 4)
    from rs_embed_core.grid import grid_for

    assert e.grid.bounds == pytest.approx(grid_for(spatial, 10.0).bounds)
    assert e.grid.shape == (4, 4) and e.grid.crs == "EPSG:32651"
    da = e.to_xarray()
    assert da.dims == ("band", "y", "x") and da.attrs["crs"] == "EPSG:32651"
    assert float(da.x[0]) == pytest.approx(e.grid.bounds[0] + e.grid.res / 2)


def test_pooling_modes_follow_the_grid():
    spatial = PointBuffer(121.5, 31.2, 160)
    g = get_embedding("tiny_test_model", spatial, WINDOW, OutputSpec.grid(), backend="world").data
    mean = get_embedding("tiny_test_model", spatial, WINDOW, OutputSpec.pooled("mean"), backend="world").data
    mx = get_embedding("tiny_test_model", spatial, WINDOW, OutputSpec.pooled("max"), backend="world").data
    np.testing.assert_allclose(mean, g.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(mx, g.max(axis=(1, 2)), rtol=1e-6)


def test_identical_requests_fetch_once_and_model_loads_once():
    prov = WorldProvider()
    p = PointBuffer(121.5, 31.2, 160)
    TinyModel.loads = 0
    embs = get_embeddings_batch("tiny_test_model", [p, p, p, PointBuffer(121.6, 31.2, 160)], WINDOW, backend=prov)
    assert len(embs) == 4 and len(prov.fetched) == 2
    get_embedding("tiny_test_model", p, WINDOW, backend=prov)
    assert TinyModel.loads == 1


def test_variant_and_preprocessing_override():
    p = PointBuffer(121.5, 31.2, 160)
    base = get_embedding("tiny_test_model", p, WINDOW, backend="world")
    big = get_embedding("tiny_test_model", p, WINDOW, backend="world", variant="big")
    np.testing.assert_allclose(big.data, 2 * base.data, rtol=1e-6)
    custom = [Step("select_bands", {"bands": list(BANDS)}), ("resize", {"size": 32})]
    raw = get_embedding("tiny_test_model", p, WINDOW, backend="world", preprocessing=custom)
    np.testing.assert_allclose(raw.data[:4], base.data[:4] * 1e4, rtol=1e-4)
    assert [s["name"] for s in raw.meta["preprocessing"]] == ["select_bands", "resize"]
    with pytest.raises(SpecError, match="variant"):
        get_embedding("tiny_test_model", p, WINDOW, backend="world", variant="huge")


def test_bad_input_fails_before_any_fetch():
    prov = WorldProvider()
    p = PointBuffer(121.5, 31.2, 160)
    with pytest.raises(UnknownModelError, match="tiny_test_model"):
        get_embedding("tiny_test_modl", p, WINDOW, backend=prov)
    with pytest.raises(UnknownBandError):
        get_embedding("tiny_test_model", p, WINDOW, backend=prov,
                      sensor=SensorSpec("my/own", ("B2", "SWIR9"), 10))
    with pytest.raises(SpecError):
        get_embedding("tiny_test_model", p, "2022", backend=prov)
    with pytest.raises(SpecError, match="input_prep"):
        get_embedding("tiny_test_model", p, WINDOW, backend=prov, input_prep="tiles")
    with pytest.raises(SpecError, match="unknown preprocessing step"):
        get_embedding("tiny_test_model", p, WINDOW, backend=prov, preprocessing=[("sharpen", {})])
    with pytest.raises(SpecError, match="numpy"):
        get_embedding("tiny_test_model", p, WINDOW, backend=prov, device="cuda")
    with pytest.raises(SpecError):
        get_embeddings_batch("tiny_test_model", [], WINDOW, backend=prov)
    with pytest.raises(rs_embed.RsEmbedError, match="backend"):
        get_embedding("tiny_test_model", p, WINDOW, backend="wrld")
    assert prov.fetched == []


def test_provider_errors_propagate():
    class Broken(WorldProvider):
        def fetch(self, req):
            raise ProviderError("upstream said no")

    with pytest.raises(ProviderError, match="upstream said no"):  # one ROI: the typed error itself
        get_embedding("tiny_test_model", PointBuffer(121.5, 31.2, 160), WINDOW, backend=Broken())
    with pytest.raises(rs_embed.BatchError, match="3 of 3 ROI") as ei:  # a batch: every failed ROI named
        get_embeddings_batch("tiny_test_model", [PointBuffer(121.5, 31.2, 160)] * 3, WINDOW, backend=Broken())
    assert [e.index for e in ei.value.errors] == [0, 1, 2]
    assert all(e.stage == "fetch" and e.error_type == "ProviderError" for e in ei.value.errors)


def test_backend_name_with_argument_reaches_the_factory(monkeypatch):
    seen = []

    class Recording(WorldProvider):
        def __init__(self, arg=None):
            super().__init__(arg)
            seen.append(arg)

    class P:
        @hookimpl
        def register_providers(self, register):
            register("recording", Recording)

    p = P()
    pm.register(p, name="recording-plugin")
    try:
        get_embedding("tiny_test_model", PointBuffer(121.5, 31.2, 160), WINDOW, backend="recording:/some/dir")
    finally:
        pm.unregister(p)
    assert seen == ["/some/dir"]


def test_bbox_roi_works():
    e = get_embedding("tiny_test_model", BBox(121.50, 31.20, 121.51, 31.21), WINDOW, backend="world")
    assert e.data.shape == (8,) and np.isfinite(e.data).all()


def test_list_and_describe():
    assert "tiny_test_model" in rs_embed.list_models()
    d = rs_embed.describe_model("tinyalias")
    assert d["id"] == "tiny_test_model" and d["plugin"] == "test-world-plugin"
    assert [s["name"] for s in d["preprocessing"]] == ["select_bands", "scale", "resize"]
    assert [v["name"] for v in d["variants"]] == ["base", "big"] and d["variants"][0]["default"]


def test_cache_never_serves_one_providers_pixels_to_another():
    p = PointBuffer(121.5, 31.2, 160)
    seen = []
    for k in range(5):  # each provider is freed before the next is made (ids may be reused)
        prov = WorldProvider()
        get_embedding("tiny_test_model", p, WINDOW, backend=prov)
        seen.append(len(prov.fetched))
        del prov
    assert seen == [1] * 5


def test_raster_cache_is_bounded_by_bytes():
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.runner import RasterCache
    from rs_embed_core.specs import SensorSpec

    prov = WorldProvider()
    sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS, 10)
    reqs = [FetchRequest(grid_for(PointBuffer(121.5 + 0.01 * i, 31.2, 160), 10), WINDOW, sensor) for i in range(5)]
    rasters = [prov.fetch(r) for r in reqs]
    one = rasters[0].data.nbytes
    cache = RasterCache(max_bytes=2 * one)
    for r, x in zip(reqs, rasters):
        cache.put(cache.key(prov, r), x)
    assert [cache.get(cache.key(prov, r)) is not None for r in reqs] == [False, False, False, True, True]
    assert cache.get(cache.key(WorldProvider(), reqs[4])) is None  # another provider never sees these pixels


def test_raster_cache_is_bounded_by_entries():
    """Many tiny rasters: their objects, not their pixels, dominate memory; the entry cap bounds them."""
    from rs_embed_core.grid import grid_for
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.runner import RasterCache
    from rs_embed_core.specs import SensorSpec

    prov = WorldProvider()
    sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS, 10)
    reqs = [FetchRequest(grid_for(PointBuffer(121.5 + 0.01 * i, 31.2, 20), 10), WINDOW, sensor) for i in range(4)]
    cache = RasterCache(max_entries=2)
    for r in reqs:
        cache.put(cache.key(prov, r), prov.fetch(r))
    assert [cache.get(cache.key(prov, r)) is not None for r in reqs] == [False, False, True, True]
