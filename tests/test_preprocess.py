"""Built-in preprocessing steps: values, bookkeeping (bands, grid, valid, times) and chains."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pytest

from rs_embed_core import registry
from rs_embed_core.card import Step
from rs_embed_core.errors import SpecError, UnknownBandError
from rs_embed_core.grid import GridSpec
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.plugins import pm
from rs_embed_core.preprocess import (
    apply_chain,
    center_crop,
    chain_to_meta,
    clip,
    fill_invalid,
    normalize,
    pad,
    resample,
    resize,
    scale,
    select_bands,
    temporal_bins,
    to_8bit,
)
from rs_embed_core.raster import Raster

BUILTIN_STEPS = ("select_bands", "scale", "clip", "to_8bit", "resize", "center_crop", "pad", "normalize",
                 "fill_invalid", "temporal_bins")


def make_raster(t=1, c=3, h=8, w=10, *, seed=0, valid=None, times=None, bands=None) -> Raster:
    rng = np.random.default_rng(seed)
    return Raster(
        data=rng.random((t, c, h, w), dtype=np.float32),
        bands=bands or tuple(f"B{i}" for i in range(c)),
        grid=GridSpec("EPSG:32651", 500000.0, 3500000.0, 10.0, w, h),
        times=times if times is not None else (None,) * t,
        valid=np.ones((t, h, w), bool) if valid is None else valid,
        meta={"provider": "test"},
    )


def test_every_builtin_is_registered_by_name():
    import rs_embed_core.preprocess as mod

    for name in BUILTIN_STEPS:
        assert registry.preprocessor(name) is getattr(mod, name)


def test_module_does_not_import_torch():
    code = "import sys, rs_embed_core.preprocess; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- bands and values ------------------------------------------------------------------------


def test_select_bands_reorders_data_and_names():
    r = make_raster(c=4)
    out = select_bands(r, bands=["B3", "B0"])
    assert out.bands == ("B3", "B0")
    np.testing.assert_array_equal(out.data[:, 0], r.data[:, 3])
    np.testing.assert_array_equal(out.data[:, 1], r.data[:, 0])
    assert out.grid == r.grid and out.valid is r.valid and out.meta == r.meta


def test_select_bands_errors():
    r = make_raster()
    with pytest.raises(UnknownBandError, match="B9.*B0"):
        select_bands(r, bands=["B0", "B9"])
    with pytest.raises(SpecError, match="more than once"):
        select_bands(r, bands=["B0", "B0"])
    with pytest.raises(SpecError, match="list"):
        select_bands(r, bands="B0")
    with pytest.raises(SpecError, match="empty"):
        select_bands(r, bands=[])


def test_scale_scalar_and_per_channel():
    r = make_raster(c=2)
    np.testing.assert_allclose(scale(r, factor=2.0, offset=-1.0).data, r.data * 2 - 1, rtol=1e-6)
    out = scale(r, factor=[1.0, 10.0], offset=[0.0, 0.5])
    np.testing.assert_allclose(out.data[:, 1], r.data[:, 1] * 10 + 0.5, rtol=1e-6)
    np.testing.assert_array_equal(out.data[:, 0], r.data[:, 0])
    with pytest.raises(SpecError, match="3 value.*2 channel"):
        scale(r, factor=[1, 2, 3])


def test_clip_bounds():
    r = make_raster()
    out = clip(r, min=0.25, max=0.75)
    assert out.data.min() == pytest.approx(0.25) and out.data.max() == pytest.approx(0.75)
    np.testing.assert_array_equal(clip(r, max=0.5).data, np.minimum(r.data, 0.5))
    assert clip(r).data is r.data
    with pytest.raises(SpecError, match="greater than"):
        clip(r, min=1, max=0)


def test_to_8bit_gives_integers_in_range():
    r = make_raster(c=1, h=6, w=7)
    r = r.replace(data=r.data * 3000 - 500)  # spans below low and above high
    out = to_8bit(r, low=0, high=2000)
    assert out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data, np.round(out.data))
    assert out.data.min() == 0 and out.data.max() == 255
    raw = to_8bit(r, low=0, high=2000, round=False).data
    np.testing.assert_array_equal(out.data, np.rint(raw))
    np.testing.assert_allclose(raw, np.clip(r.data / 2000, 0, 1) * 255, rtol=1e-6, atol=1e-4)


def test_to_8bit_rounds_half_to_even_and_checks_range():
    r = make_raster(c=1, h=1, w=3)
    r = r.replace(data=np.array([0.5, 0.0, 1.0], np.float32).reshape(1, 1, 1, 3))
    np.testing.assert_array_equal(to_8bit(r, low=0.0, high=1.0).data.ravel(), [128, 0, 255])  # 127.5 -> 128
    # per-channel ranges that put 0.0 exactly on .5 steps: numpy rounds half to even
    halves = np.array([0.5, 1.5, 2.5, 126.5])
    r4 = make_raster(c=4, h=1, w=1)
    r4 = r4.replace(data=np.zeros((1, 4, 1, 1), np.float32))
    out = to_8bit(r4, low=list(-halves), high=list(255 - halves))
    np.testing.assert_array_equal(out.data.ravel(), [0, 2, 2, 126])
    with pytest.raises(SpecError, match="high must be > low"):
        to_8bit(r, low=1.0, high=1.0)
    with pytest.raises(SpecError, match="true or false"):
        to_8bit(r, low=0, high=1, round="yes")


def test_normalize_per_channel_and_errors():
    r = make_raster(c=3)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    out = normalize(r, mean=mean, std=std)
    expect = (r.data - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]
    np.testing.assert_allclose(out.data, expect, rtol=1e-6)
    with pytest.raises(SpecError, match="std must be > 0"):
        normalize(r, mean=mean, std=[1, 0, 1])
    with pytest.raises(SpecError, match="2 value.*3 channel"):
        normalize(r, mean=[0, 0], std=std)


def test_fill_invalid_sets_only_invalid_pixels_and_keeps_mask():
    valid = np.ones((2, 8, 10), bool)
    valid[0, 2:4, 3:5] = False
    valid[1, 7, 9] = False
    r = make_raster(t=2, valid=valid)
    out = fill_invalid(r, value=-9.0)
    for t in range(2):
        assert np.all(out.data[t][:, ~valid[t]] == -9.0)
        np.testing.assert_array_equal(out.data[t][:, valid[t]], r.data[t][:, valid[t]])
    np.testing.assert_array_equal(out.valid, valid)


# --- resize numerics ------------------------------------------------------------------------

SIZES = [((37, 53), (17, 29)), ((9, 12), (40, 31)), ((50, 20), (13, 47)), ((7, 9), (3, 2)), ((64, 64), (21, 21))]


@pytest.mark.parametrize(("src", "dst"), SIZES)
@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [True, False])
def test_resample_matches_torch_interpolate(src, dst, method, antialias):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((2, 3, *src), dtype=np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode=method, align_corners=False,
                                          antialias=antialias).numpy()
    out = resample(x, *dst, method=method, antialias=antialias)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=5e-6)


@pytest.mark.parametrize(("src", "dst"), [*SIZES, ((5, 6), (10, 12))])
def test_resample_nearest_matches_torch(src, dst):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).random((1, 2, *src), dtype=np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode="nearest").numpy()
    np.testing.assert_array_equal(resample(x, *dst, method="nearest"), ref)


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_model_input_size_matches_torch(method, antialias):
    """A 12-band 410x410 reflectance patch to 224x224: large indices stress float32 index maths."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(3).random((1, 12, 410, 410), dtype=np.float32) * 10000
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(224, 224), mode=method,
                                          align_corners=False, antialias=antialias).numpy()
    out = resample(x, 224, 224, method=method, antialias=antialias)
    np.testing.assert_allclose(out, ref, rtol=0, atol=5e-6 * 10000)


