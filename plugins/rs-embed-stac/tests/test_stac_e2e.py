"""End to end: registration by name, and get_embeddings_batch on STAC pixels equal to the same model on
a direct rasterio read of the same COGs; plus one opt-in live test (RS_EMBED_STAC_LIVE=1)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rs_embed_core.api import get_embeddings_batch
from rs_embed_core.grid import grid_for
from rs_embed_core.raster import Raster
from rs_embed_core.runner import resolve_provider
from rs_embed_core.specs import OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_stac import EARTH_SEARCH, PLANETARY_COMPUTER, CollectionMap, StacProvider

S2 = "COPERNICUS/S2_SR_HARMONIZED"
BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")
WHEN = TemporalSpec.range("2022-06-01", "2022-07-01")


def test_registered_by_name(stac_plugin):
    assert resolve_provider("stac").catalog is EARTH_SEARCH
    assert resolve_provider("stac:earth-search").catalog is EARTH_SEARCH
    pc = resolve_provider("stac:planetary-computer")
    assert pc.catalog is PLANETARY_COMPUTER and pc.signer is not None
    with pytest.raises(Exception, match="unknown STAC preset"):
        resolve_provider("stac:nowhere")


class DirectProvider:
    """The reference: the same COGs read by rasterio itself onto each request grid."""

    name = "direct"
    max_concurrency = 1

    def __init__(self, paths):
        self.paths = paths

    def check(self, sensor):
        pass

    def fetch(self, request):
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        g = request.grid
        data, ok = [], np.ones((g.height, g.width), bool)
        for b in request.sensor.bands:
            with rasterio.open(self.paths[b]) as src, WarpedVRT(
                    src, crs=g.crs, transform=g.affine(), width=g.width, height=g.height,
                    resampling=Resampling.bilinear, add_alpha=True, dtype="float32") as vrt:
                data.append(vrt.read(1))
                ok &= vrt.read(2) > 0
        arr = np.stack(data)
        arr[:, ~ok] = 0.0
        return Raster(arr[None], request.sensor.bands, g, (None,), ok[None], {"provider": "direct"})


def test_get_embeddings_batch_on_stac_pixels(stac_api, files, kit, stac_plugin):
    pytest.importorskip("rs_embed_baseline")
    pytest.importorskip("rs_embed_core.providers.reading", reason="the core's shared reading code has not landed yet")
    from rs_embed_core.plugins import load_plugins

    load_plugins()
    rng = np.random.default_rng(0)
    assets, paths = {}, {}
    for i, band in enumerate(BANDS):
        arr = (rng.integers(300, 4000, (200, 200))).astype(np.uint16)
        assets[band.lower()] = kit.asset(kit.publish(files, f"e2e/{band}.tif", arr))
        paths[band] = files.root / "e2e" / f"{band}.tif"
    url = stac_api([kit.make_item("e2e", "2022-06-10T10:00:00Z", assets, collection="sentinel-2-l2a",
                                  **{"s2:processing_baseline": "03.01"})])
    stac = StacProvider(url=url, collections={S2: CollectionMap("sentinel-2-l2a", {b: b.lower() for b in BANDS})})
    lon, lat = _lonlat(kit, 1000.0, 1000.0)
    rois = [PointBuffer(lon, lat, 300), PointBuffer(lon + 0.002, lat - 0.001, 250)]
    sensor = SensorSpec(S2, BANDS, 10, cloud_mask=False)
    for model in ("spectral_stats", "mosaiks"):
        got = get_embeddings_batch(model, spatials=rois, temporal=WHEN, sensor=sensor, backend=stac,
                                   output=OutputSpec.pooled())
        ref = get_embeddings_batch(model, spatials=rois, temporal=WHEN, sensor=sensor,
                                   backend=DirectProvider(paths), output=OutputSpec.pooled())
        for g, r in zip(got, ref):
            assert np.abs(g.data - r.data).max() <= 1e-5
            assert g.meta["source"]["item_ids"] == ["e2e"] and g.meta["source"]["catalog"] == "custom"


def _lonlat(kit, dx, dy):
    from rasterio.warp import transform

    (lon,), (lat,) = transform(kit.CRS, "EPSG:4326", [kit.X0 + dx], [kit.Y0 - dy])
    return lon, lat


@pytest.mark.skipif(os.environ.get("RS_EMBED_STAC_LIVE") != "1", reason="live test: set RS_EMBED_STAC_LIVE=1")
@pytest.mark.parametrize("preset", ["earth-search", "planetary-computer"])
def test_live_sentinel2(preset):
    """Real catalogs, real COGs: a 1 km ROI near Munich, summer 2023 (needs internet access)."""
    from rs_embed_core.providers import FetchRequest

    p = StacProvider(preset, max_items=20)
    g = grid_for(PointBuffer(11.58, 48.14, 500), 10)
    r = p.fetch(FetchRequest(g, TemporalSpec.range("2023-07-01", "2023-08-01"),
                             SensorSpec(S2, ("B2", "B4", "B8", "SCL"), 10, max_cloud_fraction=0.3)))
    assert r.shape == (1, 4, 100, 100) and r.meta["item_ids"]
    assert r.valid.mean() > 0.5
    vis = r.data[0, :3][:, r.valid[0]]
    assert 0 < np.median(vis) < 10000  # harmonized DN = reflectance x 10000
    assert all(s.get("processing_baseline") for s in r.meta["scenes"])
