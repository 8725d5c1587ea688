"""Large ROIs through input_prep="tile" / "auto" / TileSpec: plans, stitching, georeferencing, agreement."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed import (
    OutputSpec, PointBuffer, SpecError, TileSpec, get_embedding, get_embeddings_batch,
)
from rs_embed_core.grid import grid_for
from rs_embed_core.raster import Raster
from rs_embed_core.tiling import AUTO_TILE_FACTOR, plan_tiles

from world_plugin import BANDS, WINDOW, WorldProvider


pytestmark = pytest.mark.usefixtures("world")


class Blocks(WorldProvider):
    """A constant per 8 x 8 px block of the world lattice (10 m pixels): each model token sees one value."""

    def fetch(self, req):
        g = req.grid
        col = (np.floor((np.asarray(g.x_coords()) - 5.0) / 80.0)).astype(np.int64)
        row = (np.floor((np.asarray(g.y_coords()) - 5.0) / 80.0)).astype(np.int64)
        base = (np.abs(row[:, None] * 7919 + col[None, :] * 104729) % 997).astype(np.float32)
        data = np.stack([base + 1000 * k for k in range(len(req.sensor.bands))])[None]
        valid = np.ones((1, g.height, g.width), bool)
        self.fetched.append(req.key)
        return Raster(data, req.sensor.bands, g, (None,), valid, {"provider": "blocks"})


def aligned_point(n_px: int) -> PointBuffer:
    """A PointBuffer whose grid is n_px wide and starts on an 80 m (8 px) block edge."""
    from pyproj import Transformer

    x0, y0 = 350_000.0, 3_450_000.0  # EPSG:32651, multiples of 80 m
    cx, cy = x0 + n_px * 5.0, y0 - n_px * 5.0
    lon, lat = Transformer.from_crs("EPSG:32651", "EPSG:4326", always_xy=True).transform(cx, cy)
    p = PointBuffer(lon, lat, n_px * 5.0)
    g = grid_for(p, 10)
    assert g.shape == (n_px, n_px) and g.x0 % 80 == 0 and g.y0 % 80 == 0
    return p


def test_constant_regions_stitch_back_exactly():
    p = aligned_point(96)  # 3 x 3 tiles of 32 px, tokens of 8 px
    e = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=Blocks(), input_prep="tile")
    assert e.data.shape == (8, 12, 12)
    raw = Blocks().fetch(_req(p)).data[0] * 1e-4  # the chain's scale step
    expected = raw.reshape(4, 12, 8, 12, 8).mean(axis=(2, 4))
    np.testing.assert_allclose(e.data[:4], expected, rtol=1e-6)
    assert np.abs(e.data[4:]).max() < 1e-6  # std inside a token: each token saw exactly one block
    g = grid_for(p, 10)
    assert (e.grid.crs, e.grid.x0, e.grid.y0, e.grid.res, e.grid.shape) == (g.crs, g.x0, g.y0, 80.0, (12, 12))
    t = e.meta["tiling"]
    assert (t["tile_size"], t["stride"], t["tiles"], t["input_size"]) == (32, 32, 9, [96, 96])


def _req(p):
    from rs_embed_core.providers import FetchRequest
    from rs_embed_core.specs import SensorSpec

    return FetchRequest(grid_for(p, 10), WINDOW, SensorSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS, 10))


def test_overlap_and_ragged_edges_have_no_seams():
    p = aligned_point(88)  # not a multiple of the tile: padding on the last row/column
    prov = Blocks()
    full = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=prov, input_prep="tile")
    over = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=prov,
                         input_prep=TileSpec(overlap=8))
    shift = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=prov,
                          input_prep=TileSpec(edge="shift"))
    assert full.data.shape == over.data.shape == shift.data.shape == (8, 11, 11)
    np.testing.assert_allclose(over.data, full.data, rtol=1e-6)
    np.testing.assert_allclose(shift.data, full.data, rtol=1e-6)
    assert over.meta["tiling"]["stride"] == 24 and over.meta["tiling"]["tiles"] > full.meta["tiling"]["tiles"]


def test_tile_equals_resize_when_the_roi_is_one_tile():
    p = aligned_point(32)
    for out in (OutputSpec.grid(), OutputSpec.pooled()):
        a = get_embedding("tiny_test_model", p, WINDOW, out, backend=WorldProvider(), input_prep="tile")
        b = get_embedding("tiny_test_model", p, WINDOW, out, backend=WorldProvider(), input_prep="resize")
        np.testing.assert_array_equal(a.data, b.data)


def test_pooled_of_a_tiled_roi_is_the_area_weighted_mean():
    p = aligned_point(88)
    grid = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=Blocks(), input_prep="tile")
    pooled = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.pooled("mean"), backend=Blocks(),
                           input_prep="tile")
    np.testing.assert_allclose(pooled.data, grid.data.mean(axis=(1, 2)), rtol=1e-6)
    assert pooled.meta["tiling"]["pooled"] == "mean of the stitched grid"


def test_batch_and_single_agree_and_tiles_share_batches():
    rois = [aligned_point(96), aligned_point(64), aligned_point(32)]
    batch = get_embeddings_batch("tiny_test_model", rois, WINDOW, OutputSpec.grid(), backend=Blocks(),
                                 input_prep="tile", batch_size=5)
    for r, b in zip(rois, batch):
        s = get_embedding("tiny_test_model", r, WINDOW, OutputSpec.grid(), backend=Blocks(), input_prep="tile")
        np.testing.assert_array_equal(s.data, b.data)
    assert [b.meta["tiling"]["tiles"] for b in batch] == [9, 4, 1]


def test_auto_tiles_only_when_resizing_would_shrink_too_much():
    assert plan_tiles("auto", (64, 64), 32) is None  # 2x: resize
    assert plan_tiles("auto", (65, 65), 32) is not None and AUTO_TILE_FACTOR == 2.0
    small = get_embedding("tiny_test_model", aligned_point(64), WINDOW, OutputSpec.grid(), backend=Blocks(),
                          input_prep="auto")
    big = get_embedding("tiny_test_model", aligned_point(96), WINDOW, OutputSpec.grid(), backend=Blocks(),
                        input_prep="auto")
    assert "tiling" not in small.meta and small.data.shape == (8, 4, 4)
    assert big.meta["tiling"]["tiles"] == 9


def test_invalid_tiling_options_fail_before_any_fetch():
    prov = Blocks()
    p = aligned_point(96)
    for bad in ("tiles", TileSpec(size=32, max_tiles=2)):
        with pytest.raises(SpecError):
            get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=prov, input_prep=bad)
    for make in (lambda: TileSpec(overlap=-1), lambda: TileSpec(size=0), lambda: TileSpec(edge="wrap"),
                 lambda: TileSpec(size=32, overlap=32), lambda: TileSpec(max_tiles=10**6)):
        with pytest.raises(SpecError):
            make()
    with pytest.raises(SpecError, match="multiple of the model's token size"):
        get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=prov, input_prep=TileSpec(overlap=3))


def test_export_accepts_the_same_option(tmp_path):
    pytest.importorskip("pyarrow")
    from rs_embed import export_batch, load_export

    rois = [aligned_point(96), aligned_point(64)]
    export_batch(rois, WINDOW, ["tiny_test_model"], tmp_path / "out", backend=Blocks(), output=OutputSpec.grid(),
                 input_prep="tile", layout="combined", format="npz")
    got = load_export(tmp_path / "out").embeddings["tiny_test_model"]
    ref = get_embeddings_batch("tiny_test_model", rois, WINDOW, OutputSpec.grid(), backend=Blocks(), input_prep="tile")
    assert got.shape == (2, 8, 12, 12)
    np.testing.assert_array_equal(got[0], ref[0].data)
    np.testing.assert_array_equal(got[1][:, :8, :8], ref[1].data)
    assert np.isnan(got[1][:, 8:]).all()
    assert load_export(tmp_path / "out").grids["tiny_test_model"][1] == ref[1].grid


def test_an_overlap_not_below_the_models_input_size_is_refused_before_any_fetch():
    from rs_embed_core.tiling import TileSpec as TS

    prov = Blocks()
    with pytest.raises(SpecError, match=r"overlap \(32\) must be smaller than the tile size \(32 px"):
        get_embedding("tiny_test_model", aligned_point(96), WINDOW, OutputSpec.grid(), backend=prov,
                      input_prep=TS(overlap=32))
    assert prov.fetched == []
    with pytest.raises(SpecError, match="smaller than the tile size"):
        plan_tiles(TS(overlap=224), (500, 500), 224)