@pytest.mark.parametrize(("src", "dst", "first"), [((300, 1000), (100, 900), (300, 100, 1000)),
                                                   ((1200, 300), (1100, 100), (300, 100, 1200))])
def test_resample_in_serial_blocks_matches_torch(src, dst, first):
    """Wide inputs: each block's matrix product is cut along the other axis (kept under OpenBLAS's threading
    threshold); the pieces must join exactly where torch puts them. `first`: the first pass's (in, out, free)."""
    torch = pytest.importorskip("torch")
    from rs_embed_core import preprocess

    x = np.random.default_rng(5).random((1, 2, *src), dtype=np.float32)
    n_in, n_out, free = first
    assert max(d.size for *_, d, _ in preprocess._blocks(n_in, n_out, "bicubic", True)) * free > \
        preprocess._BLAS_SERIAL  # really cut
    for antialias in (True, False):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode="bicubic", align_corners=False,
                                              antialias=antialias).numpy()
        np.testing.assert_allclose(resample(x, *dst, method="bicubic", antialias=antialias), ref, rtol=0, atol=5e-6)


@pytest.mark.parametrize(("src", "dst"), [((410, 410), (224, 224)), ((97, 61), (32, 20))])
def test_resample_bicubic_antialias_matches_pil(src, dst):
    Image = pytest.importorskip("PIL.Image")
    x = np.random.default_rng(4).random(src, dtype=np.float32)
    ref = np.asarray(Image.fromarray(x).resize((dst[1], dst[0]), Image.BICUBIC))  # float "F" image
    out = resample(x[None, None], *dst, method="bicubic", antialias=True)[0, 0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=3e-5)  # PIL works in double, torch/us in float


