"""rs_embed_core.products: the year rule, exact nearest-cell sampling, native grids, the product forward and the
product provider's routing, without any product plugin."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from rs_embed_core.card import InputSpec, ModelCard, Variant
from rs_embed_core.embedder import BatchContext
from rs_embed_core.errors import DataNotFoundError, SpecError
from rs_embed_core.grid import GridSpec
from rs_embed_core.products import (ProductEmbedder, ProductProvider, column_runs, nearest_cells, product_year,
                                    snapped_grid)
from rs_embed_core.specs import SensorSpec, TemporalSpec
from rs_embed_core.testing import FakeProvider


@pytest.mark.parametrize("temporal, year", [(TemporalSpec.year(2020), 2020),
                                            (TemporalSpec.range("2020-06-01", "2020-09-01"), 2020),
                                            (TemporalSpec.range("2020-12-31", "2021-01-01"), 2020)])
def test_a_window_inside_one_year_selects_it(temporal, year):
    assert product_year(temporal, (2019, 2020), "p") == year


def test_windows_across_years_and_missing_years_are_refused_naming_the_years():
    with pytest.raises(SpecError, match=r"spans the years 2019-2020.*available: 2017-2020"):
        product_year(TemporalSpec.range("2019-12-01", "2020-02-01"), (2017, 2018, 2019, 2020), "p")
    with pytest.raises(SpecError, match=r"p has no year 2016; available: 2017, 2019"):
        product_year(TemporalSpec.year(2016), (2017, 2019), "p")
    assert product_year(TemporalSpec.year(1990), None, "p") == 1990  # the catalogue checks it


def test_nearest_cells_of_a_global_lonlat_map_wrap_across_the_antimeridian():
    world = Affine(1.0, 0, -180.5, 0, -1.0, 90.5)  # 1 degree cells centred on whole degrees, 360 x 181
    grid = GridSpec("EPSG:4326", 178.8, 10.2, 1.0, 3, 1)  # centres 179.3, 180.3 (= -179.7), 181.3 at lat 9.7
    row, col, inside = nearest_cells(grid, "EPSG:4326", world, 181, 360, wrap_lon=True)
    assert inside.all() and row.tolist() == [[80, 80, 80]] and col.tolist() == [[359, 0, 1]]
    _, _, inside = nearest_cells(grid, "EPSG:4326", world, 181, 360)
    assert inside.tolist() == [[True, False, False]]


def test_nearest_cells_take_the_cell_holding_each_pixel_centre_and_column_runs():
    utm = GridSpec("EPSG:32651", 350000.0, 3450000.0, 10.0, 6, 2)  # centres x 350005..350055, y 3449995, 3449985
    tile = Affine(40.0, 0, 349960.0, 0, -40.0, 3450040.0)
    row, col, inside = nearest_cells(utm, "EPSG:32651", tile, 10, 10)
    assert inside.all() and row.tolist() == [[1] * 6] * 2 and col.tolist() == [[1, 1, 1, 1, 2, 2]] * 2
    row, col, inside = nearest_cells(utm, "EPSG:32651", tile, 10, 2)  # a tile two cells wide
    assert inside.tolist() == [[True, True, True, True, False, False]] * 2
    assert column_runs(np.array([0, 1, 2, 5, 6, 9])) == [(0, 3), (5, 7), (9, 10)]


def test_snapped_grid_covers_the_bounds_on_the_products_lattice():
    g = snapped_grid("EPSG:4326", (10.1, 20.1, 10.6, 20.3), Affine(0.25, 0, -180.125, 0, -0.25, 90.125))
    assert (g.x0, g.y0, g.res, g.width, g.height) == (9.875, 20.375, 0.25, 3, 2)
    left, bottom, right, top = g.bounds
    assert left <= 10.1 and right >= 10.6 and bottom <= 20.1 and top >= 20.3


class _Product(ProductEmbedder):
    card = ModelCard("prod", "a product", InputSpec("X/PRODUCT", ("a", "b"), 10.0), (Variant("v", 2, 2),), ())
    years = (2020,)


def _ctx(valid: np.ndarray, temporal: TemporalSpec = TemporalSpec.year(2020)) -> BatchContext:
    b, t, h, w = valid.shape
    grid = GridSpec("EPSG:32651", 0.0, 0.0, 10.0, w, h)
    return BatchContext((grid,) * b, ((0.0, 0.0),) * b, ((None,),) * b, temporal,
                        SensorSpec("X/PRODUCT", ("a", "b"), 10.0), "pooled", ("a", "b"), valid)


def test_forward_pools_the_valid_pixels_and_zeroes_the_rest_of_the_grid():
    x = np.arange(2 * 1 * 2 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 2, 3)
    valid = np.zeros((2, 1, 2, 3), bool)
    valid[0, 0, 0, :2] = True
    valid[1] = True
    out = _Product(_Product.card.variants[0]).forward(x, _ctx(valid))
    np.testing.assert_allclose(out.pooled[0], [(0 + 1) / 2, (6 + 7) / 2])
    np.testing.assert_allclose(out.pooled[1], x[1, 0].mean(axis=(1, 2)))
    assert (out.grid[0][:, ~valid[0, 0]] == 0).all() and (out.grid[1] == x[1, 0]).all()
    with pytest.raises(DataNotFoundError, match="no valid product pixel"):
        _Product(_Product.card.variants[0]).forward(x[:1], _ctx(np.zeros((1, 1, 2, 3), bool)))
    with pytest.raises(SpecError, match="spans the years"):
        _Product(_Product.card.variants[0]).forward(x, _ctx(valid, TemporalSpec.range("2020-06-01", "2021-06-01")))


def test_a_product_refuses_other_sensors_and_any_chain():
    v = _Product.card.variants[0]
    _Product.check_request(v, (_Product.product_sensor(),), ())
    with pytest.raises(SpecError, match="takes no sensor="):
        _Product.check_request(v, (SensorSpec("X/PRODUCT", ("a",), 10.0),), ())
    with pytest.raises(SpecError, match="takes no preprocessing="):
        _Product.check_request(v, (_Product.product_sensor(),), (("clip", {}),))


class _Reader(ProductProvider):
    name = "reader"
    collection = "X/PRODUCT"

    def check_product(self, sensor):
        pass

    def fetch_product(self, request):
        return "product"


def test_the_product_provider_routes_other_collections_to_its_fallback():
    fallback = FakeProvider()
    both = _Reader(fallback)
    s2 = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4",), 10)
    both.check(s2)
    assert both.fetch(type("R", (), {"sensor": _Product.product_sensor()})()) == "product"
    with pytest.raises(SpecError, match="backend='reader:gee'"):
        _Reader().check(s2)
    assert _Reader("native").native and _Reader("native").fallback is None
    assert not _Reader(fallback).native and _Reader().product_token() != _Reader(native=True).product_token()
