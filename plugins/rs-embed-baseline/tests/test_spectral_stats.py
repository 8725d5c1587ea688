"""spectral_stats: statistics equal a direct numpy computation over exactly the valid pixels."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_baseline import BANDS, FEATURE_NAMES, SpectralStats, normalized_difference
from rs_embed_core.errors import SpecError

H, W = 37, 29  # not multiples of 8: cells of unequal size


def _raster(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance-like (1, 1, 6, H, W) and a mask with a block and scattered pixels invalid."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.01, 0.6, size=(1, 1, 6, H, W)).astype(np.float32)
    valid = rng.random((1, 1, H, W)) > 0.15
    valid[..., 5:12, 3:20] = False
    return x, valid


def _expected(x: np.ndarray, sel: np.ndarray) -> dict[str, float]:
    """The documented features, written out band by band from the raw arrays."""
    band = {name: x[0, 0, i][sel].astype(np.float64) for i, name in enumerate(BANDS)}
    chans = dict(band)
    chans["NDVI"] = (band["B8"] - band["B4"]) / (band["B8"] + band["B4"])
    chans["NDWI"] = (band["B3"] - band["B8"]) / (band["B3"] + band["B8"])
    chans["NDBI"] = (band["B11"] - band["B8"]) / (band["B11"] + band["B8"])
    chans["MNDWI"] = (band["B3"] - band["B11"]) / (band["B3"] + band["B11"])
    chans["NBR"] = (band["B8"] - band["B12"]) / (band["B8"] + band["B12"])
    out = {}
    for name, v in chans.items():
        out[f"{name}_mean"] = v.mean()
        out[f"{name}_std"] = np.sqrt(((v - v.mean()) ** 2).mean())
        out[f"{name}_p10"], out[f"{name}_p50"], out[f"{name}_p90"] = np.percentile(v, [10, 50, 90])
    return out


def _embedder() -> SpectralStats:
    e = SpectralStats(SpectralStats.card.variant())
    e.load()
    return e


def test_pooled_equals_direct_numpy_over_valid_pixels(make_ctx):
    x, valid = _raster()
    out = _embedder().forward(x, make_ctx(valid))
    assert out.pooled.shape == (1, 55) and out.pooled.dtype == np.float32
    exp = _expected(x, valid[0, 0])
    got = dict(zip(FEATURE_NAMES, out.pooled[0].tolist()))
    assert set(got) == set(exp)
    for name in FEATURE_NAMES:
        assert got[name] == pytest.approx(exp[name], rel=1e-5, abs=1e-6), name


def test_invalid_and_nan_pixels_are_excluded(make_ctx):
    x, valid = _raster()
    y = x.copy()
    y[:, :, :, ~valid[0, 0]] = np.float32(np.nan)
    y[:, :, 2, ~valid[0, 0]] = 1e9  # huge values where invalid: must not leak in
    e = _embedder()
    for want in ("pooled", "grid"):
        a, b = e.forward(x, make_ctx(valid, want)), e.forward(y, make_ctx(valid, want))
        np.testing.assert_array_equal(a.pooled, b.pooled)
        if want == "grid":
            np.testing.assert_array_equal(a.grid, b.grid)
            assert np.isfinite(b.grid).all()
    # and the mask matters: ignoring it gives different statistics
    everything = e.forward(x, make_ctx(np.ones_like(valid))).pooled
    assert not np.allclose(everything, e.forward(x, make_ctx(valid)).pooled)


def test_nonfinite_valid_pixels_count_as_invalid(make_ctx):
    x, valid = _raster()
    y = x.copy()
    y[0, 0, 4, 0, 0] = np.inf  # one band not finite -> the whole pixel is dropped
    full = valid.copy()
    full[0, 0, 0, 0] = True
    dropped = full.copy()
    dropped[0, 0, 0, 0] = False
    e = _embedder()
    np.testing.assert_array_equal(e.forward(y, make_ctx(full)).pooled, e.forward(x, make_ctx(dropped)).pooled)


def test_grid_cells_follow_the_documented_edges(make_ctx):
    x, valid = _raster(1)
    out = _embedder().forward(x, make_ctx(valid, "grid"))
    assert out.grid.shape == (1, 55, 8, 8) and out.grid.dtype == np.float32
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        r0, r1 = (i * H) // 8, ((i + 1) * H) // 8
        c0, c1 = (j * W) // 8, ((j + 1) * W) // 8
        sel = np.zeros((H, W), dtype=bool)
        sel[r0:r1, c0:c1] = True
        exp = _expected(x, sel & valid[0, 0])
        np.testing.assert_allclose(out.grid[0, :, i, j], [exp[n] for n in FEATURE_NAMES], rtol=1e-5, atol=1e-6)


def test_all_invalid_gives_documented_zeros(make_ctx):
    x, valid = _raster()
    none = np.zeros_like(valid)
    out = _embedder().forward(x, make_ctx(none, "grid"))
    assert np.array_equal(out.pooled, np.zeros((1, 55), np.float32))
    assert np.array_equal(out.grid, np.zeros((1, 55, 8, 8), np.float32))
    # an invalid block leaves only its own cells empty
    part = valid.copy()
    part[..., : H // 8, : W // 8] = False
    g = _embedder().forward(x, make_ctx(part, "grid")).grid
    assert np.all(g[0, :, 0, 0] == 0) and np.any(g[0, :, 0, 1] != 0)


def test_frames_are_pooled_together(make_ctx):
    x, valid = _raster()
    x2 = np.concatenate([x, x[:, :, :, ::-1]], axis=1)  # a second frame, flipped
    v2 = np.concatenate([valid, valid[:, :, ::-1]], axis=1)
    out = _embedder().forward(x2, make_ctx(v2))
    samples = np.concatenate([x[0, 0, 0][valid[0, 0]], x[0, 0, 0][valid[0, 0]]])
    assert out.pooled[0, FEATURE_NAMES.index("B2_p90")] == pytest.approx(np.percentile(samples, 90), rel=1e-6)


def test_tiny_roi_still_fills_every_cell(make_ctx):
    rng = np.random.default_rng(3)
    x = rng.uniform(0.05, 0.5, size=(1, 1, 6, 3, 5)).astype(np.float32)
    out = _embedder().forward(x, make_ctx(np.ones((1, 1, 3, 5), bool), "grid"))
    assert out.grid.shape == (1, 55, 8, 8)
    # each cell is one pixel: its mean is that pixel, its std 0
    assert out.grid[0, FEATURE_NAMES.index("B4_mean"), 7, 7] == pytest.approx(x[0, 0, 2, 2, 4])
    assert np.all(out.grid[0, FEATURE_NAMES.index("B4_std")] == 0)


def test_normalized_difference_edges():
    a = np.array([0.0, 0.3, 0.2, -0.1, 1e-8])
    b = np.array([0.0, 0.1, 0.2, 0.05, 0.0])
    nd = normalized_difference(a, b)
    assert nd.tolist() == pytest.approx([0.0, 0.5, 0.0, 1.0, 0.0])  # 0/0 -> 0; (-0.15)/(-0.05)=3 -> clipped
    assert np.isfinite(nd).all()


def test_wrong_mask_or_channel_count_are_typed_errors(make_ctx):
    x, valid = _raster()
    e = _embedder()
    with pytest.raises(SpecError, match="3 channels but 6 band names"):
        e.forward(x[:, :, :3], make_ctx(valid))
    with pytest.raises(SpecError, match="valid mask shape"):
        e.forward(x, make_ctx(valid[:, :, :-1]))


def test_band_order_follows_the_names_and_indices_follow_the_roles(make_ctx):
    x, valid = _raster()
    e = _embedder()
    ref = e.forward(x, make_ctx(valid)).pooled[0]
    order = [2, 1, 0, 3, 4, 5]  # B4, B3, B2, ...
    swapped = e.forward(x[:, :, order], make_ctx(valid, band_names=tuple(BANDS[i] for i in order))).pooled[0]
    ndvi = FEATURE_NAMES.index("NDVI_mean")
    assert swapped[ndvi] == ref[ndvi] and swapped[0] == ref[2 * 5]  # B4 stats now come first


def test_any_sensor_landsat_names_and_rgb(make_ctx):
    from rs_embed_baseline import band_roles, feature_names

    x, valid = _raster()
    landsat = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
    roles = band_roles(landsat, "LANDSAT/LC08/C02/T1_L2")
    assert roles == BANDS  # the band table says SR_B5 is near infrared, i.e. the indices' B8
    ctx = make_ctx(valid, band_names=landsat)
    import attrs

    from rs_embed_core.specs import SensorSpec

    ctx = attrs.evolve(ctx, sensor=SensorSpec("LANDSAT/LC08/C02/T1_L2", landsat, 30))
    out = _embedder().forward(x, ctx).pooled[0]
    assert np.array_equal(out, _embedder().forward(x, make_ctx(valid)).pooled[0])  # same data, same features
    rgb = ("red", "green", "blue")
    got = _embedder().forward(x[:, :, :3], make_ctx(valid, band_names=rgb)).pooled
    assert got.shape == (1, 15) and feature_names(rgb, band_roles(rgb, None))[0] == "red_mean"
