"""A geotessera 0.7 tile cache and registry on disk, of this test's making (no network): tiles as
geotessera lays them out (int8 (H, W, 128) + float32 scales, a landmask GeoTIFF holding each tile's
UTM CRS and transform), listed in a GeoParquet registry.parquet and a landmasks.parquet. Tile pixels
are 40 m instead of the real 10 m so each tile is a few MB; the reader takes each tile's own transform."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

import rs_embed_tessera as rt
from rs_embed_core.fetching import raster_cache
from rs_embed_core.grid import utm_crs
from rs_embed_core.plugins import load_plugins, pm

PIXEL_M = 40.0
# (lon, lat, year): across the UTM 50/51 seam at 120 E, both sides of the antimeridian, and one tile in two years
TILES = [(119.95, 30.05, 2024), (120.05, 30.05, 2024), (120.05, 30.05, 2023), (179.95, 0.05, 2024),
         (-179.95, 0.05, 2024)]
ZERO_ROWS = 7  # every 7th tile row is all zero: no data


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_cache(root, tiles_to_write=TILES, seed: int = 0) -> dict:
    """Write the tiles under root/embeddings and the registries under root/registry; return
    {(lon, lat, year): (quantised, scales, crs, transform)}."""
    import geopandas as gpd
    import pandas as pd
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin
    from shapely.geometry import Point

    rng = np.random.default_rng(seed)
    emb_dir, reg_dir = root / "embeddings", root / "registry"
    tiles, rows, masks = {}, [], {}
    for lon, lat, year in tiles_to_write:
        crs = utm_crs(lon, lat)
        to_utm = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        edge = np.linspace(-0.05, 0.05, 11)
        xs, ys = to_utm.transform([lon + e for e in edge] * 2 + [lon - 0.05] * 11 + [lon + 0.05] * 11,
                                  [lat - 0.05] * 11 + [lat + 0.05] * 11 + [lat + e for e in edge] * 2)
        x0, x1 = math.floor(min(xs) / PIXEL_M) * PIXEL_M, math.ceil(max(xs) / PIXEL_M) * PIXEL_M
        y0, y1 = math.floor(min(ys) / PIXEL_M) * PIXEL_M, math.ceil(max(ys) / PIXEL_M) * PIXEL_M
        h, w = int(round((y1 - y0) / PIXEL_M)), int(round((x1 - x0) / PIXEL_M))
        transform = from_origin(x0, y1, PIXEL_M, PIXEL_M)
        q = rng.integers(-127, 128, (h, w, rt.DIM), dtype=np.int8)
        q[::ZERO_ROWS] = 0
        three_d = lon < 0  # one tile with per-channel scales, as geotessera allows
        s = rng.uniform(0.001, 0.02, (h, w, rt.DIM) if three_d else (h, w)).astype(np.float32)
        name = f"grid_{lon:.2f}_{lat:.2f}"
        folder = emb_dir / "global_0.1_degree_representation" / str(year) / name
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{name}.npy", q)
        np.save(folder / f"{name}_scales.npy", s)
        mask = emb_dir / "global_0.1_degree_tiff_all" / f"{name}.tiff"
        mask.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(mask, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=crs,
                           transform=transform) as dst:
            dst.write(np.ones((1, h, w), np.uint8))
        masks[(lon, lat)] = mask
        rows.append({"lon": lon, "lat": lat, "year": year, "hash": _sha(folder / f"{name}.npy"),
                     "scales_hash": _sha(folder / f"{name}_scales.npy"),
                     "file_size": (folder / f"{name}.npy").stat().st_size, "geometry": Point(lon, lat)})
        tiles[(lon, lat, year)] = (q, s, crs, transform)
    reg_dir.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(rows, crs="EPSG:4326").to_parquet(reg_dir / "registry.parquet")
    pd.DataFrame([{"lon": lon, "lat": lat, "hash": _sha(p), "file_size": p.stat().st_size}
                  for (lon, lat), p in masks.items()]).to_parquet(reg_dir / "landmasks.parquet")
    return tiles


@pytest.fixture
def make_cache():
    """write_cache, for tests that need a cache of their own."""
    return write_cache


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("tessera")
    return root, write_cache(root)


@pytest.fixture
def plugin():
    load_plugins()
    added = not pm.is_registered(rt)
    if added:
        pm.register(rt, name="tessera-test")
    raster_cache.clear()
    yield rt
    raster_cache.clear()
    if added:
        pm.unregister(rt)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt of geotessera to download fails the test."""
    import geotessera.registry

    def no_network(url, *a, **k):
        raise AssertionError(f"geotessera tried to download {url}")

    monkeypatch.setattr(geotessera.registry, "download_file_to_temp", no_network)


@pytest.fixture
def provider(cache, plugin, tmp_path, offline):
    """A provider on the on-disk cache."""
    root, _ = cache
    return rt.TesseraProvider(embeddings_dir=root / "embeddings", registry_dir=root / "registry",
                              cache_dir=tmp_path / "geotessera-cache")
