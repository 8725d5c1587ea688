"""The local provider against small GeoTIFFs written here (and the shared Landsat scene when present)."""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from rs_embed_core.errors import DataNotFoundError, ProviderError, SpecError, UnknownBandError
from rs_embed_core.grid import GridSpec, grid_for
from rs_embed_core.providers import FetchRequest, Provider
from rs_embed_core.providers.local import LocalProvider, date_from_name
from rs_embed_core.specs import PointBuffer, SensorSpec, TemporalSpec

LANDSAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "landsat7_rgb_byte.tif"
MINE = "MY/OWN_DATA"  # a collection the core does not know: bands are checked by the provider
S2 = "COPERNICUS/S2_SR_HARMONIZED"
LON, LAT = 121.5, 31.2
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")


def write_tif(path, data, *, crs="EPSG:32651", transform, nodata=None, descriptions=None, tags=None,
              mask=None, alpha=None, dtype=None):
    data = np.asarray(data)
    count = data.shape[0] + (alpha is not None)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=count,
                   dtype=dtype or data.dtype.name, crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(profile["dtype"]), list(range(1, data.shape[0] + 1)))
        if alpha is not None:
            from rasterio.enums import ColorInterp

            dst.write(alpha.astype(profile["dtype"]), count)
            dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (count - 2) + [ColorInterp.alpha]
        for i, d in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
        if mask is not None:
            dst.write_mask(mask)
    return Path(path)


def roi_grid(buffer_m=200.0) -> GridSpec:
    return grid_for(PointBuffer(LON, LAT, buffer_m), 10.0)


def aligned(grid: GridSpec, margin: int = 10):
    """Transform and shape of a 10 m UTM raster on the grid's lattice, `margin` pixels larger each side."""
    t = Affine(10.0, 0.0, grid.x0 - margin * 10.0, 0.0, -10.0, grid.y0 + margin * 10.0)
    return t, (grid.height + 2 * margin, grid.width + 2 * margin)


def request(grid, bands, *, composite="median", window=SUMMER, collection=MINE, fill=0.0):
    return FetchRequest(grid, window, SensorSpec(collection, bands, 10.0, composite=composite, fill_value=fill))


@pytest.fixture
def utm_scene(tmp_path):
    """A 3-band uint16 UTM file on the ROI's lattice, with band descriptions and a date in its name."""
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    data = np.random.default_rng(1).integers(1, 10000, size=(3, h, w)).astype(np.uint16)
    path = write_tif(tmp_path / "scene_2022-06-15.tif", data, transform=t, nodata=0, descriptions=["B2", "B3", "B4"])
    return grid, data, path


# ---------------------------------------------------------------- pixels


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic"])
def test_aligned_read_equals_source(utm_scene, resampling):
    grid, data, path = utm_scene
    r = LocalProvider(path, resampling=resampling).fetch(request(grid, ("B4", "B2")))
    assert r.data.dtype == np.float32 and r.shape == (1, 2, grid.height, grid.width)
    assert r.bands == ("B4", "B2") and r.grid == grid
    src = data[:, 10:10 + grid.height, 10:10 + grid.width].astype(np.float32)
    np.testing.assert_array_equal(r.data[0], src[[2, 0]])
    assert r.valid.all()
    assert r.times == (dt.datetime(2022, 6, 15),)


def test_provider_protocol_and_registration():
    from rs_embed_core.plugins import BUILTINS
    from rs_embed_core.providers import local

    got = {}
    local.register_providers(register=lambda name, factory: got.setdefault(name, factory))
    assert got == {"local": LocalProvider} and local.__name__ in BUILTINS
    p = LocalProvider("/nowhere")  # paths are resolved on use, not at construction
    assert isinstance(p, Provider) and p.name == "local" and p.max_concurrency == 4


