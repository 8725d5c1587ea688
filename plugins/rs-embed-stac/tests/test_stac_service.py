"""What the real catalogs do: Earth Search's Collection 1 as the Sentinel-2 default, the legacy collection's
wrong offset flags caught by the sanity check, Planetary Computer's subscription key, SAS endpoint override
and already-signed hrefs, and a file server that refuses what S3 refuses."""

from __future__ import annotations

import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest

pytest.importorskip("rs_embed_core.providers.reading", reason="the core's shared reading code has not landed yet")

from rs_embed_core.errors import ProviderError, TransientProviderError  # noqa: E402
from rs_embed_core.providers import FetchRequest  # noqa: E402
from rs_embed_core.retry import RetryPolicy  # noqa: E402
from rs_embed_core.specs import SensorSpec, TemporalSpec  # noqa: E402
from rs_embed_stac import PlanetaryComputerSigner, StacProvider  # noqa: E402
from rs_embed_stac.catalogs import EARTH_SEARCH, EARTH_SEARCH_S2_LEGACY, Catalog  # noqa: E402
from rs_embed_stac.pixels import OFFSET_CHECK_MAX_NEGATIVE  # noqa: E402
from rs_embed_stac.provider import classify_read_error  # noqa: E402

S2 = "COPERNICUS/S2_SR_HARMONIZED"
FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)
WINDOW = TemporalSpec.range("2022-06-01", "2022-07-01")


