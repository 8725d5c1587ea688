"""mosaiks: equals a naive convolution, deterministic, 2K non-negative features, texture-sensitive
but invariant to where and in which orientation a texture sits, and blind to invalid pixels."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from rs_embed_baseline import Mosaiks, gaussian_stream, mosaiks_filters

CARD = Mosaiks.card


def _embedder(variant: str | None = None, **params) -> Mosaiks:
    var = CARD.variant(variant)
    if params:
        var = attrs.evolve(var, params={**var.params, **params},
                           pooled_dim=2 * params.get("num_filters", var.params["num_filters"]))
    e = Mosaiks(var)
    e.load()
    return e


def _naive(x: np.ndarray, valid: np.ndarray, filters: np.ndarray, bias: float, cells: int) -> np.ndarray:
    """Reference, loop by loop: (2K, cells, cells) for one image x (C, H, W), valid (H, W)."""
    k_filters, _, k, _ = filters.shape
    _, h, w = x.shape
    r = k // 2
    xp = np.pad(np.where(valid, x, 0.0), ((0, 0), (r, r), (r, r))).astype(np.float64)
    vp = np.pad(valid, r)
    conv = np.zeros((k_filters, h, w))
    for dy in range(k):
        for dx in range(k):
            conv += np.einsum("kc,chw->khw", filters[:, :, dy, dx], xp[:, dy:dy + h, dx:dx + w])
    win_ok = np.ones((h, w), bool)
    for dy in range(k):
        for dx in range(k):
            win_ok &= vp[dy:dy + h, dx:dx + w]
    act = np.concatenate([np.maximum(conv - bias, 0), np.maximum(-conv - bias, 0)])
    out = np.zeros((2 * k_filters, cells, cells))
    for i in range(cells):
        for j in range(cells):
            r0, r1 = (i * h) // cells, max(((i + 1) * h) // cells, (i * h) // cells + 1)
            c0, c1 = (j * w) // cells, max(((j + 1) * w) // cells, (j * w) // cells + 1)
            m = win_ok[r0:r1, c0:c1]
            if m.any():
                out[:, i, j] = act[:, r0:r1, c0:c1][:, m].mean(axis=1)
    return out


@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_equals_naive_convolution_pooled_and_grid(make_ctx, bias):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 1, 6, 21, 19)).astype(np.float32)
    valid = rng.random((1, 1, 21, 19)) > 0.05
    valid[..., 2:6, 4:9] = False
    e = _embedder(num_filters=16, bias=bias)
    pooled = e.forward(x, make_ctx(valid)).pooled[0]
    grid_out = e.forward(x, make_ctx(valid, "grid"))
    np.testing.assert_allclose(pooled, _naive(x[0, 0], valid[0, 0], e.filters, bias, 1)[:, 0, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grid_out.grid[0], _naive(x[0, 0], valid[0, 0], e.filters, bias, 8), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grid_out.pooled[0], pooled, rtol=1e-5, atol=1e-6)  # pooled from cell sums


def test_variants_have_2k_float32_nonnegative_features(make_ctx):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1, 6, 24, 24)).astype(np.float32)
    valid = np.ones((2, 1, 24, 24), bool)
    for name, k in [("k512", 512), ("k1024", 1024)]:
        var = CARD.variant(name)
        assert var.pooled_dim == var.grid_dim == 2 * k and var.weights is None
        out = _embedder(name).forward(x, make_ctx(valid, "grid"))
        assert out.pooled.shape == (2, 2 * k) and out.pooled.dtype == np.float32
        assert out.grid.shape == (2, 2 * k, 8, 8) and out.grid.dtype == np.float32
        assert (out.pooled >= 0).all() and (out.grid >= 0).all()
        assert (out.pooled > 0).mean() > 0.9  # the ReLU halves are not dead
    assert CARD.default_variant == "k512"


def test_deterministic_across_fresh_instances(make_ctx):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 1, 6, 40, 40)).astype(np.float32)
    valid = np.ones((1, 1, 40, 40), bool)
    a, b = _embedder(), _embedder()
    assert a.filters is not b.filters
    np.testing.assert_array_equal(a.filters, b.filters)
    np.testing.assert_array_equal(a.forward(x, make_ctx(valid)).pooled, b.forward(x, make_ctx(valid)).pooled)
    # k1024 extends k512's filter bank (one seeded stream)
    np.testing.assert_array_equal(_embedder("k1024").filters[:512], a.filters)


def test_filters_are_centred_unit_norm_gaussians():
    z = gaussian_stream(7, 200_001)
    assert z.shape == (200_001,)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs((np.abs(z) < 1).mean() - 0.6827) < 0.005  # the normal's mass within one sigma
    np.testing.assert_array_equal(gaussian_stream(7, 10), z[:10])
    assert not np.array_equal(gaussian_stream(8, 10), z[:10])
    f = mosaiks_filters(64, 6, 3, seed=7).reshape(64, -1).astype(np.float64)
    np.testing.assert_allclose(f.mean(axis=1), 0, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, rtol=1e-6)


def _texture(rng: np.random.Generator, n: int, smooth: int) -> np.ndarray:
    """A statistically isotropic 6-band field: white noise box-blurred `smooth` px, mixed across bands."""
    noise = rng.normal(size=(6, n + smooth, n + smooth))
    c = np.cumsum(np.cumsum(noise, axis=1), axis=2)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0)))
    blur = (c[:, smooth:, smooth:] - c[:, :-smooth, smooth:] - c[:, smooth:, :-smooth] + c[:, :-smooth, :-smooth])
    blur /= blur.std(axis=(1, 2), keepdims=True)
    mix = np.eye(6) + 0.5 * rng.normal(size=(6, 6))
    return np.einsum("dc,chw->dhw", mix, blur[:, :n, :n])


def test_same_texture_moved_or_rotated_matches_a_different_texture_does_not(make_ctx):
    rng = np.random.default_rng(4)
    field = _texture(rng, 300, smooth=4)
    base = field[:, :220, :220]
    moved = field[:, 60:280, 45:265]  # another window of the same field
    rotated = np.rot90(base, k=1, axes=(1, 2))
    # same pixel values, spatial structure destroyed: identical per-band distribution
    shuffled = base.reshape(6, -1)[:, rng.permutation(220 * 220)].reshape(6, 220, 220)
    e = _embedder()
    valid = np.ones((1, 1, 220, 220), bool)

    def emb(img: np.ndarray) -> np.ndarray:
        return e.forward(img[None, None].astype(np.float32), make_ctx(valid)).pooled[0].astype(np.float64)

    ref = emb(base)

    def rel(v: np.ndarray) -> float:
        return float(np.linalg.norm(v - ref) / np.linalg.norm(ref))

    d_moved, d_rot, d_shuffled = rel(emb(moved)), rel(emb(rotated)), rel(emb(shuffled))
    d_coarser = rel(emb(_texture(np.random.default_rng(4), 300, smooth=12)[:, :220, :220]))
    assert d_moved < 0.05 and d_rot < 0.05
    assert d_shuffled > 4 * max(d_moved, d_rot)
    assert d_coarser > 4 * max(d_moved, d_rot)


def test_invalid_pixels_do_not_influence_features(make_ctx):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 1, 6, 48, 40)).astype(np.float32)
    valid = np.ones((1, 1, 48, 40), bool)
    valid[..., 10:25, 5:18] = False
    valid[..., rng.random((48, 40)) < 0.02] = False
    y = x.copy()
    bad = ~valid[0, 0]
    y[0, 0][:, bad] = rng.normal(scale=100, size=(6, bad.sum()))
    garbage = y.copy()  # finite garbage: only the mask keeps it out
    y[0, 0, 3][bad] = np.nan
    e = _embedder()
    for want in ("pooled", "grid"):
        a, b = e.forward(x, make_ctx(valid, want)), e.forward(y, make_ctx(valid, want))
        np.testing.assert_array_equal(a.pooled, b.pooled)
        assert np.isfinite(b.pooled).all()
        if want == "grid":
            np.testing.assert_array_equal(a.grid, b.grid)
    ref = e.forward(x, make_ctx(valid)).pooled
    np.testing.assert_array_equal(e.forward(garbage, make_ctx(valid)).pooled, ref)
    # the mask is what keeps the garbage out
    assert not np.allclose(e.forward(garbage, make_ctx(np.ones_like(valid))).pooled, ref)


def test_no_valid_window_gives_documented_zeros(make_ctx):
    x = np.random.default_rng(6).normal(size=(1, 1, 6, 16, 16)).astype(np.float32)
    checker = (np.indices((16, 16)).sum(axis=0) % 2 == 0)[None, None]  # valid pixels, but no valid 3x3 window
    e = _embedder()
    for valid in (np.zeros((1, 1, 16, 16), bool), checker):
        out = e.forward(x, make_ctx(valid, "grid"))
        assert np.array_equal(out.pooled, np.zeros((1, 1024), np.float32))
        assert np.array_equal(out.grid, np.zeros((1, 1024, 8, 8), np.float32))


def test_frames_pool_all_windows():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1, 2, 6, 12, 12)).astype(np.float32)
    valid = np.ones((1, 2, 12, 12), bool)
    valid[0, 1, :6] = False
    e = _embedder(num_filters=8)
    from rs_embed_baseline import mosaiks_cell_sums

    s0, n0 = mosaiks_cell_sums(x[0, 0], valid[0, 0], e.filters, 0.0, 1)
    s1, n1 = mosaiks_cell_sums(x[0, 1], valid[0, 1], e.filters, 0.0, 1)
    ctx = type("Ctx", (), {"want": "pooled", "valid": valid, "band_names": ()})()
    np.testing.assert_allclose(e.forward(x, ctx).pooled[0], ((s0 + s1) / (n0 + n1)[..., None])[0, 0], rtol=1e-6)


def test_flat_image_fires_each_filter_on_one_side_only(make_ctx):
    colour = np.array([0.3, -1.2, 0.8, 2.0, -0.5, 0.1], np.float32)
    x = np.broadcast_to(colour[:, None, None], (6, 20, 20))[None, None].copy()
    e = _embedder()
    out = e.forward(x, make_ctx(np.ones((1, 1, 20, 20), bool))).pooled[0]
    c = np.einsum("kcij,c->k", e.filters.astype(np.float64), colour.astype(np.float64))
    np.testing.assert_allclose(out[:512], np.maximum(c, 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[512:], np.maximum(-c, 0), rtol=1e-4, atol=1e-6)
    assert (out >= 0).all() and np.all(np.minimum(out[:512], out[512:]) <= 1e-6)
