"""Composites and frames through the provider, with SensorSpec meaning what it means for every provider."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rs_embed_core.providers.reading", reason="the core's shared reading code has not landed yet")
pytest.importorskip("rs_embed_core.providers.composite", reason="the core's shared compositing has not landed yet")

from rs_embed_core.providers import FetchRequest  # noqa: E402
from rs_embed_core.retry import RetryPolicy  # noqa: E402
from rs_embed_core.specs import SensorSpec, TemporalSpec  # noqa: E402
from rs_embed_stac import CollectionMap, StacProvider  # noqa: E402

S2 = "COPERNICUS/S2_SR_HARMONIZED"
MAP = CollectionMap("sentinel-2-l2a", {"B4": "red", "SCL": "scl"})
WINDOW = TemporalSpec.range("2022-06-01", "2022-07-01")


@pytest.fixture
def three_scenes(stac_api, files, kit):
    """Constant scenes 100 (Jun 3), 200 (Jun 8), 400 (Jun 25); the last is clouded (SCL 9) on its top half."""
    items = []
    for k, (day, value) in enumerate(((3, 100), (8, 200), (25, 400))):
        scl = np.full((100, 100), 4, np.uint8)
        if value == 400:
            scl[:50] = 9
        assets = {"red": kit.asset(kit.publish(files, f"s{k}/B04.tif", np.full((200, 200), value, np.uint16))),
                  "scl": kit.asset(kit.publish(files, f"s{k}/SCL.tif", scl, res=20.0))}
        items.append(kit.make_item(f"s{k}", f"2022-06-{day:02d}T10:00:00Z", assets, collection="sentinel-2-l2a",
                                   **{"s2:processing_baseline": "03.01"}))
    p = StacProvider(url=stac_api(items), collections={S2: MAP}, retry=RetryPolicy(max_retries=1, base_delay_s=0.01))

    def fetch(**sensor):
        return p.fetch(FetchRequest(kit.GRID, WINDOW, SensorSpec(S2, ("B4",), 10, **sensor)))

    # grid row r sits on SCL row (505 + 10 r) // 20: rows 0..49 are clouded, rows 50.. clear
    return fetch


def test_median_mosaic_least_cloudy(three_scenes):
    med = three_scenes(composite="median")
    assert med.shape == (1, 1, 100, 100) and med.valid.all()
    assert np.all(med.data[0, 0, :50] == 150.0)  # median of 100, 200 (400 is clouded there)
    assert np.all(med.data[0, 0, 50:] == 200.0)  # median of 100, 200, 400
    mos = three_scenes(composite="mosaic")
    assert np.all(mos.data[0, 0, :50] == 200.0) and np.all(mos.data[0, 0, 50:] == 400.0)  # newest clear wins
    lc = three_scenes(composite="least_cloudy")
    assert lc.data[0, 0, 0, 0] in (100.0, 200.0) and lc.valid.all()  # a fully clear scene, never the clouded one
    unmasked = three_scenes(composite="mosaic", cloud_mask=False)
    assert np.all(unmasked.data == 400.0)


def test_frames_and_empty_bins(three_scenes):
    r = three_scenes(composite="median", frames=3, fill_value=-1.0)  # bins of 10 days: Jun 1-10, 11-20, 21-30
    assert r.shape == (3, 1, 100, 100)
    assert np.all(r.data[0] == 150.0) and r.valid[0].all()
    assert not r.valid[1].any() and np.all(r.data[1] == -1.0)  # empty bin: never back-filled
    assert r.meta["empty_frames"] == [1]
    assert np.all(r.data[2, 0, 50:] == 400.0) and not r.valid[2, :50].any()
    none = three_scenes(composite="none")
    assert none.shape[0] == 3 and [t.day for t in none.times] == [3, 8, 25]