@pytest.mark.parametrize("method", ["bilinear", "bicubic", "nearest"])
def test_resize_keeps_constant_image_and_nan_locality(method):
    x = np.full((1, 1, 30, 40), 7.0, np.float32)
    np.testing.assert_allclose(resample(x, 11, 13, method=method), 7.0, rtol=1e-6)
    x[0, 0, 0, 0] = np.nan  # one bad pixel must not poison the whole output
    out = resample(x, 11, 13, method=method)
    assert np.isnan(out).sum() <= 4


def test_resize_bookkeeping_grid_and_valid():
    valid = np.zeros((1, 8, 8), bool)
    valid[0, 1::2, 1::2] = True  # exactly the pixels that hold 2x-downscale centres
    valid[0, 3, 5] = False
    r = make_raster(h=8, w=8, valid=valid)
    down = resize(r, size=4, method="bicubic")
    assert down.shape == (1, 3, 4, 4)
    assert down.grid == r.grid.resized(4, 4)
    assert down.grid.bounds == pytest.approx(r.grid.bounds)
    np.testing.assert_array_equal(down.valid[0], valid[0, 1::2, 1::2])
    assert not down.valid[0, 1, 2]

    small = make_raster(h=4, w=3, valid=np.array([[[1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 1, 0]]], bool))
    up = resize(small, size=[8, 6])
    assert up.grid.shape == (8, 6) and up.grid.bounds == pytest.approx(small.grid.bounds)
    np.testing.assert_array_equal(up.valid[0], np.repeat(np.repeat(small.valid[0], 2, 0), 2, 1))


def test_resize_nearest_mask_follows_sampled_pixel():
    torch = pytest.importorskip("torch")
    valid = np.random.default_rng(5).random((1, 9, 7)) > 0.3
    r = make_raster(h=9, w=7, valid=valid)
    out = resize(r, size=[5, 4], method="nearest")
    ref = torch.nn.functional.interpolate(torch.from_numpy(valid[None].astype(np.float32)), size=(5, 4),
                                          mode="nearest").numpy()[0].astype(bool)
    np.testing.assert_array_equal(out.valid, ref)


def test_resize_rectangular_footprint_gets_rectangular_pixels():
    out = resize(make_raster(h=8, w=10), size=5)
    assert out.grid.res == pytest.approx(20.0) and out.grid.yres == pytest.approx(16.0)


