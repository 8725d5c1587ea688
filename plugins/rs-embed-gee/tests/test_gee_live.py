"""Opt-in: the real Earth Engine. Set RS_EMBED_GEE_LIVE=1 and EE_PROJECT (signed in with
`earthengine authenticate` or a service-account key). Not run in CI: there is no account there."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rs_embed_core.grid import grid_for
from rs_embed_core.providers import FetchRequest
from rs_embed_core.specs import PointBuffer, SensorSpec, TemporalSpec

pytestmark = pytest.mark.skipif(os.environ.get("RS_EMBED_GEE_LIVE") != "1",
                                reason="live test: set RS_EMBED_GEE_LIVE=1 and EE_PROJECT")


@pytest.fixture(autouse=True)
def _isolated():  # overrides the offline fixture: keep the real credentials
    yield


def test_live_sentinel2_summer_composite_near_shanghai():
    from rs_embed_gee import GEEProvider

    provider = GEEProvider()
    sensor = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"), 10, frames=2)
    grid = grid_for(PointBuffer(121.5, 31.2, 640), 10)
    provider.check(sensor)
    r = provider.fetch(FetchRequest(grid, TemporalSpec.range("2022-06-01", "2022-09-01"), sensor))
    assert r.data.shape == (2, 3, 128, 128)
    assert r.meta["image_ids"] and all(i.startswith("2022") for i in r.meta["image_ids"])
    ok = r.data[:, 0][r.valid]
    assert ok.size and 0 < np.median(ok) < 10000  # surface reflectance DN