def truth(lo: int = 300, hi: int = 3000, n: int = 200) -> np.ndarray:
    """Harmonised DN (reflectance x 10000) with a fair share of dark pixels (< 1000: water, shadow)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    f = 0.5 + 0.25 * np.sin(x / 9.0) + 0.25 * np.cos(y / 13.0)
    return (lo + (hi - lo) * f).astype(np.uint16)


def item(kit, files, item_id, collection, dn, *, offset=-0.1, **props):
    assets = {"red": kit.asset(kit.publish(files, f"{collection}/{item_id}/B04.tif", dn), scale=1e-4, offset=offset),
              "scl": kit.asset(kit.publish(files, f"{collection}/{item_id}/SCL.tif", np.full((100, 100), 4, np.uint8),
                                           res=20.0))}
    return kit.make_item(item_id, "2022-06-10T10:00:00Z", assets, collection=collection, **props)


def earth_search(url, collections=None):
    base = Catalog("earth-search", url, {**EARTH_SEARCH.collections, **(collections or {})}, cloud_query=True)
    return StacProvider(base, retry=FAST, http_timeout_s=5)


def fetch(p, kit):
    return p.fetch(FetchRequest(kit.GRID, WINDOW, SensorSpec(S2, ("B4",), 10, cloud_mask=False)))


def direct(kit, files, path):
    import rasterio
    from rasterio.vrt import WarpedVRT

    g = kit.GRID
    with rasterio.open(files.root / path) as src, WarpedVRT(src, crs=g.crs, transform=g.affine(), width=g.width,
                                                             height=g.height, dtype="float32") as vrt:
        return vrt.read(1)


# ---------------------------------------------------------------- Earth Search Sentinel-2 (item 1)


def test_earth_search_sentinel2_comes_from_collection_1(stac_api, files, kit):
    t = truth()
    url = stac_api([
        item(kit, files, "S2B_T32UPU_20220610T102559_L2A", "sentinel-2-c1-l2a", t + 1000,
             **{"s2:processing_baseline": "05.10"}),
        # the legacy item: flag false, COG already without the offset (Element84/earth-search#71)
        item(kit, files, "S2B_32UPU_20220610_0_L2A", "sentinel-2-l2a", t,
             **{"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}),
    ])
    assert EARTH_SEARCH.collections[S2].stac_collection == "sentinel-2-c1-l2a"
    r = fetch(earth_search(url), kit)
    assert r.meta["stac_collection"] == "sentinel-2-c1-l2a"
    assert r.meta["item_ids"] == ["S2B_T32UPU_20220610T102559_L2A"]
    ref = direct(kit, files, "sentinel-2-c1-l2a/S2B_T32UPU_20220610T102559_L2A/B04.tif") - 1000.0
    assert np.allclose(r.data[0, 0][r.valid[0]], ref[r.valid[0]], atol=1e-3)
    assert r.meta["scenes"][0]["dn_offset"]["B4"]["dn"] == -1000.0
    assert r.data[0, 0][r.valid[0]].min() >= 0  # harmonised DN, never shifted twice


def test_legacy_collection_refuses_a_second_shift_and_says_so(stac_api, files, kit):
    t = truth()
    url = stac_api([
        item(kit, files, "doubled", "sentinel-2-l2a", t,
             **{"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}),
        item(kit, files, "honest", "sentinel-2-l2a", t + 1000,
             **{"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}),
    ])
    p = earth_search(url, {S2: EARTH_SEARCH_S2_LEGACY})
    r = p.fetch(FetchRequest(kit.GRID, WINDOW, SensorSpec(S2, ("B4",), 10, cloud_mask=False, composite="none")))
    scenes = {s["id"]: s for s in r.meta["scenes"]}
    assert r.meta["stac_collection"] == "sentinel-2-l2a" and r.meta["offset_refused"] == ["doubled"]
    assert scenes["doubled"]["offset_check"]["refused"] is True
    assert scenes["doubled"]["offset_check"]["negative_fraction"] > OFFSET_CHECK_MAX_NEGATIVE
    doubled = scenes["doubled"]["dn_offset"]["B4"]
    assert doubled["dn"] == 0.0 and "refused" in doubled["why"]
    assert scenes["honest"]["offset_check"] == {"negative_fraction": 0.0, "refused": False}
    assert scenes["honest"]["dn_offset"]["B4"]["dn"] == -1000.0
    ref = direct(kit, files, "sentinel-2-l2a/doubled/B04.tif")
    for k in range(r.shape[0]):  # both frames deliver the same harmonised DN
        assert np.allclose(r.data[k, 0][r.valid[k]], ref[r.valid[k]], atol=1e-3)


# ---------------------------------------------------------------- Planetary Computer (item 8)


def token_route(files, status=200):
    calls = []

    def route(handler, path, query):
        calls.append((path, handler.headers.get("Ocp-Apim-Subscription-Key")))
        if status != 200:
            return status, {}, b'{"message": "Forbidden"}'
        body = b'{"msft:expiry": "2099-01-01T00:00:00Z", "token": "se=x&sig=t"}'
        return 200, {"Content-Type": "application/json"}, body

    files.routes["/api/sas/v1/token/"] = route
    return calls


def test_sas_url_comes_from_the_environment_and_signed_hrefs_are_left_alone(files, monkeypatch):
    calls = token_route(files)
    monkeypatch.setenv("PC_SDK_SAS_URL", files.url + "/api/sas/v1/token/")
    signer = PlanetaryComputerSigner(retry=FAST)
    href = "https://acct.blob.core.windows.net/cont/a/B04.tif"
    assert signer.sign(href) == href + "?se=x&sig=t"
    assert calls == [("/api/sas/v1/token/acct/cont", None)]
    signed = href + "?st=2024-01-01&se=2099-01-01&sp=rl&sig=abc"
    assert signer.sign(signed) == signed and len(calls) == 1  # no second signature, no request


@pytest.mark.parametrize("key", [None, "k3y"])
def test_a_refused_token_names_the_subscription_key_variable(files, monkeypatch, key):
    calls = token_route(files, status=403)
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    signer = PlanetaryComputerSigner(files.url + "/api/sas/v1/token", retry=FAST, subscription_key=key)
    with pytest.raises(ProviderError, match="PC_SDK_SUBSCRIPTION_KEY") as info:
        signer.sign("https://sentinel1euwestrtc.blob.core.windows.net/sentinel1-grd-rtc/x/vv.tif")
    assert not isinstance(info.value, TransientProviderError) and len(calls) == 1  # not retried
    assert ("refused" in str(info.value)) == (key is not None) and calls[0][1] == key
    assert "k3y" not in str(info.value)


def test_sentinel1_rtc_without_a_key_is_flagged_where_the_user_meets_it(monkeypatch):
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    s1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10)
    p = StacProvider("planetary-computer")
    with pytest.warns(UserWarning, match="PC_SDK_SUBSCRIPTION_KEY"):
        p.check(s1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.check(s1)  # once per provider
        StacProvider("planetary-computer").check(SensorSpec(S2, ("B4",), 10))  # Sentinel-2 needs none
        monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "k")
        StacProvider("planetary-computer").check(s1)
    err = classify_read_error(RuntimeError("HTTP response code: 403"), "https://a.blob.core.windows.net/c/vv.tif?sig=s",
                              p.catalog.collections["COPERNICUS/S1_GRD"].needs)
    assert "PC_SDK_SUBSCRIPTION_KEY" in str(err) and "sig=s" not in str(err)


# ---------------------------------------------------------------- the file server refuses what S3 refuses


def test_the_file_server_answers_416_for_a_range_past_the_end(files):
    (files.root / "f.bin").write_bytes(b"0123456789")
    req = urllib.request.Request(files.url + "/f.bin", headers={"Range": "bytes=4-5"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == b"45"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(files.url + "/f.bin", headers={"Range": "bytes=10-20"}))
    assert info.value.code == 416


# ---------------------------------------------------------------- parity (item 10)


def test_earth_search_planetary_computer_and_a_local_copy_agree(stac_api, files, kit, tmp_path):
    """One ESA scene (baseline 05.10, DN = reflectance x 10000 + 1000) as each catalog publishes it, and a
    harmonised local copy: the same harmonised DN from all three, to float32 rounding."""
    from rs_embed import LocalProvider
    from rs_embed_stac.catalogs import PLANETARY_COMPUTER

    t = truth()
    es = item(kit, files, "S2B_T32UPU_20220610T102559_L2A", "sentinel-2-c1-l2a", t + 1000,
              **{"s2:processing_baseline": "05.10"})
    pc_assets = {"B04": kit.asset(kit.publish(files, "pc/B04.tif", t + 1000)),  # no raster:bands, like PC
                 "SCL": kit.asset(kit.publish(files, "pc/SCL.tif", np.full((100, 100), 4, np.uint8), res=20.0))}
    pc = kit.make_item("S2B_MSIL2A_20220610T102559_R108_T32UPU_20240101T000000", "2022-06-10T10:00:00Z", pc_assets,
                       collection="sentinel-2-l2a",
                       **{"s2:product_uri": "S2B_MSIL2A_20220610T102559_N0510_R108_T32UPU_20240101T000000.SAFE"})
    url = stac_api([es, pc])
    local_file = kit.write_cog(tmp_path / "local" / "S2_20220610_B4.tif", t)
    sensor = SensorSpec(S2, ("B4",), 10, cloud_mask=False)
    request = FetchRequest(kit.GRID, WINDOW, sensor)
    out = {
        "earth-search": earth_search(url).fetch(request),
        "planetary-computer": StacProvider(Catalog("planetary-computer", url, PLANETARY_COMPUTER.collections),
                                           retry=FAST, http_timeout_s=5).fetch(request),
        "local": LocalProvider(str(local_file), collection=S2, band_map={"B4": 1},
                               dates={local_file.name: "2022-06-10"}).fetch(request),
    }
    ref = out["local"]
    assert ref.valid.mean() > 0.9
    for name, r in out.items():
        assert np.array_equal(r.valid, ref.valid), name
        assert np.allclose(r.data[0, 0][r.valid[0]], ref.data[0, 0][ref.valid[0]], atol=1e-3), name
