"""The synthetic Sentinel-2 scene: well-formed files, plausible classes, and usable through `local`."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from rs_embed_core.collections import known_collection
from rs_embed_core.grid import grid_for
from rs_embed_core.providers import FetchRequest
from rs_embed_core.providers.local import LocalProvider, date_from_name
from rs_embed_core.sample import BANDS, COLLECTION, DATES, SAMPLE_POINTS, SITES, make_sample_scene
from rs_embed_core.specs import PointBuffer, SensorSpec, TemporalSpec

SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    return out, make_sample_scene(out)


def _window(path, lon, lat, radius_px):
    """Reflectance (bands, h, w) around a lon/lat, read straight from the file."""
    with rasterio.open(path) as src:
        x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(lon, lat)
        row, col = src.index(x, y)
        win = rasterio.windows.Window(col - radius_px, row - radius_px, 2 * radius_px + 1, 2 * radius_px + 1)
        dn = src.read(window=win).astype(np.float64)
    return np.where(dn == 0, np.nan, dn / 10000.0)


def _ndvi(refl):
    red, nir = refl[BANDS.index("B4")], refl[BANDS.index("B8")]
    return (nir - red) / (nir + red)


def _point(name):
    return next((lon, lat) for n, lon, lat in SAMPLE_POINTS if n == name)


def _file(paths, site, date):
    return next(p for p in paths if site in p.name and date.isoformat() in p.name)


def test_files_are_well_formed(scene):
    out, paths = scene
    assert len(paths) == len(SITES) * len(DATES) == 6
    assert sorted(paths) == sorted(out.glob("*.tif"))
    assert not list(out.glob("*.part"))
    assert set(BANDS) <= set(known_collection(COLLECTION).band_names)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32651", always_xy=True)
    for path in paths:
        assert path.stat().st_size < 16e6
        assert date_from_name(path.name).date() in DATES
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32651
            assert src.res == (10.0, 10.0) and src.shape == (1200, 1200)
            assert src.dtypes == ("uint16",) * len(BANDS) and src.nodata == 0
            assert src.descriptions == BANDS
            assert src.compression.name.lower() == "deflate" and src.profile["tiled"]
            assert src.tags()["RS_EMBED_COLLECTION"] == COLLECTION
            site = next(s for s in SITES if s.name in path.name)
            cx, cy = to_utm.transform(site.lon, site.lat)
            left, bottom, right, top = src.bounds
            assert abs((left + right) / 2 - cx) <= 10 and abs((bottom + top) / 2 - cy) <= 10
            dn = src.read(out_shape=(len(BANDS), 300, 300))  # decimated, for speed
            valid = dn[0] != 0
            assert dn[:, valid].max() <= 10000
            cloudy = 1 - valid.mean()
            if DATES.index(date_from_name(path.name).date()) == 1:
                assert 0.05 < cloudy < 0.4  # July has cloud blobs written as nodata
            else:
                assert cloudy == 0


def test_classes_are_spectrally_sensible(scene):
    _, paths = scene
    aug = DATES[2]
    lake = _window(_file(paths, "hangzhou", aug), *_point("hangzhou_lake"), 20)
    river = _window(_file(paths, "shanghai", aug), *_point("shanghai_river"), 5)
    crops = _window(_file(paths, "hangzhou", aug), *_point("hangzhou_crops"), 50)
    urban = _window(_file(paths, "shanghai", aug), *_point("shanghai_urban"), 50)
    for water in (lake, river):
        assert np.nanmedian(_ndvi(water)) < 0.0  # water: NIR below red
        assert np.nanmedian(water[BANDS.index("B8")]) < 0.06
    assert np.nanmedian(_ndvi(crops)) > 0.6  # crops in late August are green
    assert 0.0 < np.nanmedian(_ndvi(urban)) < 0.35
    # built-up: SWIR1 above NIR is typical of concrete and roofs, never of a green canopy
    assert np.nanmean(urban[BANDS.index("B11")] > urban[BANDS.index("B8")]) > 0.5
    assert np.nanmean(crops[BANDS.index("B11")] > crops[BANDS.index("B8")]) < 0.15  # field edges, farm roads


def test_crop_ndvi_changes_through_the_season(scene):
    _, paths = scene
    lon, lat = _point("hangzhou_crops")
    ndvi = [np.nanmean(_ndvi(_window(_file(paths, "hangzhou", d), lon, lat, 50))) for d in DATES]
    assert ndvi[2] - ndvi[0] > 0.15
    # fields differ from each other: some green up a lot more than others
    june = _ndvi(_window(_file(paths, "hangzhou", DATES[0]), lon, lat, 50))
    aug = _ndvi(_window(_file(paths, "hangzhou", DATES[2]), lon, lat, 50))
    gain = (aug - june)[np.isfinite(aug - june)]
    assert np.percentile(gain, 90) - np.percentile(gain, 10) > 0.2


@pytest.mark.parametrize("name, lon, lat", SAMPLE_POINTS)
def test_sample_points_fetch_through_local_provider(scene, name, lon, lat):
    out, _ = scene
    provider = LocalProvider(out)
    grid = grid_for(PointBuffer(lon, lat, 500.0), 10.0)
    sensor = SensorSpec(COLLECTION, ("B4", "B3", "B2", "B8"), 10.0)
    provider.check(sensor)
    r = provider.fetch(FetchRequest(grid, SUMMER, sensor))
    assert r.shape == (1, 4, 100, 100) and r.valid_fraction > 0.95
    site = name.split("_")[0]
    assert all(site in s["path"] for s in r.meta["scenes"]) and len(r.meta["scenes"]) == 3
    assert r.times == (dt.datetime(2022, 7, 20, 12),)  # middle of Jun 15 .. Aug 25

    frames = provider.fetch(FetchRequest(grid, SUMMER, SensorSpec(COLLECTION, ("B8",), 10.0, composite="none")))
    assert tuple(t.date() for t in frames.times) == DATES
    assert frames.valid[0].all() and frames.valid[2].all()