# torchvision's rule (Resize(int)): short side -> size, long side -> int(size * long / short)
@pytest.mark.parametrize(("hw", "size", "expect"), [((30, 50), 20, (20, 33)), ((50, 30), 20, (33, 20)),
                                                     ((41, 97), 13, (13, 30)), ((224, 224), 7, (7, 7))])
def test_resize_shortest_side_follows_torchvision_rule(hw, size, expect):
    out = resize(make_raster(h=hw[0], w=hw[1]), size=size, shortest_side=True)
    assert out.shape[-2:] == expect and out.grid.shape == expect
    assert out.grid.bounds == pytest.approx(make_raster(h=hw[0], w=hw[1]).grid.bounds)


def test_resize_parameter_errors():
    r = make_raster()
    with pytest.raises(SpecError, match="method"):
        resize(r, size=4, method="lanczos")
    with pytest.raises(SpecError, match="size"):
        resize(r, size=0)
    with pytest.raises(SpecError, match="size"):
        resize(r, size=[4, 4, 4])
    with pytest.raises(SpecError, match="shortest_side"):
        resize(r, size=[4, 5], shortest_side=True)
    assert resize(r, size=[8, 10]) is r


# --- windows ------------------------------------------------------------------------------


# offsets by torchvision's rule int(round((H - h) / 2)), Python rounding half-to-even: 2.5 -> 2, 3.5 -> 4
@pytest.mark.parametrize(("hw", "size", "top", "left"), [((9, 11), 4, 2, 4), ((11, 9), [4, 6], 4, 2),
                                                         ((10, 10), 10, 0, 0), ((8, 7), [3, 4], 2, 2)])
def test_center_crop_window_and_grid(hw, size, top, left):
    valid = np.random.default_rng(6).random((1, *hw)) > 0.5
    r = make_raster(h=hw[0], w=hw[1], valid=valid)
    out = center_crop(r, size=size)
    h, w = (size, size) if isinstance(size, int) else size
    np.testing.assert_array_equal(out.data, r.data[:, :, top:top + h, left:left + w])
    np.testing.assert_array_equal(out.valid, valid[:, top:top + h, left:left + w])
    assert out.grid.shape == (h, w) and out.grid.res == r.grid.res
    assert out.grid.x0 == r.grid.x0 + left * r.grid.res and out.grid.y0 == r.grid.y0 - top * r.grid.res


def test_center_crop_larger_than_raster_is_an_error():
    with pytest.raises(SpecError, match="larger than the raster"):
        center_crop(make_raster(h=8, w=10), size=9)


def test_pad_centres_marks_padding_invalid_and_grows_grid():
    r = make_raster(t=2, h=5, w=6)
    out = pad(r, size=[8, 9], value=-1.0)
    assert out.shape == (2, 3, 8, 9)
    top, left = 1, 1  # (8-5)//2, (9-6)//2; the odd extra pixel goes bottom/right
    np.testing.assert_array_equal(out.data[:, :, top:top + 5, left:left + 6], r.data)
    inner = np.zeros((8, 9), bool)
    inner[top:top + 5, left:left + 6] = True
    assert np.all(out.data[:, :, ~inner] == -1.0)
    np.testing.assert_array_equal(out.valid, np.broadcast_to(inner, (2, 8, 9)))
    assert out.grid.x0 == r.grid.x0 - left * r.grid.res and out.grid.y0 == r.grid.y0 + top * r.grid.res
    # the original footprint sits inside the padded one, on the same lattice
    lb, bb, rb, tb = out.grid.bounds
    l0, b0, r0, t0 = r.grid.bounds
    assert lb < l0 and r0 < rb and bb < b0 and t0 < tb and out.grid.res == r.grid.res


def test_pad_only_grows():
    r = make_raster(h=5, w=6)
    assert pad(r, size=4) is r
    out = pad(r, size=[4, 10])
    assert out.shape[-2:] == (5, 10) and out.grid.y0 == r.grid.y0
    assert not out.valid[0, :, :2].any() and out.valid[0, :, 2:8].all() and not out.valid[0, :, 8:].any()


