"""End to end through the public API with the FakeProvider: registration, contract, card, numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rs_embed_core.api import describe_model, get_embedding
from rs_embed_core.grid import grid_for
from rs_embed_core.providers import FetchRequest
from rs_embed_core.registry import embedder_class
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing.contract import check_embedder_contract
from rs_embed_core.testing.provider import FakeProvider

WHEN = TemporalSpec.range("2022-06-01", "2022-09-01")


@pytest.fixture(autouse=True)
def _fresh_fetch_cache():
    """Each test sees its own providers' pixels: the runner's fetch cache is keyed by id(provider),
    and a new provider can reuse the id of one freed earlier (then its cached pixels come back)."""
    from rs_embed_core import runner

    cache = getattr(runner, "raster_cache", None)
    if cache is not None:
        cache.clear()
    yield


@pytest.mark.parametrize("model", ["spectral_stats", "mosaiks"])
def test_contract(baseline_plugin, model):
    report = check_embedder_contract(model, provider=FakeProvider())
    card = embedder_class(model).card
    assert report.pooled_dim == card.variant().pooled_dim
    assert all(s == (card.variant().grid_dim, 8, 8) for s in report.grid_shapes)


def test_aliases_and_card(baseline_plugin):
    assert embedder_class("STATS") is baseline_plugin.SpectralStats
    assert embedder_class("rcf") is baseline_plugin.Mosaiks
    for model in ("spectral_stats", "mosaiks"):
        d = describe_model(model)
        assert d["uses_torch"] is False
        assert all(v["weights"] is None for v in d["variants"])
        assert d["input"]["bands"] == list(baseline_plugin.BANDS)
        assert d["preprocessing"][:2] == [
            {"name": "select_bands", "params": {"bands": list(baseline_plugin.BANDS)}},
            {"name": "scale", "params": {"factor": 1e-4}},
        ]
        assert d["description"] and d["outputs"]["pooled"] and d["outputs"]["grid"]
    assert "10.1038/s41467-021-24638-z" in describe_model("mosaiks")["citation"]


def test_stats_through_the_api_equal_numpy_on_the_fetched_pixels(baseline_plugin):
    provider = FakeProvider()
    roi = PointBuffer(121.5, 31.2, 300)
    emb = get_embedding("stats", roi, WHEN, OutputSpec.pooled(), backend=provider, device="cpu")
    sensor = SensorSpec(baseline_plugin.COLLECTION, baseline_plugin.BANDS, 10)
    raster = provider.fetch(FetchRequest(grid_for(roi, 10), WHEN, sensor))
    refl = raster.data[0].astype(np.float64) * 1e-4  # (6, H, W)
    names = baseline_plugin.FEATURE_NAMES
    for i, band in enumerate(baseline_plugin.BANDS):
        v = refl[i].ravel()
        assert emb.data[names.index(f"{band}_mean")] == pytest.approx(v.mean(), rel=1e-5)
        assert emb.data[names.index(f"{band}_p90")] == pytest.approx(np.percentile(v, 90), rel=1e-5)
    ndvi = (refl[3] - refl[2]) / (refl[3] + refl[2])
    assert emb.data[names.index("NDVI_p50")] == pytest.approx(np.median(ndvi), rel=1e-5, abs=1e-6)
    assert emb.meta["model"] == "spectral_stats" and emb.meta["variant"] == "default"


def test_mosaiks_grid_through_the_api_is_georeferenced(baseline_plugin):
    roi = PointBuffer(121.5, 31.2, 320)
    emb = get_embedding("mosaiks", roi, WHEN, OutputSpec.grid(), backend=FakeProvider(), device="cpu",
                        variant="k512")
    assert emb.data.shape == (1024, 8, 8) and emb.data.dtype == np.float32
    assert emb.grid.shape == (8, 8) and emb.grid.bounds == pytest.approx(grid_for(roi, 10).bounds)
    assert emb.meta["preprocessing"][-1]["name"] == "normalize"


def test_import_does_not_pull_torch():
    code = "import sys, rs_embed_baseline; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


class _CloudyProvider(FakeProvider):
    """FakeProvider with a cloud block marked invalid and filled with `fill` (garbage or NaN)."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        self.fill = fill

    def fetch(self, request):
        r = super().fetch(request)
        valid = r.valid.copy()
        valid[:, 5:30, 10:40] = False
        data = np.where(valid[:, None], r.data, np.float32(self.fill))
        return r.replace(data=data, valid=valid)


@pytest.mark.parametrize("model", ["stats", "mosaiks"])
def test_the_runner_mask_reaches_forward(baseline_plugin, model):
    roi = PointBuffer(121.5, 31.2, 300)
    out = {}
    fills = (0.0, 9e6, float("nan"))
    providers = [_CloudyProvider(fill) for fill in fills]  # kept alive: the runner caches by provider
    for k, provider in enumerate(providers):
        for mode in (OutputSpec.pooled(), OutputSpec.grid()):
            e = get_embedding(model, roi, WHEN, mode, backend=provider, device="cpu")
            seen = ... if e.valid is None else (slice(None), e.valid > 0)  # cells with no valid input are NaN
            assert np.isfinite(e.data[seen]).all()
            out[k, mode.mode] = e.data
    for mode in ("pooled", "grid"):
        for k in range(1, len(fills)):
            np.testing.assert_array_equal(out[0, mode], out[k, mode])
    clear = get_embedding(model, roi, WHEN, OutputSpec.pooled(), backend=FakeProvider(), device="cpu")
    assert not np.allclose(clear.data, out[0, "pooled"])  # the cloud block was really left out