def test_reprojected_read_from_wgs84_is_close(tmp_path):
    """A linear lon/lat ramp stored in EPSG:4326, read on the UTM grid, matches the ramp at the pixel centres."""
    grid = roi_grid(300.0)
    res = 2e-5  # ~2 m
    west, north = LON - 0.006, LAT + 0.006
    n = int(0.012 / res)
    lat_c = north - (np.arange(n) + 0.5) * res
    lon_c = west + (np.arange(n) + 0.5) * res

    def ramp(lon, lat):
        return 1000.0 + 50000.0 * (lon - west) + 80000.0 * (north - lat)

    field = ramp(lon_c[None, :], lat_c[:, None]).astype(np.float32)[None]
    path = write_tif(tmp_path / "wgs84.tif", field, crs="EPSG:4326", transform=Affine(res, 0, west, 0, -res, north))

    r = LocalProvider(path).fetch(request(grid, ("1",)))
    xs, ys = np.meshgrid(grid.x_coords(), grid.y_coords())
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    expected = ramp(lon, lat)
    assert r.valid.all()
    # bilinear is exact on a ramp up to the warper's approximation; one source pixel moves it by ~1.6
    assert np.abs(r.data[0, 0] - expected).max() < 0.2

    near = LocalProvider(path, resampling="nearest").fetch(request(grid, ("1",)))
    with rasterio.open(path) as src:
        direct = np.array([v[0] for v in src.sample(zip(lon.ravel(), lat.ravel()))]).reshape(lon.shape)
    assert (near.data[0, 0] == direct).mean() > 0.99


