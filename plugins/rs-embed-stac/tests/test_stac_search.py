"""Search against a real STAC API (rustac serve): footprint, window, paging, max_items, item filters."""

from __future__ import annotations

import pytest

from rs_embed_core.errors import ProviderError, TransientProviderError
from rs_embed_core.specs import TemporalSpec
from rs_embed_stac.catalogs import CollectionMap
from rs_embed_stac.search import (
    classify_http_error, datetime_interval, footprint_boxes, open_client, processing_baseline, search,
)

S2MAP = CollectionMap("s2", {"B4": "red", "B8": "nir", "SCL": "scl"})


def _assets(kit):
    return {k: kit.asset(f"http://x/{k}.tif") for k in ("red", "nir", "scl")}


def _search(kit, url, window, cmap=S2MAP, bands=("B4", "B8"), **kw):
    opts = dict(max_items=100, page_size=100, max_cloud_fraction=None, cloud_query=False)
    opts.update(kw)
    return search(lambda: open_client(url), cmap, kit.GRID.footprint_lonlat(), window, bands, **opts)


def test_footprint_and_half_open_window(stac_api, kit):
    far = kit.scene_bbox(x0=200000.0)  # same zone, ~330 km west: outside the ROI
    items = [
        kit.make_item("in-a", "2022-06-01T10:00:00Z", _assets(kit)),
        kit.make_item("in-b", "2022-06-30T23:59:59Z", _assets(kit)),
        kit.make_item("end-day", "2022-07-01T00:00:00Z", _assets(kit)),  # the window is [start, end)
        kit.make_item("before", "2022-05-31T23:59:59Z", _assets(kit)),
        kit.make_item("far", "2022-06-10T10:00:00Z", _assets(kit), bbox=far),
    ]
    url = stac_api(items)
    res = _search(kit, url, TemporalSpec.range("2022-06-01", "2022-07-01"))
    assert [s.id for s in res.scenes] == ["in-a", "in-b"]
    assert not res.truncated
    # the datetimes come back naive UTC, sorted oldest first
    assert res.scenes[0].datetime.isoformat() == "2022-06-01T10:00:00"


def test_paging_and_max_items(stac_api, kit):
    items = [kit.make_item(f"it{i:02d}", f"2022-06-{i + 1:02d}T10:00:00Z", _assets(kit)) for i in range(9)]
    url = stac_api(items)
    window = TemporalSpec.range("2022-06-01", "2022-07-01")
    res = _search(kit, url, window, page_size=2)  # five pages
    assert [s.id for s in res.scenes] == [f"it{i:02d}" for i in range(9)]
    assert res.returned == 9 and not res.truncated
    capped = _search(kit, url, window, page_size=2, max_items=4)
    assert capped.returned == 4 and len(capped.scenes) == 4 and capped.truncated


def test_cloud_platform_tier_and_asset_filters(stac_api, kit):
    ls = CollectionMap("landsat", {"SR_B4": "red", "QA_PIXEL": "qa_pixel"}, platforms=("landsat-8",),
                       id_prefixes=("LC08_",), require={"landsat:collection_category": ("T1",)})
    la = {"red": kit.asset("http://x/r.tif"), "qa_pixel": kit.asset("http://x/q.tif")}
    items = [
        kit.make_item("LC08_clear", "2022-06-01T10:00:00Z", la, collection="landsat", cloud=10.0, platform="LANDSAT_8",
                  **{"landsat:collection_category": "T1"}),
        kit.make_item("LC08_cloudy", "2022-06-02T10:00:00Z", la, collection="landsat", cloud=60.0, platform="landsat-8"),
        kit.make_item("LC09_other", "2022-06-03T10:00:00Z", la, collection="landsat", cloud=1.0, platform="landsat-9"),
        kit.make_item("LC08_tier2", "2022-06-04T10:00:00Z", la, collection="landsat", cloud=1.0, platform="landsat-8",
                  **{"landsat:collection_category": "T2"}),
        kit.make_item("LC08_noqa", "2022-06-05T10:00:00Z", {"red": la["red"]}, collection="landsat", cloud=1.0,
                  platform="landsat-8"),
        kit.make_item("LC08_nocloud", "2022-06-06T10:00:00Z", la, collection="landsat", cloud=None),
    ]
    url = stac_api(items)
    res = _search(kit, url, TemporalSpec.range("2022-06-01", "2022-07-01"), cmap=ls, bands=("SR_B4", "QA_PIXEL"),
                  max_cloud_fraction=0.5)
    # no eo:cloud_cover: kept (nothing says it is cloudy); the id prefix identifies the platform
    assert [s.id for s in res.scenes] == ["LC08_clear", "LC08_nocloud"]
    assert res.scenes[0].cloud_fraction == pytest.approx(0.10)
    assert res.dropped == {"cloud cover above max_cloud_fraction": 1, "other platform": 1,
                           "landsat:collection_category not in ['T1']": 1, "no asset 'qa_pixel'": 1}


def test_antimeridian_footprint_is_split():
    assert footprint_boxes((179.5, 1.0, 180.5, 2.0)) == [(179.5, 1.0, 180.0, 2.0), (-180.0, 1.0, -179.5, 2.0)]
    assert footprint_boxes((-180.5, 1.0, -179.5, 2.0)) == [(179.5, 1.0, 180.0, 2.0), (-180.0, 1.0, -179.5, 2.0)]
    assert footprint_boxes((10.0, 1.0, 11.0, 2.0)) == [(10.0, 1.0, 11.0, 2.0)]
    assert datetime_interval(TemporalSpec.range("2022-06-01", "2022-07-01")) == \
        "2022-06-01T00:00:00Z/2022-06-30T23:59:59Z"


def test_processing_baseline_sources():
    assert processing_baseline({"s2:processing_baseline": "4.0"}, "x", []) == "04.00"
    assert processing_baseline({"s2:product_uri": "S2B_MSIL2A_20230101T102339_N0510_R065_T32UPC_2024.SAFE"}, "x",
                               []) == "05.10"
    pc_href = "https://a.blob.core.windows.net/c/S2B_MSIL2A_20210101T102339_N0300_R065_T32UPC.SAFE/B04.tif"
    assert processing_baseline({}, "S2B_MSIL2A_20210101T102339_R065_T32UPC_2024", [pc_href]) == "03.00"
    assert processing_baseline({}, "plain-id", ["http://x/B04.tif"]) is None


def test_http_errors_are_classified():
    class Fake(Exception):
        pass

    for status, transient in ((429, True), (500, True), (503, True), (408, True), (404, False), (400, False)):
        e = Fake("boom")
        e.status_code = status
        err = classify_http_error(e, "x")
        assert isinstance(err, TransientProviderError) is transient and isinstance(err, ProviderError)
    # a port nobody listens on: a connection failure, worth retrying
    with pytest.raises(TransientProviderError):
        open_client("http://127.0.0.1:9/", timeout_s=2)
