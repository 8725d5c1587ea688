"""The fast local read path gives the pixels and masks of the general warp path, and the compositing
network gives the median of a full sort."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.enums import ColorInterp  # noqa: E402
from rasterio.transform import Affine  # noqa: E402

from rs_embed_core.grid import GridSpec, grid_for  # noqa: E402
from rs_embed_core.providers import reading  # noqa: E402
from rs_embed_core.providers.composite import median  # noqa: E402
from rs_embed_core.specs import PointBuffer  # noqa: E402

SHARED_TIF = Path(__file__).resolve().parents[2] / "shared" / "data" / "landsat7_rgb_byte.tif"


def _write(path, data, transform, crs="EPSG:32651", nodata=None, mask=None, alpha=None):
    count = data.shape[0] + (alpha is not None)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=count,
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data, list(range(1, data.shape[0] + 1)))
        if mask is not None:
            dst.write_mask(mask)
        if alpha is not None:
            dst.write(alpha.astype(data.dtype), count)
            dst.colorinterp = [ColorInterp.gray] * (count - 1) + [ColorInterp.alpha]
    return str(path)


def _both(path, grid, idx, **kw):
    """(fast, general) reads of the same request; the fast one must have taken the window path."""
    with rasterio.open(path) as src:
        assert reading._aligned_window(src, grid) is not None
        overrides = reading._nodata_per_band(kw.get("nodata"), len(idx))
        slow = reading._read_through_warp(src, grid, list(idx), overrides, kw.get("resampling", "bilinear"))
    slow[1][...] &= np.isfinite(slow[0])
    fast = reading.read_warped(path, grid, idx, **kw)
    return fast, slow


def _assert_same(fast, slow, exact):
    np.testing.assert_array_equal(fast[1], slow[1])
    m = slow[1]
    if exact:
        np.testing.assert_array_equal(fast[0][m], slow[0][m])
    else:
        np.testing.assert_allclose(fast[0][m], slow[0][m], rtol=1e-6, atol=0)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(5)
    h = w = 60
    t = Affine(10, 0, 300000, 0, -10, 3460000)
    base = rng.integers(1, 5000, size=(3, h, w)).astype(np.uint16)
    holes = np.zeros((h, w), bool)
    holes[10:20, 5:40] = True
    nod = base.copy()
    nod[:, holes] = 0
    nod[1, 40:50, 40:50] = 0  # band 2 has its own collar
    keep = np.where(holes, 0, 255).astype(np.uint8)
    return t, {
        "nodata": _write(tmp_path / "nodata.tif", nod, t, nodata=0),
        "mask": _write(tmp_path / "mask.tif", base, t, mask=keep),
        "alpha": _write(tmp_path / "alpha.tif", base, t, alpha=keep),
        "plain": _write(tmp_path / "plain.tif", base, t),
        "float": _write(tmp_path / "float.tif", np.where(holes, np.nan, base).astype(np.float32), t),
    }


@pytest.mark.parametrize("kind", ["nodata", "mask", "alpha", "plain", "float"])
@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic"])
@pytest.mark.parametrize("offset", [(5, 5), (-8, 3), (30, 40), (70, 0)])  # inside, left edge, corner, outside
def test_aligned_window_read_equals_the_warp(files, kind, resampling, offset):
    t, paths = files
    grid = GridSpec("EPSG:32651", t.c + 10 * offset[0], t.f - 10 * offset[1], 10, 24, 20)
    fast, slow = _both(paths[kind], grid, [1, 2, 3], resampling=resampling)
    _assert_same(fast, slow, exact=resampling == "nearest")


def test_nodata_override_on_the_window_path(files):
    t, paths = files
    grid = GridSpec("EPSG:32651", t.c + 20, t.f - 30, 10, 40, 40)
    fast, slow = _both(paths["plain"], grid, [1, 2], nodata=[None, 77.0])
    _assert_same(fast, slow, exact=False)


def test_unaligned_grids_still_warp(files):
    t, paths = files
    with rasterio.open(paths["nodata"]) as src:
        for g in (GridSpec("EPSG:32651", t.c + 5, t.f - 10, 10, 8, 8),  # half a pixel off
                  GridSpec("EPSG:32651", t.c, t.f, 20, 8, 8),  # another pixel size
                  GridSpec("EPSG:32650", t.c, t.f, 10, 8, 8)):  # another CRS
            assert reading._aligned_window(src, g) is None


@pytest.mark.skipif(not SHARED_TIF.is_file(), reason="../shared/data is absent")
@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_real_landsat_scene_on_its_own_lattice(resampling):
    with rasterio.open(SHARED_TIF) as src:
        t, crs = src.transform, src.crs.to_string()
    grid = GridSpec(crs, t.c + t.a * 100, t.f + t.e * 80, t.a, 128, 96, res_y=-t.e)  # its pixels are not square
    fast, slow = _both(str(SHARED_TIF), grid, [1, 2, 3], resampling=resampling)
    assert fast[1].any()
    _assert_same(fast, slow, exact=resampling == "nearest")


def test_a_rewritten_file_is_read_again(tmp_path):
    t = Affine(10, 0, 300000, 0, -10, 3460000)
    path = _write(tmp_path / "x.tif", np.full((1, 20, 20), 3, np.uint16), t)
    grid = GridSpec("EPSG:32651", t.c, t.f, 10, 20, 20)
    assert (reading.read_warped(path, grid, [1])[0] == 3).all()
    _write(tmp_path / "x.tif", np.full((1, 20, 20), 9, np.uint16), t)
    assert (reading.read_warped(path, grid, [1])[0] == 9).all()


@pytest.mark.parametrize("invalid", ["none", "few pixels", "35%"])  # the three paths of `median`
@pytest.mark.parametrize("n_scenes", [1, 2, 3, 4, 5, 8, 9, 13])
def test_median_network_and_sort_agree_with_numpy(n_scenes, invalid):
    rng = np.random.default_rng(n_scenes)
    stack = rng.integers(0, 40, size=(n_scenes, 4, 16, 16)).astype(np.float32)  # many ties
    valid = np.ones((n_scenes, 16, 16), bool)
    if invalid == "35%":
        valid = rng.random((n_scenes, 16, 16)) > 0.35
        valid[:, 0, 1] = True
    if invalid != "none":  # one pixel without any observation, and some with a few
        valid[:, 0, 0] = False
        for r, c in ((3, 4), (7, 7), (15, 2)):
            valid[:, r, c] = rng.random(n_scenes) > 0.5
    med, ok = median(stack, valid)
    with warnings.catch_warnings():  # the pixel without observations is an all-NaN slice
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(np.where(valid[:, None], stack, np.nan), axis=0)
    np.testing.assert_array_equal(ok[0], valid.any(axis=0))
    np.testing.assert_array_equal(med[0][:, ok[0]], ref[:, ok[0]].astype(np.float32))
    assert np.isnan(med[0][:, ~ok[0]]).all() and (invalid == "none") == ok.all()
    stack_before = stack.copy()
    median(stack, valid)
    np.testing.assert_array_equal(stack, stack_before)  # the input is not touched


def test_sample_scene_read_uses_the_window_path(tmp_path):
    from rs_embed_core.sample import make_sample_scene

    make_sample_scene(tmp_path / "s")
    path = sorted((tmp_path / "s").rglob("*.tif"))[0]
    grid = grid_for(PointBuffer(121.5, 31.2, 300), 10)
    fast, slow = _both(str(path), grid, [1, 2, 3, 4])
    _assert_same(fast, slow, exact=False)


def test_open_files_are_reused_across_short_lived_threads(tmp_path, monkeypatch):
    """The runner reads on helper threads (its timeout), not always the same one; the file must not be
    reopened each time, and two threads never hold one dataset at once."""
    import threading

    t = Affine(10, 0, 300000, 0, -10, 3460000)
    path = _write(tmp_path / "x.tif", np.arange(400, dtype=np.uint16).reshape(1, 20, 20), t)
    grid = GridSpec("EPSG:32651", t.c, t.f, 10, 20, 20)
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    reading.close_datasets()
    for _ in range(5):
        th = threading.Thread(target=reading.read_warped, args=(path, grid, [1]))
        th.start()
        th.join()
    assert len(opened) == 1
    in_use = []
    with reading.open_dataset(path) as a, reading.open_dataset(path) as b:
        in_use += [a, b]
        assert a is not b
    reading.close_datasets()


def test_true_fraction_is_the_mean_of_a_mask():
    from rs_embed_core.raster import true_fraction

    rng = np.random.default_rng(5)
    for shape in [(3, 64, 64), (1, 7, 9), (0,), (5,)]:
        for p in (0.0, 0.37, 1.0):
            m = rng.random(shape) < p
            got = true_fraction(m)
            assert type(got) is float and got == (float(m.mean()) if m.size else 0.0)
