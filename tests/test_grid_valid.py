"""Per-cell valid masks of grid embeddings: exact fractions, NaN where a cell saw no valid input, the same
mask whole / tiled / batched / exported (Zarr, GeoTIFF, npz) and in to_xarray."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rs_embed import OutputSpec, TileSpec, get_embedding, get_embeddings_batch
from rs_embed_core.assemble import cell_valid
from rs_embed_core.grid import GridSpec
from rs_embed_core.raster import Raster

from test_tiling import Blocks, aligned_point
from world_plugin import WINDOW

X_CUT = 350_100.0  # aligned_point's grids start at x = 350 000 m: pixels left of this line (10 px) are nodata


pytestmark = pytest.mark.usefixtures("world")


class Holed(Blocks):
    """Blocks with a nodata strip: every pixel whose centre lies left of X_CUT is invalid."""

    def fetch(self, req):
        r = super().fetch(req)
        valid = np.broadcast_to(np.asarray(req.grid.x_coords()) >= X_CUT, r.valid.shape).copy()
        return r.replace(valid=valid)


def expected_cells(n_px: int, cells: int, tok: int = 8) -> np.ndarray:
    """The mask written out by hand: ROI pixels padded with nodata to whole tokens, then token means."""
    valid = np.zeros((cells * tok, cells * tok))
    valid[:n_px, 10:n_px] = 1.0  # columns 0..9 are left of X_CUT
    return valid.reshape(cells, tok, cells, tok).mean(axis=(1, 3))


def brute_force(valid: np.ndarray, width: int, height: int) -> np.ndarray:
    """Each pixel split into height x width sub-pixels and each cell into H x W: the shares as plain means."""
    t, h, w = valid.shape
    fine = np.repeat(np.repeat(valid.mean(axis=0), height, axis=0), width, axis=1)  # (h*height, w*width)
    return fine.reshape(height, h, width, w).mean(axis=(1, 3))


@pytest.mark.parametrize("shape,cells", [((16, 16), (4, 4)), ((10, 7), (4, 3)), ((5, 9), (14, 14)), ((3, 3), (1, 1))])
def test_cell_fractions_are_exact_area_shares(shape, cells):
    rng = np.random.default_rng(0)
    valid = rng.random((2, *shape)) > 0.4
    r = Raster(np.zeros((2, 1, *shape)), ("a",), GridSpec("EPSG:32651", 0, 0, 10, shape[1], shape[0]), (None, None),
               valid)
    got = cell_valid(r, cells[1], cells[0])
    assert got.shape == cells and got.dtype == np.float32
    np.testing.assert_allclose(got, brute_force(valid, cells[1], cells[0]), atol=1e-6)
    full = cell_valid(r.replace(valid=np.ones_like(valid)), cells[1], cells[0])
    none = cell_valid(r.replace(valid=np.zeros_like(valid)), cells[1], cells[0])
    assert (full == 1.0).all() and (none == 0.0).all()  # exact: no rounding dust at either end


def test_a_whole_roi_grid_has_its_mask_and_nan_where_no_valid_input():
    e = get_embedding("tiny_test_model", aligned_point(32), WINDOW, OutputSpec.grid(), backend=Holed())
    want = expected_cells(32, 4)  # column 0: no valid pixel; column 1: 6 of 8 columns valid
    np.testing.assert_array_equal(e.valid, want.astype(np.float32))
    assert want[0, 0] == 0.0 and want[0, 1] == 0.75
    assert np.isnan(e.data[:, :, 0]).all() and np.isfinite(e.data[:, :, 1:]).all()
    assert e.meta["valid_fraction"] == pytest.approx(float(e.valid.mean()))  # the cells partition the input


def test_a_tiled_grid_stitches_the_tiles_masks():
    p = aligned_point(84)  # 3 x 3 tiles of 32 px; the last token row/column reaches 4 px past the ROI
    e = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=Holed(), input_prep="tile")
    assert e.meta["tiling"]["tiles"] == 9 and e.data.shape == (8, 11, 11)
    want = expected_cells(84, 11)
    np.testing.assert_array_equal(e.valid, want.astype(np.float32))
    assert want[-1, 5] == 0.5 and want[-1, -1] == 0.25  # the last row of cells reaches half past the ROI edge
    assert np.array_equal(np.isnan(e.data).all(axis=0), want == 0) and not np.isnan(e.data[:, want > 0]).any()
    shifted = get_embedding("tiny_test_model", aligned_point(88), WINDOW, OutputSpec.grid(), backend=Holed(),
                            input_prep=TileSpec(overlap=8))
    np.testing.assert_array_equal(shifted.valid, expected_cells(88, 11).astype(np.float32))


def test_mask_agrees_single_batch_tiled_and_resize():
    rois = [aligned_point(32), aligned_point(84)]
    batch = get_embeddings_batch("tiny_test_model", rois, WINDOW, OutputSpec.grid(), backend=Holed(),
                                 input_prep="tile", batch_size=4)
    for r, b in zip(rois, batch):
        s = get_embedding("tiny_test_model", r, WINDOW, OutputSpec.grid(), backend=Holed(), input_prep="tile")
        np.testing.assert_array_equal(s.valid, b.valid)
        np.testing.assert_array_equal(s.data, b.data)
    whole = get_embedding("tiny_test_model", rois[0], WINDOW, OutputSpec.grid(), backend=Holed())
    np.testing.assert_array_equal(whole.valid, batch[0].valid)  # one tile == resize
    np.testing.assert_array_equal(whole.data, batch[0].data)
    pooled = get_embedding("tiny_test_model", rois[0], WINDOW, OutputSpec.pooled(), backend=Holed())
    assert pooled.valid is None and np.isfinite(pooled.data).all()


def test_to_xarray_carries_the_mask():
    pytest.importorskip("xarray")
    e = get_embedding("tiny_test_model", aligned_point(32), WINDOW, OutputSpec.grid(), backend=Holed())
    da = e.to_xarray()
    assert da["valid"].dims == ("y", "x")
    np.testing.assert_array_equal(da["valid"].values, e.valid)
    assert int(da.where(da.valid > 0).count("band").astype(bool).sum()) == 12  # 3 of 4 columns kept


@pytest.mark.parametrize("layout,fmt", [("combined", "parquet"), ("per_item", "parquet"), ("combined", "npz"),
                                        ("per_item", "npz")])
def test_every_export_format_keeps_the_mask(tmp_path, layout, fmt):
    pytest.importorskip("pyarrow")
    if layout == "combined" and fmt == "parquet":
        pytest.importorskip("zarr")
    from rs_embed import load_export

    rois = [aligned_point(84), aligned_point(32)]
    ref = get_embeddings_batch("tiny_test_model", rois, WINDOW, OutputSpec.grid(), backend=Holed(), input_prep="tile")
    export_batch_kw = dict(backend=Holed(), output=OutputSpec.grid(), input_prep="tile", layout=layout, format=fmt)
    from rs_embed import export_batch

    export_batch(rois, WINDOW, ["tiny_test_model"], tmp_path / "out", **export_batch_kw)
    got = load_export(tmp_path / "out")
    valid, data = got.valid["tiny_test_model"], got.embeddings["tiny_test_model"]
    assert valid.shape == (2, 11, 11)
    np.testing.assert_array_equal(valid[0], ref[0].valid)
    np.testing.assert_array_equal(valid[1, :4, :4], ref[1].valid)
    assert np.isnan(valid[1, 4:]).all() and np.isnan(valid[1, :, 4:]).all()  # padding of the smaller grid
    np.testing.assert_array_equal(data[0], ref[0].data)  # NaN cells compare equal here
    assert np.isnan(data[0][:, valid[0] == 0]).all()


def test_an_unfinished_export_reads_masks_from_its_parts(tmp_path):
    pytest.importorskip("pyarrow")
    from rs_embed import export_batch, load_export
    from rs_embed_core import export as ex

    rois = [aligned_point(32)]
    export_batch(rois, WINDOW, ["tiny_test_model"], tmp_path / "out", backend=Holed(), output=OutputSpec.grid(),
                 format="npz")
    m = tmp_path / "out" / ex.MANIFEST  # as a first run killed before it wrote its outputs leaves it
    import json

    m.write_text(json.dumps({"request": json.loads(m.read_text())["request"], "complete": False}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ex.ExportWarning)
        got = load_export(tmp_path / "out")
    np.testing.assert_array_equal(got.valid["tiny_test_model"][0], expected_cells(32, 4).astype(np.float32))


def test_export_npz_keeps_the_mask(tmp_path):
    pytest.importorskip("pyarrow")
    from rs_embed import export_npz

    p = aligned_point(32)
    ref = get_embedding("tiny_test_model", p, WINDOW, OutputSpec.grid(), backend=Holed())
    dest = export_npz(p, WINDOW, ["tiny_test_model"], tmp_path / "one.npz", backend=Holed(), output=OutputSpec.grid())
    with np.load(dest, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["tiny_test_model__valid"], ref.valid)
        np.testing.assert_array_equal(z["tiny_test_model"], ref.data)
