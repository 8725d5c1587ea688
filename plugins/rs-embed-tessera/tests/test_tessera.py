"""tessera through geotessera on a tile cache of the 0.7 layout: dequantisation, stitching across UTM zones and
the antimeridian on the request grid, years from the registry, coverage, export."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

import rs_embed_tessera as rt
from rs_embed import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec, export_batch, get_embedding
from rs_embed_core.errors import DataNotFoundError, SpecError
from rs_embed_core.grid import grid_for
from rs_embed_core.testing import FakeProvider

Y2024 = TemporalSpec.year(2024)


def reference_grid(tiles, grid, year):
    """Independent lookup: for each pixel centre, the tile whose 0.1 degree box holds it and that tile's
    pixel there, dequantised as int8 * scale. Returns (128, H, W) values and the (H, W) validity."""
    xs, ys = np.meshgrid(grid.x_coords(), grid.y_coords())
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    lon = (np.asarray(lon) + 180) % 360 - 180
    out = np.zeros((rt.DIM, grid.height, grid.width), np.float32)
    ok = np.zeros(grid.shape, bool)
    for (tlon, tlat, tyear), (q, s, crs, t) in tiles.items():
        own = (tyear == year) & (np.abs(lon - tlon) < 0.05) & (np.abs(lat - tlat) < 0.05)
        if not own.any():
            continue
        tx, ty = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon[own], lat[own])
        c = np.floor((np.asarray(tx) - t.c) / t.a).astype(int)
        r = np.floor((np.asarray(ty) - t.f) / t.e).astype(int)
        scale = s[r, c] if s.ndim == 3 else s[r, c][:, None]
        v = q[r, c].astype(np.float32) * scale  # (n, 128)
        out[:, own] = v.T
        ok[own] = v.any(axis=1)
    return out, ok


def test_dequantisation_is_int8_times_scale_on_known_values(plugin, offline, tmp_path, make_cache):
    """One tile pixel set to known codes and a known scale, read back through the public API."""
    tiles = make_cache(tmp_path, [(120.05, 30.05, 2024)])
    q, s, crs, t = tiles[(120.05, 30.05, 2024)]
    lon, lat = 120.04, 30.04
    tx, ty = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    c, r = int((tx - t.c) // t.a), int((ty - t.f) // t.e)
    q[r, c] = np.array([100, -50, 127, -127] * 32, np.int8)
    s[r, c] = 0.5
    path = tmp_path / "embeddings/global_0.1_degree_representation/2024/grid_120.05_30.05/grid_120.05_30.05"
    np.save(f"{path}.npy", q)
    np.save(f"{path}_scales.npy", s)
    provider = rt.TesseraProvider(embeddings_dir=tmp_path / "embeddings", registry_dir=tmp_path / "registry",
                                  cache_dir=tmp_path / "c")
    emb = get_embedding("tessera", PointBuffer(lon, lat, 4), Y2024, backend=provider)  # one 10 m pixel
    np.testing.assert_array_equal(emb.data, np.array([50.0, -25.0, 63.5, -63.5] * 32, np.float32))


def test_grid_stitches_tiles_of_two_utm_zones_on_the_request_grid(provider, cache):
    _, tiles = cache
    roi = BBox(119.99, 30.03, 120.01, 30.05)  # 120 E: zone 50 to the west, 51 to the east
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # stitched without any warning
        emb = get_embedding("tessera", roi, Y2024, output=OutputSpec.grid(), backend=provider)
    grid = grid_for(roi, 10.0)
    assert emb.grid == grid and grid.crs == "EPSG:32651"
    want, ok = reference_grid(tiles, grid, 2024)
    np.testing.assert_array_equal(emb.data, np.where(ok, want, np.nan))  # no valid pixel: NaN
    np.testing.assert_array_equal(emb.valid, ok)
    assert {t["crs"] for t in emb.meta["source"]["tiles"]} == {"EPSG:32650", "EPSG:32651"}
    assert 0 < emb.meta["valid_fraction"] < 1 and emb.meta["valid_fraction"] == pytest.approx(ok.mean())


def test_pooled_is_the_mean_of_the_valid_pixels(provider, cache):
    _, tiles = cache
    roi = PointBuffer(120.05, 30.05, 300)
    emb = get_embedding("tessera", roi, Y2024, backend=provider)
    want, ok = reference_grid(tiles, grid_for(roi, 10.0), 2024)
    np.testing.assert_allclose(emb.data, want[:, ok].astype(np.float64).mean(axis=1), rtol=1e-6, atol=1e-8)


def test_an_roi_across_the_antimeridian_reads_both_tiles(provider, cache):
    _, tiles = cache
    roi = BBox(179.99, 0.02, -179.99, 0.04)
    emb = get_embedding("tessera", roi, Y2024, output=OutputSpec.grid(), backend=provider)
    want, ok = reference_grid(tiles, emb.grid, 2024)
    np.testing.assert_array_equal(emb.data, np.where(ok, want, np.nan))  # no valid pixel: NaN
    np.testing.assert_array_equal(emb.valid, ok)
    assert {(t["lon"], t["lat"]) for t in emb.meta["source"]["tiles"]} == {(179.95, 0.05), (-179.95, 0.05)}


def test_the_year_picks_that_years_tiles(provider, cache):
    _, tiles = cache
    roi = PointBuffer(120.05, 30.05, 100)
    a = get_embedding("tessera", roi, TemporalSpec.range("2023-03-01", "2023-04-01"), backend=provider)
    b = get_embedding("tessera", roi, Y2024, backend=provider)
    want, ok = reference_grid(tiles, grid_for(roi, 10.0), 2023)
    np.testing.assert_allclose(a.data, want[:, ok].astype(np.float64).mean(axis=1), rtol=1e-6, atol=1e-8)
    assert a.meta["source"]["year"] == 2023 and not np.allclose(a.data, b.data)


def test_years_outside_the_registry_and_ranges_across_years_are_refused(provider):
    with pytest.raises(SpecError, match=r"no year 2019; available: 2023, 2024"):
        get_embedding("tessera", PointBuffer(120.05, 30.05, 100), TemporalSpec.year(2019), backend=provider)
    with pytest.raises(SpecError, match="spans the years 2023-2024"):
        get_embedding("tessera", PointBuffer(120.05, 30.05, 100), TemporalSpec.range("2023-06-01", "2024-06-01"),
                      backend=provider)


def test_no_tile_is_read_for_a_refused_year(provider, monkeypatch):
    reads = []
    real = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    with pytest.raises(SpecError):
        get_embedding("tessera", PointBuffer(120.05, 30.05, 100), TemporalSpec.year(2019), backend=provider)
    assert reads == []


def test_an_roi_without_tiles_is_a_data_not_found_error_naming_the_coverage(provider):
    with pytest.raises(DataNotFoundError, match="covers the 0.1 degree tiles listed in geotessera's registry"):
        get_embedding("tessera", PointBuffer(10.0, 45.0, 500), Y2024, backend=provider)


def test_sensor_and_preprocessing_are_refused(provider):
    with pytest.raises(SpecError, match="takes no sensor="):
        get_embedding("tessera", PointBuffer(120.05, 30.05, 100), Y2024, backend=provider,
                      sensor=SensorSpec(rt.COLLECTION, ("T000",), 10))
    with pytest.raises(SpecError, match="takes no preprocessing="):
        get_embedding("tessera", PointBuffer(120.05, 30.05, 100), Y2024, backend=provider,
                      preprocessing=[("clip", {})])
    assert provider._client is None


def test_export_mixes_the_product_with_a_model_reading_it_once_per_roi(cache, plugin, tmp_path, monkeypatch):
    import geotessera.registry

    monkeypatch.setattr(geotessera.registry, "download_file_to_temp", lambda *a, **k: pytest.fail("network"))
    root, _ = cache
    fallback = FakeProvider()
    provider = rt.TesseraProvider(fallback, embeddings_dir=root / "embeddings", registry_dir=root / "registry",
                                  cache_dir=tmp_path / "c")
    reads = []
    real = provider.fetch_product
    monkeypatch.setattr(provider, "fetch_product", lambda req: reads.append(req) or real(req))
    rois = [PointBuffer(120.03, 30.03, 100), PointBuffer(120.07, 30.07, 100)]
    export_batch(spatials=rois, names=["a", "b"], temporal=Y2024, models=["tessera", "spectral_stats"],
                 out=str(tmp_path / "x"), layout="combined", backend=provider)
    assert len(reads) == 2 and fallback.calls == 2


def test_native_grid_is_the_tiles_own_utm_lattice(cache, plugin, offline, tmp_path):
    root, tiles = cache
    provider = rt.TesseraProvider("native", embeddings_dir=root / "embeddings", registry_dir=root / "registry",
                                  cache_dir=tmp_path / "c")
    emb = get_embedding("tessera", PointBuffer(120.05, 30.05, 300), Y2024, output=OutputSpec.grid(),
                        backend=provider)
    q, s, crs, t = tiles[(120.05, 30.05, 2024)]
    g = emb.grid
    assert g.crs == crs == "EPSG:32651" and g.res == 40.0  # the tile's own pixels (40 m in this test cache)
    c0, r0 = (g.x0 - t.c) / t.a, (t.f - g.y0) / -t.e
    assert c0 == int(c0) and r0 == int(r0)
    c0, r0 = int(c0), int(r0)
    want = (q[r0:r0 + g.height, c0:c0 + g.width].astype(np.float32) * s[r0:r0 + g.height, c0:c0 + g.width, None])
    ok = want.any(axis=2)
    np.testing.assert_array_equal(emb.data, np.where(ok, want.transpose(2, 0, 1), np.nan))
    np.testing.assert_array_equal(emb.valid, ok)
    with pytest.raises(SpecError, match="a native grid is one UTM grid"):
        get_embedding("tessera", BBox(119.99, 30.03, 120.01, 30.05), Y2024, output=OutputSpec.grid(),
                      backend=provider)


def test_passes_the_embedder_contract(provider):
    from rs_embed_core.testing import check_embedder_contract

    rois = [PointBuffer(120.03, 30.03, 200), PointBuffer(120.07, 30.06, 200)]
    assert check_embedder_contract("tessera", provider=provider, temporal=Y2024, spatials=rois).checks
