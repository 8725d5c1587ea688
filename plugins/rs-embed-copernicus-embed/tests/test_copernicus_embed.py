"""copernicus through its own provider on a synthetic file of the real layout in an offline Hub cache:
windowed reads onto the request's UTM grid, sub-cell ROIs, the antimeridian, coverage, years, export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import rs_embed_copernicus_embed as ce
from rs_embed import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec, export_batch, get_embedding
from rs_embed_core.errors import DataNotFoundError, SpecError, WeightsError
from rs_embed_core.grid import grid_for
from rs_embed_core.runner import resolve_provider
from rs_embed_core.testing import FakeProvider

Y2021 = TemporalSpec.year(2021)
ORIGIN, WIDTH = (-180.125, 90.125), 1440  # the real map's top-left corner and width (conftest writes that layout)


def cell(lon: float, lat: float) -> tuple[int, int]:
    return int(np.floor((ORIGIN[1] - lat) / 0.25)), int(np.floor((lon - ORIGIN[0]) / 0.25)) % WIDTH


def centre_of(row: int, col: int) -> tuple[float, float]:
    return ORIGIN[0] + 0.25 * col + 0.125, ORIGIN[1] - 0.25 * row - 0.125


def vector_at(patches, lon: float, lat: float) -> np.ndarray:
    """The synthetic map's vector of the cell holding (lon, lat) (zeros where nothing was written)."""
    r, c = cell(lon, lat)
    for r0, c0, values in patches.values():
        if r0 <= r < r0 + values.shape[1] and c0 <= c < c0 + values.shape[2]:
            return values[:, r - r0, c - c0]
    return np.zeros(ce.DIM, np.float32)


def test_an_roi_inside_one_cell_is_that_cells_vector_with_a_note(provider, embed_map):
    _, patches = embed_map
    r0, c0, values = patches["shanghai"]
    lon, lat = centre_of(r0 + 3, c0 + 5)
    emb = get_embedding("copernicus", PointBuffer(lon, lat, 2000), Y2021, backend=provider)
    np.testing.assert_array_equal(emb.data, values[:, 3, 5])
    assert "smaller than one 0.25 degree cell" in emb.meta["source"]["note"]
    assert emb.meta["source"]["native_cells"] == 1 and emb.meta["source"]["file"]["revision"] == ce.MAP_FILE.revision


