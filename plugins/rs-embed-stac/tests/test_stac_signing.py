"""Planetary Computer signing against a fake SAS token endpoint: cache until expiry, retries, errors."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from rs_embed_core.errors import ProviderError, TransientProviderError
from rs_embed_core.retry import RetryPolicy
from rs_embed_stac import PlanetaryComputerSigner

FAST = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def token_endpoint(files, clock, *, lifetime_s=3600.0, fail=()):
    """A fake /api/sas/v1/token/<account>/<container> answering a new token per call."""
    calls = []
    fail = list(fail)

    def route(handler, path, query):
        calls.append(path)
        if fail:
            return fail.pop(0), {}, b"busy"
        expiry = dt.datetime.fromtimestamp(clock() + lifetime_s, dt.timezone.utc).isoformat().replace("+00:00", "Z")
        body = json.dumps({"msft:expiry": expiry, "token": f"sv=1&sig=tok{len(calls)}"}).encode()
        return 200, {"Content-Type": "application/json"}, body

    files.routes["/api/sas/v1/token/"] = route
    return calls


def test_tokens_are_cached_per_container_until_expiry(files):
    clock = Clock()
    calls = token_endpoint(files, clock, lifetime_s=600)
    signer = PlanetaryComputerSigner(files.url + "/api/sas/v1/token", blob_suffix=".blob.core.windows.net",
                                     clock=clock, refresh_margin_s=60, retry=FAST)
    a = "https://acct.blob.core.windows.net/cont/x/B04.tif"
    assert signer.sign(a) == a + "?sv=1&sig=tok1"
    assert signer.sign("https://acct.blob.core.windows.net/cont/y/B08.tif").endswith("?sv=1&sig=tok1")
    assert calls == ["/api/sas/v1/token/acct/cont"]  # one request for the container
    other = signer.sign("https://acct.blob.core.windows.net/other/z.tif")
    assert other.endswith("sig=tok2") and calls[-1] == "/api/sas/v1/token/acct/other"
    clock.now += 600 - 61  # still more than the margin left: reused
    assert signer.sign(a).endswith("sig=tok1")
    clock.now += 2  # inside the refresh margin: a new token
    assert signer.sign(a).endswith("sig=tok3") and len(calls) == 3
    # hrefs outside blob storage pass unchanged, without a token request
    assert signer.sign("https://example.com/a.tif") == "https://example.com/a.tif"
    assert len(calls) == 3


def test_token_endpoint_faults_are_retried_then_typed(files):
    clock = Clock()
    calls = token_endpoint(files, clock, fail=[429, 503])
    signer = PlanetaryComputerSigner(files.url + "/api/sas/v1/token", clock=clock, retry=FAST)
    assert signer.sign("https://a.blob.core.windows.net/c/f.tif").endswith("sig=tok3")
    assert len(calls) == 3
    token_endpoint(files, clock, fail=[500] * 10)
    with pytest.raises(TransientProviderError):
        PlanetaryComputerSigner(files.url + "/api/sas/v1/token", clock=clock, retry=FAST).sign(
            "https://a.blob.core.windows.net/c/f.tif")
    token_endpoint(files, clock, fail=[404])
    with pytest.raises(ProviderError) as e:
        PlanetaryComputerSigner(files.url + "/api/sas/v1/token", clock=clock, retry=FAST).sign(
            "https://a.blob.core.windows.net/c/f.tif")
    assert not isinstance(e.value, TransientProviderError)
