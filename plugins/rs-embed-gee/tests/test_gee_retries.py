"""Throughput and quotas: retries on 429 / 5xx / timeouts, Retry-After, the in-flight bound, the rate limit."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_core.errors import TransientProviderError
from rs_embed_core.retry import RetryPolicy
from rs_embed_gee import GEEError, GEEQuotaError
from rs_embed_gee.fake import quick_retry


@pytest.mark.parametrize("kind, status", [("computePixels", 429), ("computePixels", 500), ("compute", 503),
                                          ("compute", 429)])
def test_transient_failures_are_retried_and_counted(fake, provider, req, kind, status):
    fake.fail_next(kind, status, n=2)
    r = provider.fetch(req())
    assert r.meta["retries"] == 2
    assert len(fake.of(kind)) == 3
    assert r.valid.any()


def test_a_call_that_hangs_past_the_deadline_is_retried(fake, req):
    provider = fake.provider(retry=quick_retry(), http_timeout_s=0.5)
    fake.fail_next("computePixels", 200, hang_s=2.0)  # answers nothing useful before the client gives up
    r = provider.fetch(req())
    assert r.meta["retries"] == 1
    assert len(fake.of("computePixels")) == 2


def test_quota_errors_surface_typed_once_the_retries_are_spent(fake, req):
    provider = fake.provider(retry=quick_retry(), quota_retry=RetryPolicy(max_retries=2, base_delay_s=0.01,
                                                                          max_delay_s=0.02))
    fake.fail_next("computePixels", 429, n=5, message="Too many concurrent aggregations.")
    with pytest.raises(GEEQuotaError, match="max_concurrency") as info:
        provider.fetch(req())
    assert isinstance(info.value, TransientProviderError)
    assert info.value.attempts == 3 and len(fake.of("computePixels")) == 3


def test_retry_after_is_honoured(fake, req):
    provider = fake.provider(quota_retry=RetryPolicy(max_retries=2, base_delay_s=0.001, max_delay_s=5.0))
    fake.fail_next("computePixels", 429, retry_after=0.4)
    provider.fetch(req())
    first, second = fake.of("computePixels")
    assert second.at - first.at >= 0.4


def test_errors_retrying_cannot_fix_are_raised_at_once(fake, provider, req):
    fake.fail_next("computePixels", 400, message="Image.select: Pattern 'B99' did not match any bands.")
    with pytest.raises(GEEError, match="did not match any bands"):
        provider.fetch(req())
    assert len(fake.of("computePixels")) == 1


def test_calls_in_flight_stay_under_max_inflight(fake, req):
    provider = fake.provider(retry=quick_retry(), max_request_dim=16, max_inflight=3)  # 4 x 3 = 12 windows
    fake.latency_s = 0.1
    provider.fetch(req())
    assert len(fake.of("computePixels")) == 12
    assert 2 <= fake.max_in_flight <= 3


def test_requests_per_s_spaces_calls_out(fake, req):
    provider = fake.provider(retry=quick_retry(), max_request_dim=32, max_inflight=1, requests_per_s=10.0)
    provider.fetch(req())  # 1 listing + 4 windows = 5 calls at 10/s with a burst of 1
    times = [r.at for r in fake.requests if r.method == "POST"]
    assert len(times) == 5
    assert times[-1] - times[0] >= 0.35
    assert np.all(np.diff(times) >= 0.05)