def test_nodata_internal_mask_alpha_and_outside_are_invalid(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    rng = np.random.default_rng(2)
    base = rng.integers(1, 1000, size=(2, h, w)).astype(np.uint16)
    holes = np.zeros((h, w), bool)
    holes[15:20, 12:30] = True  # grid rows 5..9, cols 2..19

    nod = base.copy()
    nod[:, holes] = 0
    mask = np.where(holes, 0, 255).astype(np.uint8)
    paths = [
        write_tif(tmp_path / "a_nodata.tif", nod, transform=t, nodata=0),
        write_tif(tmp_path / "b_mask.tif", base, transform=t, mask=mask),
        write_tif(tmp_path / "c_alpha.tif", base, transform=t, alpha=mask),
    ]
    for path in paths:
        r = LocalProvider(path).fetch(request(grid, ("1", "2"), fill=-7.0))
        want = ~holes[10:10 + grid.height, 10:10 + grid.width]
        np.testing.assert_array_equal(r.valid[0], want, err_msg=path.name)
        assert (r.data[0][:, ~want] == -7.0).all()
        np.testing.assert_array_equal(r.data[0][:, want], base[:, 10:10 + grid.height, 10:10 + grid.width][:, want])
        assert r.meta["valid_fraction"] == pytest.approx(want.mean())

    # a file covering only the western half of the ROI: the eastern half is outside the source
    half = write_tif(tmp_path / "west.tif", base[:, :, : 10 + grid.width // 2], transform=t)
    r = LocalProvider(half).fetch(request(grid, ("1",)))
    assert r.valid[0, :, : grid.width // 2].all() and not r.valid[0, :, grid.width // 2:].any()


def test_float_nan_nodata_is_invalid(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    data = np.full((1, h, w), 0.25, np.float32)
    data[0, 10:15, 10:15] = np.nan
    path = write_tif(tmp_path / "f.tif", data, transform=t, nodata=float("nan"))
    r = LocalProvider(path).fetch(request(grid, ("1",)))
    assert (~r.valid[0]).sum() == 25 and np.isfinite(r.data).all()
    assert (r.data[0, 0][r.valid[0]] == np.float32(0.25)).all()


# ---------------------------------------------------------------- compositing


@pytest.fixture
def stack(tmp_path):
    """Three dated files of constant values 10, 20, 60 (band 2: x2); file k is nodata on its own strip."""
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    paths = []
    for k, (day, v) in enumerate([("2022-06-01", 10), ("2022-06-10", 20), ("2022-06-20", 60)]):
        d = np.stack([np.full((h, w), v), np.full((h, w), 2 * v)]).astype(np.int16)
        d[:, 10:20] = -1  # grid rows 0..9 are invalid everywhere
        d[:, 20 + 5 * k: 25 + 5 * k] = -1  # rows 10+5k .. 14+5k are invalid in file k only
        paths.append(write_tif(tmp_path / f"s_{day}.tif", d, transform=t, nodata=-1, descriptions=["a", "b"]))
    return grid, paths


def test_median_composite(stack):
    grid, paths = stack
    r = LocalProvider(paths).fetch(request(grid, ("a", "b")))
    assert r.shape[0] == 1
    assert not r.valid[0, :10].any() and (r.data[0, :, :10] == 0.0).all()
    assert r.valid[0, 10:].all()
    np.testing.assert_array_equal(r.data[0, 0, 10:15], 40.0)  # file 0 missing: median(20, 60)
    np.testing.assert_array_equal(r.data[0, 0, 15:20], 35.0)  # file 1 missing: median(10, 60)
    np.testing.assert_array_equal(r.data[0, 0, 20:25], 15.0)  # file 2 missing: median(10, 20)
    np.testing.assert_array_equal(r.data[0, 0, 25:], 20.0)
    np.testing.assert_array_equal(r.data[0, 1, 25:], 40.0)
    assert r.times == (dt.datetime(2022, 6, 10, 12),)  # middle of Jun 1 .. Jun 20
    assert r.meta["provider"] == "local" and r.meta["composite"] == "median"
    assert [s["date"] for s in r.meta["scenes"]] == ["2022-06-01", "2022-06-10", "2022-06-20"]
    assert [s["path"] for s in r.meta["scenes"]] == [os.path.abspath(p) for p in paths]


def test_mosaic_composite_most_recent_wins(stack):
    grid, paths = stack
    r = LocalProvider(list(reversed(paths))).fetch(request(grid, ("a",), composite="mosaic"))
    np.testing.assert_array_equal(r.data[0, 0, 10:20], 60.0)
    np.testing.assert_array_equal(r.data[0, 0, 20:25], 20.0)  # newest file missing there
    np.testing.assert_array_equal(r.data[0, 0, 25:], 60.0)
    assert not r.valid[0, :10].any() and r.valid[0, 10:].all()


def test_no_composite_gives_frames_by_date(stack):
    grid, paths = stack
    r = LocalProvider(list(reversed(paths))).fetch(request(grid, ("b",), composite="none", fill=-5.0))
    assert r.times == (dt.datetime(2022, 6, 1), dt.datetime(2022, 6, 10), dt.datetime(2022, 6, 20))
    rows = np.arange(grid.height)
    for k, v in enumerate((10, 20, 60)):
        ok = (rows >= 10) & ~((rows >= 10 + 5 * k) & (rows < 15 + 5 * k))
        np.testing.assert_array_equal(r.valid[k], np.broadcast_to(ok[:, None], r.valid[k].shape))
        assert (r.data[k, 0, ok] == 2 * v).all() and (r.data[k, 0, ~ok] == -5.0).all()


def test_window_is_half_open_and_undated_files_always_count(stack, tmp_path):
    grid, paths = stack
    window = TemporalSpec.range("2022-06-05", "2022-06-20")  # excludes Jun 1 and (half-open) Jun 20
    r = LocalProvider(paths).fetch(request(grid, ("a",), window=window, composite="none"))
    assert r.times == (dt.datetime(2022, 6, 10),)

    t, (h, w) = aligned(grid)
    undated = write_tif(tmp_path / "undated.tif", np.full((2, h, w), 7, np.int16), transform=t,
                        descriptions=["a", "b"])
    r = LocalProvider([*paths, undated]).fetch(request(grid, ("a",), window=window, composite="none"))
    assert r.times == (dt.datetime(2022, 6, 10), None)  # undated last
    assert (r.data[1, 0] == 7).all()
    assert r.meta["undated"] == [os.path.abspath(undated)]
    assert [s["undated"] for s in r.meta["scenes"]] == [True, False]

    only_undated = LocalProvider(undated).fetch(request(grid, ("a",), window=TemporalSpec.year(1999)))
    assert only_undated.times == (None,) and only_undated.valid.all()


# ---------------------------------------------------------------- bands and dates


def test_band_map_by_index_and_description(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    data = np.stack([np.full((h, w), v, np.uint16) for v in (1, 2, 3)])
    plain = write_tif(tmp_path / "plain.tif", data, transform=t)
    named = write_tif(tmp_path / "named.tif", data, transform=t, descriptions=["blue", "green", "red"])

    r = LocalProvider(plain).fetch(request(grid, ("3", "1")))  # positional names
    assert r.data[0, :, 0, 0].tolist() == [3.0, 1.0]
    r = LocalProvider(plain, band_map={"red": 3, "blue": 1}).fetch(request(grid, ("red", "blue")))
    assert r.data[0, :, 0, 0].tolist() == [3.0, 1.0]
    r = LocalProvider(named, band_map={"R": "red", "G": "green"}).fetch(request(grid, ("G", "R")))
    assert r.data[0, :, 0, 0].tolist() == [2.0, 3.0]
    r = LocalProvider(named).fetch(request(grid, ("red",)))
    assert r.data[0, :, 0, 0].tolist() == [3.0]

    with pytest.raises(UnknownBandError) as e:
        LocalProvider(plain).check(SensorSpec(MINE, ("red",), 10.0))
    msg = str(e.value)
    assert "'red'" in msg and "'1', '2', '3'" in msg and "band_map" in msg
    with pytest.raises(UnknownBandError, match=r"band_map\['nir'\]=5 but plain.tif has 3 band"):
        LocalProvider(plain, band_map={"red": 3, "nir": 5}).check(SensorSpec(MINE, ("nir",), 10.0))
    with pytest.raises(UnknownBandError, match=r"'swir'.*descriptions \['blue', 'green', 'red'\]"):
        LocalProvider(named, band_map={"x": "swir"}).check(SensorSpec(MINE, ("x",), 10.0))
    with pytest.raises(SpecError, match="band_map"):
        LocalProvider(plain, band_map={"red": 0})


def test_unknown_band_names_asked_and_available(utm_scene):
    _, _, path = utm_scene
    with pytest.raises(UnknownBandError) as e:
        LocalProvider(path).check(SensorSpec(S2, ("B4", "B8"), 10.0))
    msg = str(e.value)
    assert "['B8']" in msg and "'B2', 'B3', 'B4'" in msg and S2 in msg
    LocalProvider(path).check(SensorSpec(S2, ("B4", "B2"), 10.0))  # fine


@pytest.mark.parametrize(
    "name, when",
    [
        ("S2A_2022-06-15_T51RUQ.tif", dt.datetime(2022, 6, 15)),
        ("scene_2022_07_20.tif", dt.datetime(2022, 7, 20)),
        ("LC08_L2SP_118038_20220825_20220830_02_T1.tif", dt.datetime(2022, 8, 25)),
        ("tile_123456789.tif", None),
        ("x_2022-13-01.tif", None),
        ("mixed_2022-0615.tif", None),
    ],
)
def test_date_from_name(name, when):
    assert date_from_name(name) == when


def test_dates_from_mapping_and_tags(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    one = np.ones((1, h, w), np.uint8)
    a = write_tif(tmp_path / "a.tif", one, transform=t, tags={"TIFFTAG_DATETIME": "2022:07:01 10:30:00"})
    b = write_tif(tmp_path / "b.tif", one, transform=t, tags={"ACQUISITION_DATE": "2022-07-05"})
    c = write_tif(tmp_path / "c_2022-07-09.tif", one, transform=t, tags={"ACQUISITION_DATE": "2021-01-01"})
    d = write_tif(tmp_path / "d_2022-07-09.tif", one, transform=t)
    p = LocalProvider([a, b, c, d], dates={"d_2022-07-09.tif": "2022-07-13", str(a): dt.date(2022, 7, 3)})
    r = p.fetch(request(grid, ("1",), composite="none"))
    assert r.times == (dt.datetime(2022, 7, 3), dt.datetime(2022, 7, 5), dt.datetime(2022, 7, 9),
                       dt.datetime(2022, 7, 13))
    sources = {Path(s["path"]).name: s["date_source"] for s in r.meta["scenes"]}
    assert sources == {"a.tif": "dates", "b.tif": "tag", "c_2022-07-09.tif": "name", "d_2022-07-09.tif": "dates"}
    r = LocalProvider(a).fetch(request(grid, ("1",), composite="none"))
    assert r.times == (dt.datetime(2022, 7, 1, 10, 30),)
    with pytest.raises(SpecError, match="dates"):
        LocalProvider(a, dates={"a.tif": "July"})


def test_same_day_tiles_form_one_frame(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    west = write_tif(tmp_path / "w_2022-06-15.tif", np.full((1, h, w // 2), 1, np.uint8), transform=t, nodata=0)
    east_t = t @ Affine.translation(w // 2, 0)
    east = write_tif(tmp_path / "e_2022-06-15.tif", np.full((1, h, w - w // 2), 2, np.uint8), transform=east_t,
                     nodata=0)
    r = LocalProvider([west, east]).fetch(request(grid, ("1",), composite="none"))
    assert r.shape[0] == 1 and r.valid.all()
    assert set(np.unique(r.data)) == {1.0, 2.0}


# ---------------------------------------------------------------- inputs and errors


def test_folder_glob_and_list_inputs(utm_scene, tmp_path):
    grid, _, path = utm_scene
    other = write_tif(tmp_path / "scene_2022-07-15.tiff", np.ones((3, 5, 5), np.uint16),
                      transform=Affine(10, 0, 0, 0, -10, 0), descriptions=["B2", "B3", "B4"])
    (tmp_path / "notes.txt").write_text("not a raster")
    sub = tmp_path / "sub"
    sub.mkdir()
    write_tif(sub / "deep_2022-06-20.tif", np.ones((3, 5, 5), np.uint16), transform=Affine(10, 0, 0, 0, -10, 0))
    req = request(grid, ("B2",), composite="none")

    a, b = os.path.abspath(path), os.path.abspath(other)
    assert LocalProvider(tmp_path)._files() == [a, b]  # sorted, rasters only, not recursive
    assert LocalProvider(str(tmp_path / "scene_*.tif*"))._files() == [a, b]
    assert LocalProvider([other, path, path])._files() == [b, a]
    # the July file is far away (other CRS origin): only the June file serves this ROI
    r = LocalProvider(tmp_path).fetch(req)
    assert r.times == (dt.datetime(2022, 6, 15),)


def test_missing_paths_raise_data_not_found(tmp_path):
    sensor = SensorSpec(MINE, ("1",), 10.0)
    missing = tmp_path / "nope" / "x.tif"
    with pytest.raises(DataNotFoundError, match=re.escape(str(missing))):
        LocalProvider(missing).check(sensor)
    with pytest.raises(DataNotFoundError, match="holds no .tif/.tiff/.vrt"):
        LocalProvider(tmp_path).check(sensor)
    with pytest.raises(DataNotFoundError, match="matches no file"):
        LocalProvider(str(tmp_path / "*.tif")).check(sensor)
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    with pytest.raises(ProviderError, match="bad.tif"):
        LocalProvider(bad).check(sensor)


def test_unconfigured_provider_explains_how(monkeypatch, utm_scene):
    monkeypatch.delenv("RS_EMBED_LOCAL_PATH", raising=False)
    with pytest.raises(SpecError) as e:
        LocalProvider()
    msg = str(e.value)
    assert "LocalProvider(" in msg and "local:" in msg and "RS_EMBED_LOCAL_PATH" in msg

    _, _, path = utm_scene
    monkeypatch.setenv("RS_EMBED_LOCAL_PATH", str(path.parent))
    assert LocalProvider()._files() == [os.path.abspath(path)]


def test_options_are_validated():
    with pytest.raises(SpecError, match="resampling"):
        LocalProvider("x.tif", resampling="lanczos3")
    with pytest.raises(SpecError, match="max_concurrency"):
        LocalProvider("x.tif", max_concurrency=0)
    assert LocalProvider("x.tif", max_concurrency=2).max_concurrency == 2


def test_collection_restrictions(utm_scene, tmp_path):
    grid, _, path = utm_scene
    s2 = SensorSpec(S2, ("B2",), 10.0)
    with pytest.raises(SpecError) as e:
        LocalProvider(path, collection="LANDSAT/LC08/C02/T1_L2").check(s2)
    assert "LANDSAT/LC08/C02/T1_L2" in str(e.value) and S2 in str(e.value)
    LocalProvider(path, collection=S2).check(s2)
    LocalProvider(path).check(s2)  # untagged, no collection: serves whatever is asked

    t, (h, w) = aligned(grid)
    tagged = write_tif(tmp_path / "tagged_2022-06-15.tif", np.ones((1, h, w), np.uint16), transform=t,
                       descriptions=["B2"], tags={"RS_EMBED_COLLECTION": "MY/OTHER"})
    with pytest.raises(SpecError, match="tagged RS_EMBED_COLLECTION=\\['MY/OTHER'\\]"):
        LocalProvider(tagged).check(s2)
    r = LocalProvider(tagged).fetch(request(grid, ("B2",), collection="MY/OTHER"))
    assert r.valid.all()
    # mixed: the tagged file serves only its collection, the untagged one anything
    r = LocalProvider([tagged, path]).fetch(request(grid, ("B2",), collection=S2, composite="none"))
    assert [Path(s["path"]).name for s in r.meta["scenes"]] == [path.name]


def test_no_scene_in_window_lists_dates(stack):
    grid, paths = stack
    with pytest.raises(DataNotFoundError) as e:
        LocalProvider(paths).fetch(request(grid, ("a",), window=TemporalSpec.year(2021)))
    msg = str(e.value)
    assert "2021-01-01" in msg and "2022-06-01, 2022-06-10, 2022-06-20" in msg


def test_files_in_far_away_crs_are_skipped(utm_scene, tmp_path):
    """A file on the other side of the world (UTM 18N) next to the Shanghai one is skipped."""
    grid, data, path = utm_scene
    far = write_tif(tmp_path / "bahamas_2022-06-20.tif", np.ones((3, 50, 50), np.uint16), crs="EPSG:32618",
                    transform=Affine(30, 0, 200000, 0, -30, 2750000), descriptions=["B2", "B3", "B4"])
    r = LocalProvider([far, path]).fetch(request(grid, ("B2",), composite="none"))
    assert [Path(s["path"]).name for s in r.meta["scenes"]] == [path.name]
    np.testing.assert_array_equal(r.data[0, 0], data[0, 10:10 + grid.height, 10:10 + grid.width])


def test_roi_outside_the_raster(utm_scene):
    _, _, path = utm_scene
    far = grid_for(PointBuffer(121.0, 31.0, 200.0), 10.0)
    with pytest.raises(DataNotFoundError) as e:
        LocalProvider(path).fetch(request(far, ("B2",)))
    msg = str(e.value)
    assert "ROI outside the raster" in msg and "121.0" in msg and "31.0" in msg and path.name in msg
    assert "121.49" in msg  # the file's own lon/lat bounds


def test_concurrent_fetches_agree(stack):
    grid, paths = stack
    p = LocalProvider(paths)
    reqs = [request(grid.window(k, k, 20, 20), ("a", "b")) for k in range(8)]
    expected = [p.fetch(r).data for r in reqs]
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def run(i):
        try:
            got[i] = p.fetch(reqs[i % 8]).data
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for i, data in got.items():
        np.testing.assert_array_equal(data, expected[i % 8])


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not LANDSAT.exists(), reason="shared Landsat scene not present")
def test_landsat_point_matches_direct_read():
    with rasterio.open(LANDSAT) as src:
        arr = src.read()
        cx, cy = src.xy(src.height // 2, src.width // 2)
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
        grid = grid_for(PointBuffer(lon, lat, 3000.0), 10.0)
        assert grid.crs == src.crs.to_string()
        xs, ys = np.meshgrid(grid.x_coords(), grid.y_coords())
        rows, cols = rasterio.transform.rowcol(src.transform, xs.ravel(), ys.ravel())
    direct = arr[:, np.asarray(rows), np.asarray(cols)].reshape(3, *xs.shape).astype(np.float32)

    p = LocalProvider(LANDSAT, band_map={"red": 1, "green": 2, "blue": 3}, resampling="nearest")
    window = TemporalSpec.range("2000-01-01", "2001-01-01")
    r = p.fetch(request(grid, ("red", "green", "blue"), window=window, collection="LANDSAT/LE07/RGB"))
    assert r.shape == (1, 3, 600, 600)
    assert (r.data[0] == direct).all(axis=0).mean() > 0.995
    assert (r.valid[0] == (direct != 0).any(axis=0)).mean() > 0.995
    assert r.meta["undated"] == [str(LANDSAT)]

    # bilinear: against a plain bilinear interpolation between the source pixel centres
    with rasterio.open(LANDSAT) as src:
        fc, fr = ~src.transform @ (xs, ys)
    fc, fr = fc - 0.5, fr - 0.5
    c0, r0 = np.floor(fc).astype(int), np.floor(fr).astype(int)
    wc, wr = fc - c0, fr - r0
    red = arr[0].astype(np.float64)
    corners = [red[r0, c0], red[r0, c0 + 1], red[r0 + 1, c0], red[r0 + 1, c0 + 1]]
    expected = (corners[0] * (1 - wc) * (1 - wr) + corners[1] * wc * (1 - wr)
                + corners[2] * (1 - wc) * wr + corners[3] * wc * wr)
    smooth = LocalProvider(LANDSAT, band_map={"red": 1, "green": 2, "blue": 3}).fetch(
        request(grid, ("red",), window=window, collection="LANDSAT/LE07/RGB"))
    clear = np.all([c != 0 for c in corners], axis=0)
    assert smooth.valid[0][clear].all()
    diff = np.abs(smooth.data[0, 0] - expected)[clear]
    assert diff.max() < 1e-3


# ---------------------------------------------------------------- per-band validity, nodata=, fresh pixels


def test_per_band_fill_collars_and_nodata_override(tmp_path):
    """L1-style files: no nodata tag, fill 0 in collars of different widths per band."""
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    data = np.random.default_rng(5).integers(100, 1000, size=(2, h, w)).astype(np.uint16)
    data[0, :, :14] = 0  # band 1 collar: 4 grid columns inside the ROI
    data[1, :, :16] = 0  # band 2 collar: six grid columns inside the ROI
    path = write_tif(tmp_path / "l1.tif", data, transform=t)  # no nodata tag
    untagged = LocalProvider(path).fetch(request(grid, ("1", "2")))
    assert untagged.valid.all()  # without help, fill counts as valid (the file says nothing)
    fixed = LocalProvider(path, nodata=0).fetch(request(grid, ("1", "2")))
    assert not fixed.valid[0, :, :6].any() and fixed.valid[0, :, 6:].all()  # the wider collar wins
    only_first = LocalProvider(path, nodata={"1": 0}).fetch(request(grid, ("1",)))
    assert not only_first.valid[0, :, :4].any() and only_first.valid[0, :, 4:].all()
    with pytest.raises(SpecError):
        LocalProvider(path, nodata="zero")


def test_source_token_changes_when_a_file_is_rewritten(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    path = write_tif(tmp_path / "s.tif", np.ones((1, h, w), np.uint16), transform=t)
    prov = LocalProvider(path)
    req = request(grid, ("1",))
    before = prov.source_token(req)
    assert prov.source_token(req) == before
    write_tif(path, np.full((1, h, w), 2, np.uint16), transform=t)
    assert prov.source_token(req) != before
    from rs_embed_core.fetching import fetch_one, raster_cache

    raster_cache.clear()
    write_tif(path, np.full((1, h, w), 3, np.uint16), transform=t)
    first, _ = fetch_one(prov, req)
    write_tif(path, np.full((1, h, w), 4, np.uint16), transform=t)
    second, _ = fetch_one(prov, req)
    assert first.data.max() == 3 and second.data.max() == 4  # never the stale pixels


def test_a_vrt_pointing_at_a_silent_host_fails_instead_of_hanging(tmp_path, monkeypatch):
    """A loopback server that accepts connections and never answers: GDAL's HTTP timeout ends the read."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # accept, never answer
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    vrt = tmp_path / "remote.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="{w}" rasterYSize="{h}">
  <SRS>{grid.crs}</SRS>
  <GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>
  <VRTRasterBand dataType="UInt16" band="1">
    <SimpleSource><SourceFilename>/vsicurl/http://127.0.0.1:{port}/scene.tif</SourceFilename>
      <SourceBand>1</SourceBand></SimpleSource>
  </VRTRasterBand>
</VRTDataset>""")
    from rs_embed_core.providers import reading

    for k in ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT"):
        monkeypatch.delenv(k, raising=False)  # nothing set by the user: our per-read default applies
        monkeypatch.setitem(reading._ALWAYS, k, "1")  # (30 s by default; 1 s keeps the test short)
    start = time.monotonic()
    try:
        with pytest.raises(ProviderError):
            LocalProvider(vrt).fetch(request(grid, ("1",)))
    finally:
        stop.set()
        for c in held:
            c.close()
        server.close()
    assert time.monotonic() - start < 60


# ---------------------------------------------------------------- one file per band


def test_per_band_files_are_grouped_into_scenes(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    rng = np.random.default_rng(9)
    bands = {b: rng.integers(1, 10000, size=(1, h, w)).astype(np.uint16) for b in ("SR_B2", "SR_B3", "SR_B4")}
    for b, arr in bands.items():  # Landsat Collection 2 naming, two dates
        write_tif(tmp_path / f"LC08_L2SP_118038_20220712_20220720_02_T1_{b}.TIF", arr, transform=t, nodata=0)
        write_tif(tmp_path / f"LC08_L2SP_118038_20220813_20220820_02_T1_{b}.TIF", arr // 2, transform=t, nodata=0)
    prov = LocalProvider(tmp_path)
    r = prov.fetch(request(grid, ("SR_B4", "SR_B2"), composite="none"))
    assert r.shape[:2] == (2, 2) and [t.date().isoformat() for t in r.times] == ["2022-07-12", "2022-08-13"]
    inside = (slice(10, 10 + grid.height), slice(10, 10 + grid.width))
    np.testing.assert_array_equal(r.data[0, 0], bands["SR_B4"][0][inside])
    np.testing.assert_array_equal(r.data[0, 1], bands["SR_B2"][0][inside])
    np.testing.assert_array_equal(r.data[1, 0], (bands["SR_B4"] // 2)[0][inside])


def test_sentinel2_band_files_take_the_finest_resolution(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    fine = np.full((1, h, w), 100, np.uint16)
    coarse = np.full((1, h, w), 999, np.uint16)
    write_tif(tmp_path / "T51RUQ_20220715T023551_B04_10m.tif", fine, transform=t)
    write_tif(tmp_path / "T51RUQ_20220715T023551_B04_20m.tif", coarse, transform=t)
    write_tif(tmp_path / "T51RUQ_20220715T023551_B8A_20m.tif", coarse, transform=t)
    r = LocalProvider(tmp_path).fetch(request(grid, ("B4", "B8A")))
    assert r.data[0, 0].max() == 100 and r.data[0, 1].max() == 999


def test_unnamed_single_band_files_of_one_scene_are_not_composited(tmp_path):
    grid = roi_grid()
    t, (h, w) = aligned(grid)
    for k in range(3):  # red, green, blue as separate files without band names: each offers band "1"
        write_tif(tmp_path / f"scene_2022-07-01_part{k}.tif", np.full((1, h, w), k + 1, np.uint16), transform=t)
    with pytest.raises(SpecError, match="different bands of one scene"):
        LocalProvider(tmp_path).fetch(request(grid, ("1",)))
    named = LocalProvider(tmp_path, band_pattern=r"_(?P<band>part\d)\.tif$")
    r = named.fetch(request(grid, ("part2", "part0")))
    assert r.data[0, 0].max() == 3 and r.data[0, 1].max() == 1
    with pytest.raises(SpecError, match="named group"):
        LocalProvider(tmp_path, band_pattern=r"_part\d")


def test_roi_across_the_antimeridian_reads_files_on_both_sides(tmp_path):
    from affine import Affine

    res = 0.0005  # ~55 m
    n = int(1 / res)
    east = write_tif(tmp_path / "east_2022-07-01.tif", np.full((1, 200, n), 10, np.uint16), crs="EPSG:4326",
                     transform=Affine(res, 0, 179.0, 0, -res, 0.05), nodata=0)
    west = write_tif(tmp_path / "west_2022-07-01.tif", np.full((1, 200, n), 20, np.uint16), crs="EPSG:4326",
                     transform=Affine(res, 0, -180.0, 0, -res, 0.05), nodata=0)
    grid = grid_for(PointBuffer(179.99, 0.0, 2000), 50.0)
    r = LocalProvider([east, west]).fetch(request(grid, ("1",), composite="mosaic"))
    assert r.valid.all()  # not "outside the raster": both sides serve it
    assert set(np.unique(r.data)) == {10.0, 20.0}
    # the ROI spans 179.972 .. 180.008: east file on the left, the west file past 180 on the right
    assert (r.data[0, 0][:, : grid.width // 2] == 10).all() and (r.data[0, 0][:, -grid.width // 10:] == 20).all()


def test_a_dates_key_that_matches_no_file_is_an_error(utm_scene):
    grid, _, path = utm_scene
    ok = LocalProvider(path, dates={path.name: "2022-07-01"})
    assert ok.fetch(request(grid, ("B2",))).times[0].date().isoformat() == "2022-07-01"
    typo = LocalProvider(path, dates={"scene_2022-06-51.tif": "2022-07-01"})
    with pytest.raises(SpecError, match="match no file"):
        typo.check(SensorSpec(MINE, ("B2",), 10.0))


@pytest.mark.parametrize("junk", [b"", b"not a tiff at all"])
def test_an_unreadable_file_in_a_folder_is_skipped_with_one_warning(utm_scene, tmp_path, junk):
    grid, data, path = utm_scene
    (tmp_path / "broken.tif").write_bytes(junk)
    prov = LocalProvider(tmp_path)
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable file\(s\): broken.tif"):
        r = prov.fetch(request(grid, ("B2",)))
    np.testing.assert_array_equal(r.data[0, 0], data[0, 10:10 + grid.height, 10:10 + grid.width])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # named once, not on every call
        prov.fetch(request(grid, ("B2",)))
    path.unlink()
    with pytest.raises(ProviderError, match="none of its 1 file"):
        LocalProvider(tmp_path).fetch(request(grid, ("B2",)))


@pytest.mark.parametrize("bad", [123, 4.5, [1, 2], b"/tmp", {"a": 1}])
def test_paths_of_the_wrong_type_are_a_spec_error(bad):
    with pytest.raises(SpecError, match="takes a path"):
        LocalProvider(bad)
