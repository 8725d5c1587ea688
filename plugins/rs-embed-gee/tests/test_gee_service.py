"""What the real service does that a permissive fake would hide: the QA60 gap, quota errors and their
policy, 403s that mention a quota, memory/time limits, the per-project concurrency quota, the HTTP
pool, request validation, filters honoured on the server, and resampling parity with STAC/local."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import ee
import numpy as np
import pytest

from rs_embed_core.errors import DataNotFoundError, SpecError
from rs_embed_core.grid import GridSpec
from rs_embed_core.retry import RetryPolicy
from rs_embed_core.specs import SensorSpec, TemporalSpec
from rs_embed_gee import GEEPermissionError
from rs_embed_gee.errors import GEEError
from rs_embed_gee.fake import S2, FakeScene, calls, constants, quick_retry, value_of
from rs_embed_gee.provider import QUOTA_RETRY

QUOTA_PROJECT_403 = ("Your application is authenticating by using local Application Default Credentials. The "
                     "earthengine.googleapis.com API requires a quota project, which is not set by default.")


# ---------------------------------------------------------------- QA60 (item 2)


@pytest.mark.parametrize("start, end", [("2022-06-01", "2022-07-01"), ("2021-12-01", "2022-01-26"),
                                        ("2024-02-28", "2024-03-10"), ("2020-01-01", "2025-01-01")])
def test_qa60_is_refused_for_windows_touching_its_gap(fake, provider, req, start, end):
    with pytest.raises(SpecError, match="cloud_score_plus"):
        provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_mask="qa60"), temporal=TemporalSpec.range(start, end)))
    assert fake.requests == []  # refused before any call


@pytest.mark.parametrize("start, end", [("2021-06-01", "2022-01-25"), ("2024-02-29", "2024-04-01")])
def test_qa60_outside_the_gap_still_works(fake, provider, req, start, end):
    s, e = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    middle = s + (e - s) / 2
    fake.scenes[S2] = [FakeScene("X", dt.datetime(middle.year, middle.month, middle.day, 2))]
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_mask="qa60"), temporal=TemporalSpec.range(start, end)))
    assert r.meta["cloud_mask"] == "qa60" and r.meta["image_ids"] == ["X"]


# ---------------------------------------------------------------- quota errors (items 4, 5)


def test_quota_errors_have_their_own_longer_policy(fake, req):
    assert QUOTA_RETRY.max_retries >= 5 and 1.0 <= QUOTA_RETRY.base_delay_s <= 2.0
    assert QUOTA_RETRY.max_delay_s >= 60.0 and QUOTA_RETRY.jitter > 0
    # one generic retry, but five 429s in a row are survived: they count against the quota policy only
    provider = fake.provider(retry=RetryPolicy(max_retries=1, base_delay_s=0.001, max_delay_s=0.01),
                             quota_retry=RetryPolicy(max_retries=6, base_delay_s=0.001, max_delay_s=0.01))
    fake.fail_next("computePixels", 429, n=5, message="Too many concurrent aggregations.")
    fake.fail_next("compute", 503, n=1)
    r = provider.fetch(req())
    assert r.meta["retries"] == 6 and len(fake.of("computePixels")) == 6


def test_a_403_that_mentions_a_quota_project_is_a_permission_error_not_retried(fake, provider, req):
    fake.fail_next("compute", 403, message=QUOTA_PROJECT_403)
    with pytest.raises(GEEPermissionError, match="set-quota-project"):
        provider.fetch(req())
    assert len(fake.of("compute")) == 1


def test_the_scene_list_is_reused_when_the_runner_retries_a_fetch(fake, req):
    provider = fake.provider(retry=quick_retry(), quota_retry=RetryPolicy(max_retries=1, base_delay_s=0.001,
                                                                          max_delay_s=0.01))
    fake.fail_next("computePixels", 429, n=2)
    with pytest.raises(Exception):
        provider.fetch(req())
    provider.fetch(req())  # the runner's retry of the same fetch
    assert len(fake.of("compute")) == 1
    provider.fetch(req(temporal=TemporalSpec.range("2022-06-10", "2022-07-01")))  # another window: listed anew
    assert len(fake.of("compute")) == 2
    expired = fake.provider(retry=quick_retry(), listing_ttl_s=0)
    expired.fetch(req())
    expired.fetch(req())
    assert len(fake.of("compute")) == 4


# ---------------------------------------------------------------- memory / time limits (item 6)


def test_memory_limit_splits_frames_then_windows(fake, provider, req):
    sensor = SensorSpec(S2, ("B4", "B3"), 10, frames=2)
    reference = provider.fetch(req(sensor))
    n = len(fake.of("computePixels"))
    fake.fail_next("computePixels", 400, message="User memory limit exceeded.")
    r = provider.fetch(req(sensor))
    sent = [p.body for p in fake.of("computePixels")[n:]]
    assert len(sent[0]["bandIds"]) == 6 and [len(b["bandIds"]) for b in sent[1:]] == [3, 3]  # one frame each
    assert all(b["grid"] == sent[0]["grid"] for b in sent)
    assert np.array_equal(r.data, reference.data) and np.array_equal(r.valid, reference.valid)
    # one frame left: the window is halved
    n = len(fake.of("computePixels"))
    fake.fail_next("computePixels", 400, message="Computation timed out.")
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10)))
    sent = [p.body["grid"]["dimensions"] for p in fake.of("computePixels")[n:]]
    assert sent == [{"width": 64, "height": 48}, {"width": 32, "height": 48}, {"width": 32, "height": 48}]
    assert provider.splits == 2


# ---------------------------------------------------------------- concurrency (items 7, 9)


def test_providers_of_one_project_share_the_in_flight_bound(fake, req):
    a = fake.provider(retry=quick_retry(), max_request_dim=16, max_inflight=3)
    b = fake.provider(retry=quick_retry(), max_request_dim=16, max_inflight=3)
    fake.latency_s = 0.1
    threads = [threading.Thread(target=p.fetch, args=(req(),)) for p in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.of("computePixels")) == 24
    assert fake.max_in_flight <= 3


def test_the_http_pool_fits_the_calls_in_flight(fake, req, caplog):
    provider = fake.provider(retry=quick_retry(), max_request_dim=12, max_inflight=16)  # 4 x 6 = 24 windows
    fake.latency_s = 0.1
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        provider.fetch(req())
    assert fake.max_in_flight > 10  # more than requests' default pool of 10
    assert "Connection pool is full" not in caplog.text


def test_the_fake_answers_429_beyond_the_projects_concurrent_requests(fake, req):
    fake.max_concurrent, fake.latency_s = 2, 0.1
    provider = fake.provider(retry=quick_retry(), quota_retry=RetryPolicy(max_retries=20, base_delay_s=0.01,
                                                                          max_delay_s=0.05),
                             max_request_dim=16, max_inflight=4)
    r = provider.fetch(req())
    assert r.meta["retries"] > 0 and r.valid.any()


# ---------------------------------------------------------------- the fake refuses what the service refuses (item 9)


def _compute_pixels(provider, **changes):
    provider._sign_in()
    image = ee.ImageCollection(S2).mosaic().select(["B4"]).toFloat().rename(["f0_c0"])
    params = {"expression": image, "fileFormat": "NPY", "bandIds": ["f0_c0"],
              "grid": {"dimensions": {"width": 4, "height": 4}, "crsCode": "EPSG:32651",
                       "affineTransform": {"scaleX": 10.0, "shearX": 0.0, "translateX": 356450.0,
                                           "shearY": 0.0, "scaleY": -10.0, "translateY": 3453380.0}}}
    for k, v in changes.items():
        if k in ("crsCode",):
            params["grid"][k] = v
        elif k == "scaleX":
            params["grid"]["affineTransform"]["scaleX"] = v
        else:
            params[k] = v
    return ee.data.computePixels(params)


def test_the_fake_validates_compute_pixels_like_the_service(fake, provider):
    assert len(_compute_pixels(provider)) > 0  # the well-formed request is served
    for change, message in [({"bandIds": ["f0_c9"]}, "did not match any bands"),
                            ({"fileFormat": "BANANA"}, "Invalid value at 'file_format'"),
                            ({"crsCode": "EPSG:999999"}, "Invalid CRS"),
                            ({"scaleX": 0.0}, "not invertible")]:
        with pytest.raises(ee.EEException, match=message):
            _compute_pixels(provider, **change)
    assert all(r.kind == "computePixels" for r in fake.requests)


def test_the_fake_honours_bounds_and_cloud_filters(fake, provider, req):
    far = GridSpec("EPSG:32633", 400000.0, 5000000.0, 10.0, 64, 48)  # central Europe
    with pytest.raises(DataNotFoundError):
        provider.fetch(req(grid=far))
    with pytest.raises(DataNotFoundError, match="cloud cover <= 1%"):
        provider.fetch(req(SensorSpec(S2, ("B4",), 10, max_cloud_fraction=0.01)))
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10, max_cloud_fraction=0.35)))  # clouds 70, 60, ... 20 %
    assert r.meta["scenes_listed"] == 2


# ---------------------------------------------------------------- parity with STAC and local (item 10)


def test_wavelength_bands_resample_bilinear_by_default_and_qa_bands_nearest(fake, provider, req):
    r = provider.fetch(req(SensorSpec(S2, ("B4", "SCL"), 10, cloud_mask=False)))
    assert r.meta["resampling"] == "bilinear"
    e = fake.of("computePixels")[-1].body["expression"]
    assert constants(e, "Image.resample", "mode") == ["bilinear"]
    assert len([f for f, _ in calls(e) if f == "Image.resample"]) == 1
    assert "Image.addBands" in {f for f, _ in calls(e)}  # SCL joins the resampled B4 as it is (nearest)
    provider = fake.provider(retry=quick_retry(), resampling="nearest")
    provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_mask=False)))
    assert "Image.resample" not in {f for f, _ in calls(fake.of("computePixels")[-1].body["expression"])}
    with pytest.raises(SpecError, match="resampling"):
        fake.provider(resampling="lanczos")


def test_pixels_still_come_back_exactly(fake, provider, req):
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10, cloud_mask=False)))
    gx, gy = np.meshgrid(np.arange(35645, 35645 + 64), np.arange(345338, 345338 - 48, -1))
    assert np.array_equal(r.data[0, 0][r.valid[0]], value_of("f0_c0", gx, gy)[r.valid[0]])


def test_errors_are_still_typed(fake, provider, req):
    fake.fail_next("computePixels", 400, message="Image.select: Pattern 'B99' did not match any bands.")
    with pytest.raises(GEEError):
        provider.fetch(req())
