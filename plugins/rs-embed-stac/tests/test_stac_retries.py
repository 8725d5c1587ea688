"""Scripted faults from the file server (429, 500, stalls, 404, missing signatures) and the retry path."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

pytest.importorskip("rs_embed_core.providers.reading", reason="the core's shared reading code has not landed yet")

from rs_embed_core.errors import ProviderError, TransientProviderError  # noqa: E402
from rs_embed_core.providers import FetchRequest  # noqa: E402
from rs_embed_core.retry import RetryPolicy  # noqa: E402
from rs_embed_core.specs import SensorSpec, TemporalSpec  # noqa: E402
from rs_embed_stac import Catalog, CollectionMap, PlanetaryComputerSigner, StacProvider  # noqa: E402

S2 = "COPERNICUS/S2_SR_HARMONIZED"
MAP = CollectionMap("sentinel-2-l2a", {"B4": "red"})
JUNE = TemporalSpec.range("2022-06-01", "2022-07-01")


def policy(n: int) -> RetryPolicy:
    return RetryPolicy(max_retries=n, base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture
def one_scene(stac_api, files, kit):
    data = (np.arange(200 * 200, dtype=np.uint16).reshape(200, 200) % 3000 + 100).astype(np.uint16)
    href = kit.publish(files, "cont/a/B04.tif", data)
    url = stac_api([kit.make_item("a", "2022-06-10T10:00:00Z", {"red": kit.asset(href)},
                                  collection="sentinel-2-l2a")])
    return url, "/cont/a/B04.tif"


def request(kit):
    return FetchRequest(kit.GRID, JUNE, SensorSpec(S2, ("B4",), 10, cloud_mask=False))


@pytest.mark.parametrize("fault", [429, 500, 503, "stall"])
def test_transient_faults_are_retried(one_scene, files, kit, fault):
    url, path = one_scene
    files.stall_s = 2.5
    clean = StacProvider(url=url, collections={S2: MAP}, retry=policy(0), http_timeout_s=1).fetch(request(kit))
    files.log.clear()
    files.faults[path] = [fault] * 3  # enough to fail the first attempt (GDAL may try HEAD then GET)
    p = StacProvider(url=url, collections={S2: MAP}, retry=policy(4), http_timeout_s=1)
    r = p.fetch(request(kit))
    assert r.meta["retries"] >= 1
    assert np.array_equal(r.data, clean.data) and np.array_equal(r.valid, clean.valid)
    statuses = [s for *_, s in files.requests_for(path)]
    if fault != "stall":
        assert fault in statuses
    assert 206 in statuses


def test_retries_are_bounded_and_typed(one_scene, files, kit):
    url, path = one_scene
    files.faults[path] = [500] * 50
    p = StacProvider(url=url, collections={S2: MAP}, retry=policy(1), http_timeout_s=2)
    with pytest.raises(TransientProviderError, match="HTTP 500"):
        p.fetch(request(kit))
    assert 0 < len(files.requests_for(path)) < 10  # two attempts, no endless loop


def test_missing_file_is_not_retried(stac_api, files, kit):
    url = stac_api([kit.make_item("gone", "2022-06-10T10:00:00Z", {"red": kit.asset(files.url + "/gone/B04.tif")},
                                  collection="sentinel-2-l2a")])
    p = StacProvider(url=url, collections={S2: MAP}, retry=policy(3), http_timeout_s=2)
    with pytest.raises(ProviderError, match="HTTP 404") as e:
        p.fetch(request(kit))
    assert not isinstance(e.value, TransientProviderError)
    assert len(files.requests_for("/gone/B04.tif")) <= 2  # one attempt (GDAL may HEAD then GET)


def test_unreachable_stac_api_is_transient(kit):
    p = StacProvider(url="http://127.0.0.1:9", collections={S2: MAP}, retry=policy(1), http_timeout_s=2)
    with pytest.raises(TransientProviderError):
        p.fetch(request(kit))


def test_planetary_computer_signing_on_reads(one_scene, files, kit):
    """Blob-like hrefs are signed per read with a cached token; unsigned reads are refused (403)."""
    url, path = one_scene
    calls = []

    def token(handler, p, query):
        calls.append(p)
        expiry = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"msft:expiry": expiry, "token": f"sv={len(calls)}&sig=good"}).encode()

    files.routes["/api/sas/v1/token/"] = token
    files.require_query = {"sig": "good"}
    host = files.url.split("//", 1)[1]
    catalog = Catalog("pc-like", url, {S2: MAP}, signer="planetary-computer")
    signer = PlanetaryComputerSigner(files.url + "/api/sas/v1/token", blob_suffix=host, retry=policy(1))
    p = StacProvider(catalog, signer=signer, retry=policy(1), http_timeout_s=2)
    r1 = p.fetch(request(kit))
    r2 = p.fetch(FetchRequest(kit.GRID.window(10, 10, 50, 50), JUNE, SensorSpec(S2, ("B4",), 10, cloud_mask=False)))
    assert r1.valid.all() and r2.valid.all()
    assert calls == ["/api/sas/v1/token/127/cont"]  # one token for both fetches
    reads = files.requests_for(path)
    assert reads and all(q.endswith("sig=good") for _, _, q, _ in reads)
    assert "sig=" not in json.dumps(r1.meta, default=str)  # no token in provenance
    unsigned = StacProvider(url=url, collections={S2: MAP}, retry=policy(1), http_timeout_s=2)
    with pytest.raises(ProviderError, match="HTTP 403"):
        unsigned.fetch(request(kit))
