"""Fetches through a real STAC API and HTTP range reads of COGs: pixels, masks, offsets, composites."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rs_embed_core.providers.reading", reason="the core's shared reading code has not landed yet")

from rs_embed_core.errors import DataNotFoundError, SpecError, UnknownBandError  # noqa: E402
from rs_embed_core.providers import FetchRequest  # noqa: E402
from rs_embed_core.retry import RetryPolicy  # noqa: E402
from rs_embed_core.specs import SensorSpec, TemporalSpec  # noqa: E402
from rs_embed_stac import CollectionMap, StacProvider  # noqa: E402

S2 = "COPERNICUS/S2_SR_HARMONIZED"
L8 = "LANDSAT/LC08/C02/T1_L2"
S2MAP = CollectionMap("sentinel-2-l2a", {"B4": "red", "B8": "nir", "SCL": "scl"})
L8MAP = CollectionMap("landsat-c2-l2", {"SR_B4": "red", "QA_PIXEL": "qa_pixel"}, id_prefixes=("LC08_",))
FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)
JUNE = TemporalSpec.range("2022-06-01", "2022-07-01")


def field(seed: int, lo: int = 500, hi: int = 4000, n: int = 200) -> np.ndarray:
    """A smooth, varied uint16 field (bilinear-friendly), never the nodata value 0."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    f = 0.5 + 0.25 * np.sin(x / (7.0 + seed)) + 0.25 * np.cos(y / (11.0 + seed))
    return (lo + (hi - lo) * f).astype(np.uint16)


def s2_item(kit, files, item_id, when, *, red, nir, scl=None, cloud=5.0, raster_offset=None, **props):
    scl = np.full((100, 100), 4, np.uint8) if scl is None else scl
    kw = {} if raster_offset is None else {"scale": 1e-4, "offset": raster_offset}
    assets = {
        "red": kit.asset(kit.publish(files, f"{item_id}/B04.tif", red), **kw),
        "nir": kit.asset(kit.publish(files, f"{item_id}/B08.tif", nir), **kw),
        "scl": kit.asset(kit.publish(files, f"{item_id}/SCL.tif", scl, res=20.0)),
    }
    return kit.make_item(item_id, when, assets, collection="sentinel-2-l2a", cloud=cloud, **props)


def provider(url, **kw):
    opts = dict(url=url, collections={S2: S2MAP, L8: L8MAP}, retry=FAST, http_timeout_s=5)
    opts.update(kw)
    return StacProvider(**opts)


def fetch(p, kit, bands=("B4", "B8"), window=JUNE, collection=S2, **sensor):
    return p.fetch(FetchRequest(kit.GRID, window, SensorSpec(collection, bands, 10, **sensor)))


