import math

import pytest
from pyproj import Geod, Transformer

from rs_embed_core.grid import GridSpec, grid_for, utm_crs
from rs_embed_core.specs import BBox, PointBuffer

GEOD = Geod(ellps="WGS84")


def test_utm_zone():
    assert utm_crs(121.5, 31.2) == "EPSG:32651"
    assert utm_crs(-77.0, 25.0) == "EPSG:32618"
    assert utm_crs(18.4, -33.9) == "EPSG:32734"
    assert utm_crs(180.0, 0.0) == "EPSG:32660"


@pytest.mark.parametrize("lat", [0.0, 31.2, 60.0, 75.0])
def test_point_buffer_is_true_ground_metres(lat):
    g = grid_for(PointBuffer(10.3, lat, 2000), 10)
    assert g.shape == (400, 400) and g.res == 10
    # the width measured on the ellipsoid between the mid-points of the west and east edges is
    # ~4 km at every latitude (UTM scale error < 0.1 % this close to the central meridian)
    to_ll = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = g.bounds
    ymid = (bottom + top) / 2
    (lon1, lon2), (lat1, lat2) = to_ll.transform([left, right], [ymid, ymid])
    _, _, d = GEOD.inv(lon1, lat1, lon2, lat2)
    assert d == pytest.approx(4000, rel=0.002)


def test_grid_snaps_to_lattice_and_shares_pixels():
    a = grid_for(PointBuffer(121.5, 31.2, 1000), 10)
    b = grid_for(PointBuffer(121.5003, 31.2002, 1000), 10)
    for g in (a, b):
        assert g.x0 % 10 == 0 and g.y0 % 10 == 0
    # overlapping ROIs are on the same lattice: offsets are whole pixels
    assert (a.x0 - b.x0) % 10 == 0 and (a.y0 - b.y0) % 10 == 0
    assert a.shape == b.shape


def test_bbox_grid_covers_box():
    box = BBox(121.40, 31.10, 121.45, 31.15)
    g = grid_for(box, 30)
    assert g.x0 % 30 == 0 and g.y0 % 30 == 0
    minlon, minlat, maxlon, maxlat = g.footprint_lonlat()
    assert minlon <= box.minlon and minlat <= box.minlat and maxlon >= box.maxlon and maxlat >= box.maxlat
    assert maxlon - box.maxlon < 0.001  # snapped outward by less than a pixel plus UTM skew


def test_resized_and_window_keep_footprint():
    g = GridSpec("EPSG:32651", 1000, 5000, 10, 400, 300)
    r = g.resized(224, 224)
    assert r.bounds == pytest.approx(g.bounds)
    assert r.res != r.yres  # non-square footprint -> rectangular cells
    sq = GridSpec("EPSG:32651", 1000, 5000, 10, 400, 400).resized(7, 7)
    assert sq.res_y is None and math.isclose(sq.res, 4000 / 7)
    w = g.window(10, 20, 5, 6)
    assert (w.x0, w.y0, w.width, w.height) == (1100, 4800, 5, 6)