def test_pooled_is_the_area_weighted_mean_of_the_cells_as_gdal_resamples_them(provider, embed_map):
    import rasterio
    from rasterio.warp import Resampling, reproject

    path, patches = embed_map
    r0, c0, _ = patches["shanghai"]
    lon, lat = centre_of(r0 + 4, c0 + 4)
    roi = PointBuffer(lon, lat, 30_000)
    emb = get_embedding("copernicus_embed", roi, Y2021, backend=provider)
    grid = grid_for(roi, ce.GSD_M)
    ref = np.zeros((ce.DIM, grid.height, grid.width), np.float32)
    with rasterio.open(path) as src:  # GDAL's own nearest-neighbour warp of the map onto the request grid
        reproject(rasterio.band(src, list(range(1, ce.DIM + 1))), ref, dst_transform=grid.affine(),
                  dst_crs=grid.crs, resampling=Resampling.nearest)
    assert (ref != 0).any(axis=0).all()
    np.testing.assert_allclose(emb.data, ref.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    assert emb.meta["source"]["native_cells"] > 4 and "note" not in emb.meta["source"]


def test_grid_is_georeferenced_on_the_request_utm_grid(provider, embed_map):
    _, patches = embed_map
    r0, c0, _ = patches["shanghai"]
    lon, lat = centre_of(r0 + 4, c0 + 4)
    roi = PointBuffer(lon, lat, 20_000)
    emb = get_embedding("copernicus", roi, Y2021, output=OutputSpec.grid(), backend=provider)
    assert emb.grid == grid_for(roi, ce.GSD_M) and emb.grid.crs == "EPSG:32651"
    assert emb.data.shape == (ce.DIM, emb.grid.height, emb.grid.width)
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(emb.grid.crs, "EPSG:4326", always_xy=True)
    for j, i in [(0, 0), (5, 11), (emb.grid.height - 1, emb.grid.width - 1)]:
        plon, plat = to_lonlat.transform(emb.grid.x_coords()[i], emb.grid.y_coords()[j])
        np.testing.assert_array_equal(emb.data[:, j, i], vector_at(patches, plon, plat))


def test_an_roi_across_the_antimeridian_reads_both_edges_of_the_map(provider, embed_map):
    _, patches = embed_map
    roi = BBox(179.6, -0.4, -179.6, 0.4)
    emb = get_embedding("copernicus", roi, Y2021, output=OutputSpec.grid(), backend=provider)
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(emb.grid.crs, "EPSG:4326", always_xy=True)
    want = np.zeros_like(emb.data)
    for j, y in enumerate(emb.grid.y_coords()):
        for i, x in enumerate(emb.grid.x_coords()):
            want[:, j, i] = vector_at(patches, *to_lonlat.transform(x, y))
    np.testing.assert_array_equal(emb.data, want)
    east = patches["east_edge"][2]
    west = patches["west_edge"][2]
    flat = emb.data.reshape(ce.DIM, -1).T
    assert any((flat == east[:, 5, 3]).all(1)) and any((flat == west[:, 5, 0]).all(1))  # both sides of 180
    assert emb.meta["valid_fraction"] == 1.0


def test_an_roi_without_data_is_a_data_not_found_error_naming_the_coverage(provider):
    with pytest.raises(DataNotFoundError, match="covers the land cells"):
        get_embedding("copernicus", PointBuffer(-30.0, 0.0, 5000), Y2021, backend=provider)


@pytest.mark.parametrize("temporal, match", [
    (TemporalSpec.year(2022), r"no year 2022; available: 2021"),
    (TemporalSpec.range("2020-12-01", "2021-02-01"), r"spans the years 2020-2021"),
])
def test_other_years_are_refused_before_the_file_is_touched(provider, temporal, match):
    with pytest.raises(SpecError, match=match):
        get_embedding("copernicus", PointBuffer(121.5, 31.2, 2000), temporal, backend=provider)
    assert provider._path is None


def test_a_window_inside_2021_selects_2021(provider, embed_map):
    _, patches = embed_map
    lon, lat = centre_of(patches["shanghai"][0] + 1, patches["shanghai"][1] + 1)
    emb = get_embedding("copernicus", PointBuffer(lon, lat, 1000), TemporalSpec.range("2021-06-01", "2021-09-01"),
                        backend=provider)
    assert emb.meta["source"]["year"] == 2021


def test_sensor_and_preprocessing_are_refused(provider):
    with pytest.raises(SpecError, match="takes no sensor="):
        get_embedding("copernicus", PointBuffer(121.5, 31.2, 2000), Y2021, backend=provider,
                      sensor=SensorSpec(ce.COLLECTION, ("E000",), 2500))
    with pytest.raises(SpecError, match="takes no preprocessing="):
        get_embedding("copernicus", PointBuffer(121.5, 31.2, 2000), Y2021, backend=provider,
                      preprocessing=[("clip", {})])
    assert provider._path is None


def test_a_file_that_is_not_the_pinned_one_is_refused(hub, plugin):
    provider = ce.CopernicusEmbedProvider()  # the real pin: the synthetic file's sha256 differs
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        get_embedding("copernicus", PointBuffer(121.5, 31.2, 2000), Y2021, backend=provider)


def test_the_file_is_read_from_the_dataset_cache_of_the_pinned_revision(provider, hub):
    path = provider.path()
    assert f"datasets--torchgeo--copernicus_embed/snapshots/{hub.revision}/embed_map_310k.tif" in path.as_posix()


def test_export_mixes_the_product_with_a_model_reading_it_once_per_roi(hub, plugin, embed_map, tmp_path,
                                                                       monkeypatch):
    _, patches = embed_map
    r0, c0, _ = patches["shanghai"]
    rois = [PointBuffer(*centre_of(r0 + 1, c0 + 1), 1000), PointBuffer(*centre_of(r0 + 6, c0 + 6), 1000)]
    fallback = FakeProvider()
    provider = ce.CopernicusEmbedProvider(fallback, map_file=hub)
    reads = []
    real = provider.fetch_product
    monkeypatch.setattr(provider, "fetch_product", lambda req: reads.append(req) or real(req))
    export_batch(spatials=rois, names=["a", "b"], temporal=TemporalSpec.range("2021-06-01", "2021-09-01"),
                 models=["copernicus", "spectral_stats"], out=str(tmp_path / "x"), layout="per_item",
                 backend=provider)
    assert len(reads) == 2 and fallback.calls == 2
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert "copernicus" in json.dumps(manifest) and "spectral_stats" in json.dumps(manifest)


def test_other_collections_need_a_fallback_backend(hub, plugin, tmp_path):
    alone = ce.CopernicusEmbedProvider(map_file=hub)
    with pytest.raises(SpecError, match="copernicus_embed:gee"):
        alone.check(SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4",), 10))
    chained = resolve_provider(f"copernicus_embed:local:{tmp_path}")
    assert chained.fallback.name == "local"


def test_native_grid_is_the_maps_own_cells_over_the_roi(hub, plugin, embed_map):
    _, patches = embed_map
    r0, c0, values = patches["shanghai"]
    lon, lat = centre_of(r0 + 3, c0 + 2)
    provider = resolve_provider("copernicus_embed:native")
    provider.map_file = hub
    emb = get_embedding("copernicus", PointBuffer(lon, lat, 30_000), Y2021, output=OutputSpec.grid(),
                        backend=provider)
    g = emb.grid
    assert g.crs == "EPSG:4326" and g.res == 0.25
    col0, row0 = round((g.x0 - ORIGIN[0]) / 0.25), round((ORIGIN[1] - g.y0) / 0.25)
    assert (g.x0 - ORIGIN[0]) / 0.25 == col0 and (ORIGIN[1] - g.y0) / 0.25 == row0  # on the map's lattice
    assert (row0, col0) == (r0 + 3 - g.height // 2, c0 + 2 - g.width // 2) and g.width == g.height == 3
    np.testing.assert_array_equal(emb.data, values[:, row0 - r0:row0 - r0 + 3, col0 - c0:col0 - c0 + 3])
    assert emb.meta["source"]["resampling"].startswith("none")


def test_native_grid_across_the_antimeridian_runs_past_180(hub, plugin, embed_map):
    _, patches = embed_map
    provider = ce.CopernicusEmbedProvider(native=True, map_file=hub)
    emb = get_embedding("copernicus", BBox(179.6, -0.4, -179.6, 0.4), Y2021, output=OutputSpec.grid(),
                        backend=provider)
    g = emb.grid
    assert g.x0 == pytest.approx(179.375) and g.x0 + g.width * g.res == pytest.approx(180.625)
    east, west = patches["east_edge"][2], patches["west_edge"][2]
    row = round((ORIGIN[1] - g.y0) / 0.25) - patches["east_edge"][0]
    np.testing.assert_array_equal(emb.data[:, 0, :2], east[:, row, 2:4])  # cells centred 179.5, 179.75
    np.testing.assert_array_equal(emb.data[:, 0, 2:], west[:, row, 0:3])  # 180 (= -180), 180.25, 180.5


def test_passes_the_embedder_contract(provider, embed_map):
    from rs_embed_core.testing import check_embedder_contract

    _, patches = embed_map
    r0, c0, _ = patches["shanghai"]
    rois = [PointBuffer(*centre_of(r0 + 2, c0 + 2), 20_000), PointBuffer(*centre_of(r0 + 5, c0 + 5), 20_000)]
    assert check_embedder_contract("copernicus", provider=provider, temporal=Y2021, spatials=rois).checks


def test_native_grids_export_as_georeferenced_geotiffs(hub, plugin, embed_map, tmp_path):
    import rasterio

    _, patches = embed_map
    r0, c0, values = patches["shanghai"]
    provider = ce.CopernicusEmbedProvider(native=True, map_file=hub)
    export_batch(spatials=[PointBuffer(*centre_of(r0 + 3, c0 + 2), 30_000)], names=["a"], temporal=Y2021,
                 models=["copernicus"], out=str(tmp_path / "x"), layout="per_item", output=OutputSpec.grid(),
                 backend=provider, save_inputs=True)
    tifs = sorted((tmp_path / "x").rglob("*.tif"))
    emb_tif = [p for p in tifs if "copernicus" in p.name and "input" not in str(p)]
    assert emb_tif, tifs
    with rasterio.open(emb_tif[0]) as src:
        assert src.crs.to_epsg() == 4326 and src.res == (0.25, 0.25) and src.count == ce.DIM
        np.testing.assert_array_equal(src.read(1), values[0, 2:5, 1:4])