def direct_read(path, grid, resampling="bilinear"):
    """Reference: rasterio's own warped read of the local file onto the grid (data, alpha > 0)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as src, WarpedVRT(src, crs=grid.crs, transform=grid.affine(), width=grid.width,
                                                height=grid.height, resampling=Resampling[resampling],
                                                add_alpha=True, dtype="float32") as vrt:
        return vrt.read(1), vrt.read(2) > 0


def test_pixels_equal_a_direct_rasterio_read(stac_api, files, kit):
    # the scene is in the neighbouring UTM zone (33N), so the read really warps
    from rasterio.warp import transform

    (x33,), (y33,) = transform(kit.CRS, "EPSG:32633", [kit.X0 + 1000.0], [kit.Y0 - 1000.0])
    x0, y0 = round(x33, -1), round(y33, -1)
    red, nir = field(1), field(2)
    assets = {
        "red": kit.asset(kit.publish(files, "z33/B04.tif", red, crs="EPSG:32633", x0=x0, y0=y0)),
        "nir": kit.asset(kit.publish(files, "z33/B08.tif", nir, crs="EPSG:32633", x0=x0, y0=y0)),
        "scl": kit.asset(kit.publish(files, "z33/SCL.tif", np.full((100, 100), 4, np.uint8), crs="EPSG:32633",
                                     x0=x0, y0=y0, res=20.0)),
    }
    bbox = kit.scene_bbox(crs="EPSG:32633", x0=x0, y0=y0)
    url = stac_api([kit.make_item("z33", "2022-06-10T10:00:00Z", assets, collection="sentinel-2-l2a", bbox=bbox,
                                  **{"s2:processing_baseline": "03.01"})])
    r = fetch(provider(url), kit, cloud_mask=False)
    assert r.shape == (1, 2, 100, 100) and r.bands == ("B4", "B8")
    for i, name in enumerate(("B04", "B08")):
        ref, ok = direct_read(files.root / "z33" / f"{name}.tif", kit.GRID)
        assert np.array_equal(r.valid[0], ok)
        assert 0.2 < ok.mean() < 1.0  # the scene covers part of the ROI: the rest is invalid
        assert np.array_equal(r.data[0, i][ok], ref[ok])
        assert np.all(r.data[0, i][~ok] == 0.0)  # fill_value
    assert r.meta["item_ids"] == ["z33"] and r.meta["scenes"][0]["processing_baseline"] == "03.01"
    assert "dn_offset" not in r.meta["scenes"][0]  # baseline < 04.00: DN as read
    # the reads were HTTP range requests, not whole-file downloads
    gets = files.requests_for("/z33/B04.tif", "GET")
    assert gets and all(status == 206 for *_, status in gets)


def test_scl_mask(stac_api, files, kit):
    scl = np.full((100, 100), 4, np.uint8)  # 20 m pixels: 2 km x 2 km
    scl[25:50, 25:50] = 9  # cloud, high probability
    scl[25:50, 50:75] = 3  # cloud shadow
    scl[50:75, 25:50] = 11  # snow: kept
    scl[50:75, 50:75] = 10  # thin cirrus
    url = stac_api([s2_item(kit, files, "a", "2022-06-10T10:00:00Z", red=field(1), nir=field(2), scl=scl,
                            **{"s2:processing_baseline": "03.01"})])
    p = provider(url)
    r = fetch(p, kit)  # cloud_mask=True: SCL is the default for this mapping
    assert r.meta["cloud_mask"] == "scl"
    # grid pixel (row, col) -> scene 20 m pixel: the grid starts 500 m inside the scene
    rows, cols = np.mgrid[0:100, 0:100]
    src = scl[(505 + rows * 10) // 20, (505 + cols * 10) // 20]
    expect = ~np.isin(src, (0, 1, 3, 8, 9, 10))
    assert np.array_equal(r.valid[0], expect)
    assert (~expect).sum() > 1000 and np.isin(11, src[expect])
    assert np.all(r.data[0][:, ~expect] == 0)
    r2 = fetch(p, kit, cloud_mask=False)
    assert r2.valid.all()
    assert r.meta["scenes"][0]["clear_fraction"] == pytest.approx(expect.mean())


def test_qa_pixel_mask(stac_api, files, kit):
    qa = np.full((200, 200), 1 << 6, np.uint16)  # clear
    qa[50:100, 50:100] |= 1 << 3  # cloud
    qa[50:100, 100:150] |= 1 << 4  # cloud shadow
    qa[100:150, 50:100] |= 1 << 1  # dilated cloud
    qa[100:150, 100:150] = (1 << 5) | (1 << 6)  # snow: kept
    assets = {"red": kit.asset(kit.publish(files, "ls/red.tif", field(3), res=10.0), scale=2.75e-5, offset=-0.2),
              "qa_pixel": kit.asset(kit.publish(files, "ls/qa.tif", qa, res=10.0), nodata=1)}
    url = stac_api([kit.make_item("LC08_L2SP_x_T1", "2022-06-10T10:00:00Z", assets, collection="landsat-c2-l2")])
    r = fetch(provider(url), kit, bands=("SR_B4",), collection=L8)
    assert r.meta["cloud_mask"] == "qa_pixel"
    sub = qa[50:150, 50:150]
    expect = (sub & 0b11111) == 0
    assert np.array_equal(r.valid[0], expect)
    # Landsat C2 L2 raster:bands scale/offset equal the core table's: DN untouched
    ref, _ = direct_read(files.root / "ls" / "red.tif", kit.GRID)
    assert np.array_equal(r.data[0, 0][expect], ref[expect])
    assert "dn_offset" not in r.meta["scenes"][0]


def test_sentinel2_offsets_follow_each_item(stac_api, files, kit):
    truth = field(4, lo=300, hi=3000)
    red_nir = dict(red=truth + 1000, nir=truth + 1000)  # DN as written by baseline >= 04.00 processing
    items = [
        s2_item(kit, files, "old", "2021-12-01T10:00:00Z", red=truth, nir=truth, **{"s2:processing_baseline": "03.01"}),
        s2_item(kit, files, "new-rb", "2022-02-01T10:00:00Z", raster_offset=-0.1, **red_nir,
                **{"s2:processing_baseline": "04.00"}),
        # Earth Search: the catalog removed the offset already; raster:bands still says -0.1
        s2_item(kit, files, "new-applied", "2022-03-01T10:00:00Z", red=truth, nir=truth, raster_offset=-0.1,
                **{"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}),
        # Planetary Computer style: no property, no raster:bands; the baseline is in the product name
        s2_item(kit, files, "S2B_MSIL2A_20220401T102339_R065_T32UPC_20240806T223544", "2022-04-01T10:00:00Z",
                **red_nir, **{"s2:product_uri": "S2B_MSIL2A_20220401T102339_N0510_R065_T32UPC_20240806T223544.SAFE"}),
    ]
    url = stac_api(items)
    r = fetch(provider(url), kit, window=TemporalSpec.range("2021-11-01", "2022-05-01"), composite="none",
              cloud_mask=False)
    assert r.shape[0] == 4
    ref, ok = direct_read(files.root / "old" / "B04.tif", kit.GRID)
    for t in range(4):  # every frame gives the same harmonized DN = reflectance x 10000
        assert np.allclose(r.data[t, 0], ref, atol=1e-3), t
    shifts = {s["id"]: s.get("dn_offset", {}).get("B4", {}).get("dn") for s in r.meta["scenes"]}
    assert shifts == {"old": None, "new-rb": -1000.0, "new-applied": None,
                      "S2B_MSIL2A_20220401T102339_R065_T32UPC_20240806T223544": -1000.0}


def test_max_cloud_fraction_and_no_data(stac_api, files, kit):
    items = [s2_item(kit, files, "clear", "2022-06-05T10:00:00Z", red=field(1), nir=field(2), cloud=10.0),
             s2_item(kit, files, "cloudy", "2022-06-06T10:00:00Z", red=field(1), nir=field(2), cloud=80.0)]
    url = stac_api(items)
    p = provider(url)
    r = fetch(p, kit, max_cloud_fraction=0.5)
    assert r.meta["item_ids"] == ["clear"]
    assert r.meta["search"]["dropped"] == {"cloud cover above max_cloud_fraction": 1}
    assert fetch(p, kit).meta["item_ids"] == ["clear", "cloudy"]
    with pytest.raises(DataNotFoundError, match="no sentinel-2-l2a item"):
        fetch(p, kit, window=TemporalSpec.range("2023-01-01", "2023-02-01"))


def test_check_refuses_what_it_cannot_serve():
    p = StacProvider(url="http://127.0.0.1:9", collections={S2: S2MAP})
    with pytest.raises(SpecError, match="does not serve"):
        p.check(SensorSpec("NASA/HLS/HLSS30/v002", ("B4",), 30))
    with pytest.raises(UnknownBandError, match="B2"):
        p.check(SensorSpec(S2, ("B2", "B4"), 10))
    with pytest.raises(SpecError, match="qa60"):
        p.check(SensorSpec(S2, ("B4",), 10, cloud_mask="qa60"))
    with pytest.raises(SpecError, match="cloud_threshold"):
        p.check(SensorSpec(S2, ("B4",), 10, cloud_threshold=0.6))
    with pytest.raises(SpecError, match="sentinel-1-rtc"):
        StacProvider("earth-search").check(SensorSpec("COPERNICUS/S1_GRD", ("VV",), 10))
    with pytest.raises(SpecError, match="collection mapping"):
        StacProvider("https://example.com/stac")
    with pytest.raises(SpecError, match="unknown STAC preset"):
        StacProvider("earth-serch")


def test_a_search_that_never_answers_times_out_after_http_timeout_s():
    """A STAC API whose landing page answers but whose /search never does: the search gives up after
    http_timeout_s (per attempt) with a typed error instead of hanging."""
    import json
    import re
    import socket
    import threading
    import time

    from rs_embed_core.errors import ProviderError
    from rs_embed_core.grid import GridSpec

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    landing = json.dumps({"type": "Catalog", "id": "t", "description": "t", "stac_version": "1.0.0", "links": [
        {"rel": "search", "href": f"http://127.0.0.1:{port}/search", "type": "application/geo+json",
         "method": "POST"}], "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                                             "https://api.stacspec.org/v1.0.0/item-search"]}).encode()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            head = conn.recv(65536)
            if head.split(b" ")[1].startswith(b"/search"):
                held.append(conn)  # never answer
                continue
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(landing)}\r\n\r\n".encode() + landing)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        p = StacProvider(url=f"http://127.0.0.1:{port}", collections={S2: S2MAP}, http_timeout_s=1,
                         retry=RetryPolicy(max_retries=1, base_delay_s=0.01, max_delay_s=0.01))
        grid = GridSpec("EPSG:32632", 690500.0, 5334500.0, 10.0, 10, 10)
        outcome: list[BaseException] = []

        def go() -> None:
            try:
                p.fetch(FetchRequest(grid, JUNE, SensorSpec(S2, ("B4",), 10)))
            except BaseException as exc:  # noqa: BLE001
                outcome.append(exc)

        worker = threading.Thread(target=go, daemon=True)
        t0 = time.monotonic()
        worker.start()
        worker.join(15)
        assert not worker.is_alive(), "the STAC search ignored http_timeout_s"
        assert time.monotonic() - t0 < 15 and isinstance(outcome[0], ProviderError)
        assert re.search("timed out|timeout", str(outcome[0]), re.I)
    finally:
        listener.close()
        for c in held:
            c.close()
