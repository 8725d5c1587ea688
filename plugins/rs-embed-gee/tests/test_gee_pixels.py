"""The Raster a fetch returns against the pixels the server sent: exact grid, splitting and
reassembly, frames and empty frames, per-day frames, provenance."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from rs_embed_core.errors import DataNotFoundError
from rs_embed_core.specs import SensorSpec, TemporalSpec
from rs_embed_gee import expressions
from rs_embed_gee.fake import S2, FakeScene, global_indices, quick_retry, sample_grid, valid_of, value_of


def served(grid, frame: int, n_bands: int, fill: float = 0.0):
    """(data (C, H, W), valid (H, W)) the fake serves for one frame over the whole grid."""
    gx, gy = global_indices(expressions.pixel_grid(grid, 0, 0, grid.height, grid.width))
    valid = valid_of(gx, gy) > 0.5
    data = np.stack([value_of(f"f{frame}_c{c}", gx, gy) for c in range(n_bands)])
    return np.where(valid[None], data, np.float32(fill)), valid


def test_raster_is_the_served_pixels_on_the_request_grid(provider, req):
    r = provider.fetch(req(SensorSpec(S2, ("B4", "B3", "B2"), 10, fill_value=-1.0)))
    grid = sample_grid()
    data, valid = served(grid, 0, 3, fill=-1.0)
    assert r.grid == grid and r.bands == ("B4", "B3", "B2") and r.data.shape == (1, 3, 48, 64)
    np.testing.assert_array_equal(r.valid[0], valid)
    np.testing.assert_array_equal(r.data[0], data)
    assert 0.7 < r.valid_fraction < 0.9


@pytest.mark.parametrize("limits", [{"max_request_bytes": 4 * 4 * 300}, {"max_request_dim": 20}])
def test_requests_over_the_limits_are_split_and_reassembled_exactly(fake, req, limits):
    provider = fake.provider(retry=quick_retry(), **limits)
    r = provider.fetch(req())
    grid = sample_grid()
    pixels = fake.of("computePixels")
    assert len(pixels) > 4
    cover = np.zeros(grid.shape, int)
    for p in pixels:
        g = p.body["grid"]
        w, h = g["dimensions"]["width"], g["dimensions"]["height"]
        assert w * h * 4 * len(p.body["bandIds"]) <= limits.get("max_request_bytes", 1 << 40)
        assert max(w, h) <= limits.get("max_request_dim", 1 << 20)
        a = g["affineTransform"]
        c0 = round((a["translateX"] - grid.x0) / grid.res)
        r0 = round((grid.y0 - a["translateY"]) / grid.res)
        assert (a["scaleX"], a["scaleY"], g["crsCode"]) == (10.0, -10.0, "EPSG:32651")
        cover[r0:r0 + h, c0:c0 + w] += 1
    assert (cover == 1).all()  # every pixel asked for exactly once
    data, valid = served(grid, 0, 3)
    np.testing.assert_array_equal(r.data[0], data)
    np.testing.assert_array_equal(r.valid[0], valid)


def test_a_request_the_server_finds_too_large_is_split_again(fake, provider, req):
    fake.max_bytes = 4 * 4 * 400  # tighter than the provider's configured (Earth Engine's) limits
    r = provider.fetch(req())
    assert provider.splits >= 3
    refused = [p for p in fake.of("computePixels") if p.body["grid"]["dimensions"]["width"]
               * p.body["grid"]["dimensions"]["height"] * 16 > fake.max_bytes]
    assert refused  # the first, full-size request was refused, the halves were not
    data, valid = served(sample_grid(), 0, 3)
    np.testing.assert_array_equal(r.data[0], data)
    np.testing.assert_array_equal(r.valid[0], valid)


def test_frames_bin_the_window_and_empty_bins_are_reported_not_filled(fake, provider, req):
    fake.scenes[S2] = [s for s in fake.scenes[S2] if s.time.day in (3, 8, 28)]  # nothing in June 11-20
    r = provider.fetch(req(SensorSpec(S2, ("B4", "B3"), 10, frames=3, fill_value=-5.0)))
    assert r.data.shape == (3, 2, 48, 64)
    assert r.meta["empty_frames"] == [1]
    assert not r.valid[1].any() and (r.data[1] == -5.0).all()
    (px,) = fake.of("computePixels")  # one request for both non-empty frames, none for the empty one
    assert px.body["bandIds"] == ["f0_c0", "f0_c1", "f0_valid", "f2_c0", "f2_c1", "f2_valid"]
    for k in (0, 2):
        data, valid = served(sample_grid(), k, 2, fill=-5.0)
        np.testing.assert_array_equal(r.data[k], data)
    start, span = dt.datetime(2022, 6, 1), dt.timedelta(days=30)
    assert r.times == tuple(start + span * ((b + 0.5) / 3) for b in range(3))
    ids = [s.id for s in fake.scenes[S2]]
    assert r.meta["scenes_per_frame"] == [ids[:2], [], ids[2:]]


def test_frames_beyond_the_band_limit_go_in_several_requests(fake, req):
    provider = fake.provider(retry=quick_retry(), max_request_bands=8)  # 2 frames of 3 bands + validity
    r = provider.fetch(req(SensorSpec(S2, ("B4", "B3", "B2"), 10, frames=3)))
    assert sorted(len(p.body["bandIds"]) for p in fake.of("computePixels")) == [4, 8]  # sent in parallel
    for k in range(3):
        data, _ = served(sample_grid(), k, 3)
        np.testing.assert_array_equal(r.data[k], data)


def test_composite_none_gives_one_frame_per_acquisition_day(fake, provider, req):
    extra = FakeScene("20220608T023200_S2b", dt.datetime(2022, 6, 8, 2, 32))  # a second tile on June 8
    fake.scenes[S2] = sorted(fake.scenes[S2] + [extra], key=lambda s: s.time)
    r = provider.fetch(req(SensorSpec(S2, ("B4",), 10, composite="none")))
    days = sorted({s.time.date() for s in fake.scenes[S2]})
    assert r.data.shape[0] == len(days) == 6
    assert [t.date() for t in r.times] == days
    june8 = r.meta["scenes_per_frame"][1]
    assert sorted(june8) == sorted(["20220608T023100_S2", extra.id])
    assert r.meta["frames"] == 6 and r.meta["composite"] == "none"


def test_provenance_lists_scenes_ids_cloud_and_clear_fractions(fake, provider, req):
    r = provider.fetch(req())
    m = r.meta
    assert m["provider"] == "gee" and m["project"] == "fake-project" and m["collection"] == S2
    assert m["cloud_mask"] == "cloud_score_plus" and m["cloud_threshold"] == 0.6
    assert m["image_ids"] == [s.id for s in fake.scenes[S2]]
    first = m["scenes"][0]
    assert first["id"] == fake.scenes[S2][0].id and first["time"] == "2022-06-03T02:31:00"
    assert first["clear"] == pytest.approx(0.3) and first["cloud_cover"] == pytest.approx(0.7)
    assert m["scene_cloud_property"] == "CLOUDY_PIXEL_PERCENTAGE"
    assert m["retries"] == 0 and m["scenes_truncated"] is False
    # frames=1: the frame time is the middle of the scenes that had clear pixels
    assert r.times == (dt.datetime(2022, 6, 3, 2, 31) + (dt.datetime(2022, 6, 28, 2, 31) - dt.datetime(2022, 6, 3, 2, 31)) / 2,)


def test_scene_list_is_capped_and_the_cap_reported(fake, req):
    provider = fake.provider(retry=quick_retry(), max_scenes=2)
    r = provider.fetch(req())
    assert r.meta["scenes_listed"] == 2 and r.meta["scenes_truncated"] is True
    assert r.meta["image_ids"] == [s.id for s in fake.scenes[S2][:2]]


def test_no_scene_in_the_window_is_data_not_found_without_pixel_requests(fake, provider, req):
    with pytest.raises(DataNotFoundError, match=r"no COPERNICUS/S2_SR_HARMONIZED image .*2021-06-01, 2021-07-01"):
        provider.fetch(req(temporal=TemporalSpec.range("2021-06-01", "2021-07-01")))
    assert fake.of("computePixels") == []