# --- time ----------------------------------------------------------------------------------


def _days(*ds):
    base = dt.datetime(2022, 6, 1, tzinfo=dt.timezone.utc)
    return tuple(base + dt.timedelta(days=d) for d in ds)


def test_temporal_bins_median_of_valid_frames_per_bin():
    times = _days(0, 1, 2, 10, 11, 12)
    valid = np.ones((6, 8, 10), bool)
    valid[1, 0, 0] = False  # pixel (0,0) in bin 0: median over frames 0 and 2 only
    r = make_raster(t=6, valid=valid, times=times)
    out = temporal_bins(r, n=2)
    assert out.shape == (2, 3, 8, 10)
    np.testing.assert_allclose(out.data[0, :, 1:, :], np.median(r.data[0:3, :, 1:, :], axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.data[1], np.median(r.data[3:6], axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.data[0, :, 0, 0], (r.data[0, :, 0, 0] + r.data[2, :, 0, 0]) / 2, rtol=1e-6)
    assert out.valid.all()
    assert out.times == _days(3, 9)  # interval centres
    assert out.grid == r.grid and out.bands == r.bands


def test_temporal_bins_mean_reducer():
    r = make_raster(t=4, times=_days(0, 1, 5, 6))
    out = temporal_bins(r, n=2, reducer="mean")
    np.testing.assert_allclose(out.data[0], r.data[:2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.data[1], r.data[2:].mean(axis=0), rtol=1e-6)


def test_temporal_bins_fill_from_nearest_bin_and_validity():
    times = _days(0, 1, 9, 10)  # three bins of 10/3 days: the middle one has no frame
    valid = np.ones((4, 8, 10), bool)
    valid[2:, 4, 4] = False  # pixel (4,4) has no observation in the last bin -> takes bin 1 <- bin 0
    valid[:, 7, 9] = False  # pixel (7,9) is never observed
    r = make_raster(t=4, valid=valid, times=times)
    out = temporal_bins(r, n=3)
    first = np.median(r.data[:2], axis=0)
    seen = np.ones((8, 10), bool)
    seen[7, 9] = False
    np.testing.assert_allclose(out.data[0][:, seen], first[:, seen], rtol=1e-6)
    # never observed: the plain median of all frames, as delivered
    np.testing.assert_allclose(out.data[:, :, 7, 9], np.median(r.data[:, :, 7, 9], axis=0)[None].repeat(3, 0),
                               rtol=1e-6)
    np.testing.assert_array_equal(out.data[1], out.data[0])  # tie between bins 0 and 2 -> earlier
    np.testing.assert_allclose(out.data[2, :, 0, 0], np.median(r.data[2:, :, 0, 0], axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.data[2, :, 4, 4], first[:, 4, 4], rtol=1e-6)
    np.testing.assert_array_equal(out.valid, np.broadcast_to(seen, (3, 8, 10)))
    assert np.isfinite(out.data).all()


def test_temporal_bins_unknown_times_spread_by_index():
    r = make_raster(t=4)
    out = temporal_bins(r, n=2)
    np.testing.assert_allclose(out.data[0], np.median(r.data[:2], axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.data[1], np.median(r.data[2:], axis=0), rtol=1e-6)
    assert out.times == (None, None)


def test_temporal_bins_errors():
    r = make_raster(t=2)
    with pytest.raises(SpecError, match="positive int"):
        temporal_bins(r, n=0)
    with pytest.raises(SpecError, match="reducer"):
        temporal_bins(r, n=1, reducer="max")


# --- chains and plugins --------------------------------------------------------------------


def test_apply_chain_with_tuples_equals_manual_composition():
    valid = np.ones((1, 8, 10), bool)
    valid[0, 0, :] = False
    r = make_raster(c=4, valid=valid)
    chain = [("select_bands", {"bands": ["B2", "B1", "B0"]}), ("scale", {"factor": 2.0}),
             "fill_invalid", Step("resize", {"size": 4}), {"name": "normalize", "params": {"mean": 1, "std": 2}}]
    out = apply_chain(r, chain)
    manual = normalize(resize(fill_invalid(scale(select_bands(r, bands=["B2", "B1", "B0"]), factor=2.0)), size=4),
                       mean=1, std=2)
    np.testing.assert_array_equal(out.data, manual.data)
    np.testing.assert_array_equal(out.valid, manual.valid)
    assert out.bands == ("B2", "B1", "B0") and out.grid == r.grid.resized(4, 4)


def test_apply_chain_errors_name_the_step():
    r = make_raster()
    with pytest.raises(SpecError, match="unknown preprocessing step 'blur'"):
        apply_chain(r, [("blur", {})])
    with pytest.raises(SpecError, match="'resize'.*bad parameters"):
        apply_chain(r, [("resize", {"sise": 4})])
    with pytest.raises(SpecError, match="'resize'.*bad parameters"):
        apply_chain(r, [("resize", {})])  # size is required
    with pytest.raises(UnknownBandError, match="step 1 'select_bands'.*B7"):
        apply_chain(r, [("clip", {"min": 0}), ("select_bands", {"bands": ["B7"]})])
    with pytest.raises(SpecError, match="'normalize'.*std must be > 0"):
        apply_chain(r, [("normalize", {"mean": 0, "std": 0})])


class _CountingPlugin:
    """A plugin adding one step, registered in-process like a third-party package would be."""

    def __init__(self):
        self.calls = 0

    def add(self, raster, amount=1.0):
        self.calls += 1
        return raster.replace(data=raster.data + np.float32(amount))

    @hookimpl
    def register_preprocessors(self, register):
        register("add_constant", self.add)


@pytest.fixture
def counting_plugin():
    plugin = _CountingPlugin()
    registry.tables()  # built-ins loaded first, as in a real process
    pm.register(plugin)
    try:
        yield plugin
    finally:
        pm.unregister(plugin)


def test_plugin_step_is_found_by_apply_chain(counting_plugin):
    r = make_raster()
    out = apply_chain(r, [("add_constant", {"amount": 3.0}), ("clip", {"max": 3.5})])
    np.testing.assert_allclose(out.data, np.minimum(r.data + 3, 3.5), rtol=1e-6)
    assert counting_plugin.calls == 1


def test_plugin_step_disappears_when_unregistered():
    plugin = _CountingPlugin()
    pm.register(plugin)
    pm.unregister(plugin)
    with pytest.raises(SpecError, match="add_constant"):
        apply_chain(make_raster(), ["add_constant"])


def test_chain_parameters_checked_before_any_step_runs(counting_plugin):
    with pytest.raises(SpecError, match="'scale'"):
        apply_chain(make_raster(), ["add_constant", ("scale", {"factr": 2})])
    assert counting_plugin.calls == 0


def test_chain_to_meta_is_json_friendly():
    steps = [Step("resize", {"size": (224, 224), "method": "bicubic"}), ("scale", {"factor": np.float32(0.5)}),
             "fill_invalid", {"name": "normalize", "params": {"mean": np.array([1.0, 2.0]), "std": [1, 1]}}]
    meta = chain_to_meta(steps)
    assert meta == [
        {"name": "resize", "params": {"size": [224, 224], "method": "bicubic"}},
        {"name": "scale", "params": {"factor": 0.5}},
        {"name": "fill_invalid", "params": {}},
        {"name": "normalize", "params": {"mean": [1.0, 2.0], "std": [1, 1]}},
    ]
    assert json.loads(json.dumps(meta)) == meta
    # the recorded chain runs again to the same result
    r = make_raster(h=6, w=6)
    a = apply_chain(r, [("resize", {"size": [3, 3]}), ("scale", {"factor": 0.5})])
    b = apply_chain(r, chain_to_meta([("resize", {"size": [3, 3]}), ("scale", {"factor": 0.5})]))
    np.testing.assert_array_equal(a.data, b.data)
