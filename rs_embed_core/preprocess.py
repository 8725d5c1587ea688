"""Built-in preprocessing steps: named, pure `Raster -> Raster` functions.

A model card declares its chain as data (`Step(name, params)`); `apply_chain` resolves every
name through the registry (so plugin steps work exactly like built-ins), checks every step's
parameters before any pixel work, then runs the steps in order. Each step keeps the Raster's
bookkeeping in step with its pixels: band names, the grid (a resize keeps the footprint, a crop
or pad is a window on the same lattice), the validity mask and the frame times.

numpy only: providers and the runner use this module without torch. `resize` reimplements
torch's `F.interpolate(..., align_corners=False)` numerics so a chain run here gives the pixels
the original model code would have fed its network.
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
import warnings
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from .card import Step
from .errors import PluginError, SpecError
from .hookspecs import hookimpl
from .raster import Raster

# ---------------------------------------------------------------------------------------------
# parameter checks


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _size_hw(size: Any, what: str = "size") -> tuple[int, int]:
    """An int (square) or [height, width] of positive ints."""
    if _is_int(size):
        h = w = int(size)
    elif isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) for s in size):
        h, w = int(size[0]), int(size[1])
    else:
        raise SpecError(f"{what} must be a positive int or [height, width], got {size!r}")
    if h <= 0 or w <= 0:
        raise SpecError(f"{what} must be positive, got {size!r}")
    return h, w


def _flag(v: Any, name: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise SpecError(f"{name} must be true or false, got {v!r}")
    return bool(v)


def _number(v: Any, name: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise SpecError(f"{name} must be a number, got {v!r}")
    return float(v)


def _per_channel(value: Any, raster: Raster, name: str) -> np.ndarray:
    """A scalar or one finite value per channel, shaped (1, C, 1, 1) to broadcast over data."""
    c = raster.shape[1]
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number or a list of {c} numbers, got {value!r}") from None
    if arr.ndim == 0:
        arr = np.full(c, float(arr))
    elif arr.ndim != 1 or arr.size != c:
        raise SpecError(
            f"{name} has {arr.size} value(s) but the raster has {c} channel(s) {list(raster.bands)}"
        )
    if not np.all(np.isfinite(arr)):
        raise SpecError(f"{name} must be finite, got {value!r}")
    return arr.reshape(1, c, 1, 1)


# ---------------------------------------------------------------------------------------------
# band and value steps


def select_bands(raster: Raster, bands: Sequence[str]) -> Raster:
    """Keep the named bands, in the given order (a model's channel order is part of its contract)."""
    if isinstance(bands, str) or not isinstance(bands, (list, tuple)):
        raise SpecError(f"select_bands: bands must be a list of band names, got {bands!r}")
    names = [str(b) for b in bands]
    if not names:
        raise SpecError("select_bands: bands is empty")
    dupes = sorted({b for b in names if names.count(b) > 1})
    if dupes:
        raise SpecError(f"select_bands: band(s) {dupes} listed more than once")
    idx = raster.band_index(names)  # UnknownBandError names what exists
    return raster.replace(data=raster.data[:, idx], bands=tuple(names))


def scale(raster: Raster, factor: Any = 1.0, offset: Any = 0.0) -> Raster:
    """x * factor + offset (scalars or one value per channel), e.g. DN -> reflectance."""
    f = _per_channel(factor, raster, "scale factor").astype(np.float32)
    o = _per_channel(offset, raster, "scale offset").astype(np.float32)
    return raster.replace(data=raster.data * f + o)


def clip(raster: Raster, min: float | None = None, max: float | None = None) -> Raster:  # noqa: A002
    """Clamp values to [min, max]; either bound may be None (open)."""
    lo = None if min is None else _number(min, "clip min")
    hi = None if max is None else _number(max, "clip max")
    if lo is not None and hi is not None and lo > hi:
        raise SpecError(f"clip: min {lo} is greater than max {hi}")
    if lo is None and hi is None:
        return raster
    out = np.clip(raster.data, lo, hi)
    return raster.replace(data=out, meta=_saturation(raster, out != raster.data, "clip"))


def _saturation(raster: Raster, clipped: np.ndarray, step: str) -> dict[str, Any]:
    """meta recording the share of valid input values a step clipped (the runner warns when it is large)."""
    valid = raster.valid[:, None]  # broadcast over the bands
    n = np.count_nonzero(valid) * clipped.shape[1]  # count_nonzero: bool .sum() converts every element first
    frac = float(np.count_nonzero(clipped & valid)) / n if n else 0.0
    prev = raster.meta.get("saturated", {})
    return {"saturated": {**prev, step: max(frac, prev.get(step, 0.0))}}


def to_8bit(raster: Raster, low: Any, high: Any, round: bool = True) -> Raster:  # noqa: A002
    """clip((x - low) / (high - low), 0, 1) * 255, kept as float32.

    Emulates the uint8 RGB images CLIP-type models were trained on. With `round`, values are
    rounded to integers half-to-even (numpy's `rint`), so outputs are integers in 0..255.
    `low`/`high` are scalars or one value per channel.
    """
    round_ = _flag(round, "to_8bit round")
    lo = _per_channel(low, raster, "to_8bit low")
    hi = _per_channel(high, raster, "to_8bit high")
    if np.any(hi <= lo):
        raise SpecError(f"to_8bit: high must be > low, got low={low!r}, high={high!r}")
    z = np.subtract(raster.data, lo, dtype=np.float64)  # (x - low) / (high - low) in float64, in place
    z /= hi - lo
    meta = _saturation(raster, (z < 0) | (z > 1), "to_8bit")
    np.clip(z, 0.0, 1.0, out=z)
    z *= 255.0
    if not round_:
        return raster.replace(data=z.astype(np.float32), meta=meta)
    out = np.empty(z.shape, np.float32)
    np.rint(z, out=out, casting="same_kind")  # rounded in float64, then stored as float32: one pass
    return raster.replace(data=out, meta=meta)


def normalize(raster: Raster, mean: Any, std: Any) -> Raster:
    """(x - mean) / std per channel, in float32 like torchvision's Normalize."""
    m = _per_channel(mean, raster, "normalize mean")
    s = _per_channel(std, raster, "normalize std")
    if np.any(s <= 0):
        raise SpecError(f"normalize: every std must be > 0, got {std!r}")
    return raster.replace(data=(raster.data - m.astype(np.float32)) / s.astype(np.float32))


def standardize(raster: Raster) -> Raster:
    """Per band: (x - mean) / std over the raster's valid pixels (all frames); std 0 -> 1.

    For inputs of unknown radiometry (8-bit RGB, uncalibrated DN): scale-free, at the cost of
    absolute brightness, which this removes.
    """
    valid = raster.valid[:, None].repeat(raster.shape[1], axis=1)
    x = np.where(valid, raster.data, np.nan).astype(np.float64)
    with warnings.catch_warnings():  # an all-invalid band is expected; it standardises to 0
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(x, axis=(0, 2, 3), keepdims=True))
        std = np.nan_to_num(np.nanstd(x, axis=(0, 2, 3), keepdims=True))
    std[std == 0] = 1.0
    return raster.replace(data=((raster.data - mean) / std).astype(np.float32))


def fill_invalid(raster: Raster, value: float = 0.0) -> Raster:
    """Set invalid pixels to `value`; the mask is kept, so they still count as invalid."""
    v = np.float32(_number(value, "fill_invalid value"))
    return raster.replace(data=np.where(raster.valid[:, None], raster.data, v))


# ---------------------------------------------------------------------------------------------
# resampling (own implementation of torch's interpolate numerics, align_corners=False)
#
# Each axis is resampled separately with a tap table: output i = sum_k w[i, k] * x[idx[i, k]].
# Finite input is summed as blocks of that (banded) weight matrix, each block a small dense product
# (`_resample_blocks`): O(out * block span), not O(out * in) like one dense matrix. Input with NaN/inf
# is summed tap by tap, which touches only each output's support, so a bad pixel stays local.


_F = np.float32  # torch computes taps for float input in float32; so do we, to match it closely


def _triangle(x: np.ndarray) -> np.ndarray:
    x = np.abs(x).astype(_F)
    return np.where(x < 1, 1 - x, 0).astype(_F)


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel (a=-0.5: PIL / torch antialias; a=-0.75: torch plain)."""
    x, a_ = np.abs(x).astype(_F), _F(a)
    near = ((a_ + 2) * x - (a_ + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a_
    return np.where(x < 1, near, np.where(x < 2, far, 0)).astype(_F)


def _taps_antialias(n_in: int, n_out: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """PIL-style filter taps, as torch's antialias=True path computes them.

    The filter (triangle, or cubic a=-0.5) is stretched by the downscale factor so every input
    pixel contributes; supports are cut at the edges and each row renormalised to sum 1.
    """
    scale = _F(n_in) / _F(n_out)
    half = _F(1 if method == "bilinear" else 2)  # filter half-width in filter units
    support = half * scale if scale >= 1 else half
    inv = _F(1) / scale if scale >= 1 else _F(1)
    centre = scale * (np.arange(n_out, dtype=_F) + _F(0.5))
    xmin = np.maximum((centre - support + _F(0.5)).astype(np.int64), 0)  # C-style truncation
    xmax = np.minimum((centre + support + _F(0.5)).astype(np.int64), n_in)
    k = int((xmax - xmin).max())
    pos = xmin[:, None] + np.arange(k)[None, :]
    arg = ((pos.astype(_F) - centre[:, None]) + 0.5) * np.float64(inv)  # float, then double: as torch
    w = _triangle(arg) if method == "bilinear" else _keys_cubic(arg, -0.5)
    w = np.where(pos < xmax[:, None], w, _F(0))
    w /= w.sum(axis=1, keepdims=True, dtype=_F)
    return np.where(pos < xmax[:, None], pos, xmax[:, None] - 1), w  # padding taps stay in support


def _taps_plain(n_in: int, n_out: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """torch's antialias=False taps: 2-tap linear or 4-tap cubic (a=-0.75), edges replicated."""
    scale = _F(n_in) / _F(n_out)
    src = (np.float64(scale) * (np.arange(n_out) + 0.5) - 0.5).astype(_F)  # double, then float: as torch
    if method == "bilinear":
        src = np.maximum(src, _F(0))  # torch clamps the linear source index at 0 (not the cubic one)
        i0 = np.floor(src).astype(np.int64)
        t = src - i0.astype(_F)
        idx = np.stack([i0, i0 + 1], axis=1)
        w = np.stack([1 - t, t], axis=1)
    else:
        i0 = np.floor(src).astype(np.int64)
        t = src - i0.astype(_F)
        idx = i0[:, None] + np.arange(-1, 3)[None, :]
        w = _keys_cubic(t[:, None] - np.arange(-1, 3, dtype=_F)[None, :], -0.75)
    return np.clip(idx, 0, n_in - 1), w


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """torch "nearest": floor(i * in/out) in float32 arithmetic, clamped (not pixel-centred)."""
    if n_out == 2 * n_in:
        return np.arange(n_out) // 2
    s = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * s).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def _centre_index(n_in: int, n_out: int) -> np.ndarray:
    """The input pixel whose cell holds each output pixel's centre."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


@lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int, method: str, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    if method == "nearest":
        idx, w = _nearest_index(n_in, n_out)[:, None], np.ones((n_out, 1))
    elif antialias:
        idx, w = _taps_antialias(n_in, n_out, method)
    else:
        idx, w = _taps_plain(n_in, n_out, method)
    idx, w = np.ascontiguousarray(idx, dtype=np.intp), np.ascontiguousarray(w, dtype=np.float32)
    idx.flags.writeable = False
    w.flags.writeable = False
    return idx, w


# A block of _BLOCK outputs and the inputs they span is one small dense matrix product. That does several
# times the multiply-adds the taps need, but in BLAS: 5x faster than a numpy pass per tap for 3 x 256^2 ->
# 224^2, 6.5x for 12 bands 410^2 -> 224^2. Each product is kept at M*N*K <= _BLAS_SERIAL: OpenBLAS hands
# larger ones to its own thread pool, which would oversubscribe the CPUs the data workers already fill.
_BLOCK = 16
_BLAS_SERIAL = 1 << 18  # OpenBLAS's threshold for threading a gemm (SMP_THRESHOLD_MIN 65536 x 4)


@lru_cache(maxsize=64)
def _blocks(n_in: int, n_out: int, method: str, antialias: bool
            ) -> tuple[tuple[int, int, int, int, np.ndarray, np.ndarray], ...]:
    """(first output, end, first input, end, dense (outputs x inputs) weights, their transpose) per block."""
    idx, w = _taps(n_in, n_out, method, antialias)
    out = []
    for o0 in range(0, n_out, _BLOCK):
        o1 = min(o0 + _BLOCK, n_out)
        lo, hi = int(idx[o0:o1].min()), int(idx[o0:o1].max()) + 1
        dense = np.zeros((o1 - o0, hi - lo), np.float32)
        rows = np.broadcast_to(np.arange(o1 - o0)[:, None], idx[o0:o1].shape)
        np.add.at(dense, (rows, idx[o0:o1] - lo), w[o0:o1])  # a tap repeated at an edge: weights summed
        dense_t = np.ascontiguousarray(dense.T)  # numpy's matmul takes BLAS only for C-ordered operands
        dense.flags.writeable = dense_t.flags.writeable = False
        out.append((o0, o1, lo, hi, dense, dense_t))
    return tuple(out)


def _resample_blocks(x: np.ndarray, axis: int, n_out: int, method: str, antialias: bool) -> np.ndarray:
    """The last (axis=-1) or second-last axis resampled by blocked matrix products."""
    last = axis == x.ndim - 1
    shape = list(x.shape)
    shape[axis] = n_out
    out = np.empty(shape, np.float32)
    free = x.shape[-2] if last else x.shape[-1]  # the other image axis, cut so each product stays serial
    for o0, o1, lo, hi, dense, dense_t in _blocks(x.shape[axis], n_out, method, antialias):
        step = max(1, _BLAS_SERIAL // dense.size)
        for f0 in range(0, free, step):
            f = slice(f0, f0 + step)
            if last:
                np.matmul(x[..., f, lo:hi], dense_t, out=out[..., f, o0:o1])
            else:
                np.matmul(dense, x[..., lo:hi, f], out=out[..., o0:o1, f])
    return out


def _resample_axis(x: np.ndarray, axis: int, n_out: int, method: str, antialias: bool, blocks: bool) -> np.ndarray:
    n_in = x.shape[axis]
    if n_in == n_out:  # every method is the identity at scale 1
        return x
    if blocks:
        return _resample_blocks(x, axis, n_out, method, antialias)
    idx, w = _taps(n_in, n_out, method, antialias)
    shape = [1] * x.ndim
    shape[axis] = n_out
    out = np.take(x, idx[:, 0], axis=axis) * w[:, 0].reshape(shape)
    tmp = np.empty_like(out)
    for k in range(1, idx.shape[1]):
        np.take(x, idx[:, k], axis=axis, out=tmp, mode="clip")  # indices are in range already
        tmp *= w[:, k].reshape(shape)
        out += tmp
    return out


def resample(data: np.ndarray, height: int, width: int, method: str = "bilinear",
             antialias: bool = True) -> np.ndarray:
    """Resample the last two axes of float32 `data` to (height, width).

    Matches torch `F.interpolate(x, (height, width), mode=method, align_corners=False,
    antialias=antialias)` on float32 input to float rounding (~1e-6 on values in [0, 1]);
    `antialias` is ignored for "nearest". The axis that shrinks most goes first (least work);
    the order changes only float rounding.
    """
    x = np.asarray(data, dtype=np.float32)
    h_axis, w_axis = x.ndim - 2, x.ndim - 1
    blocks = method != "nearest" and bool(np.isfinite(x).all())  # a NaN would spread over its block
    first, second = ((w_axis, width), (h_axis, height)) if width / x.shape[w_axis] < height / x.shape[h_axis] \
        else ((h_axis, height), (w_axis, width))
    x = _resample_axis(x, *first, method, antialias, blocks)
    return _resample_axis(x, *second, method, antialias, blocks)


_METHODS = ("bilinear", "bicubic", "nearest")


def resize(raster: Raster, size: Any, method: str = "bilinear", antialias: bool = True,
           shortest_side: bool = False) -> Raster:
    """Resample to `size` (int = square, or [h, w]); the grid keeps its footprint.

    shortest_side=True (int size only) sets the shorter side to `size` and the longer side to
    floor(size * long / short) (torchvision's rule), keeping the aspect ratio.
    Numerics: see `resample`. The valid mask is resampled by nearest pixel: an output pixel is
    valid when the input pixel holding its centre is (for method="nearest", the very pixel
    sampled). Invalid pixels' values still enter bilinear/bicubic sums: `fill_invalid` first
    when they hold garbage.
    """
    if method not in _METHODS:
        raise SpecError(f"resize: unknown method {method!r}; use one of {list(_METHODS)}")
    antialias = _flag(antialias, "resize antialias")
    _, _, h_in, w_in = raster.shape
    if _flag(shortest_side, "resize shortest_side"):
        if not _is_int(size) or size <= 0:
            raise SpecError(f"resize: shortest_side=True needs a positive int size, got {size!r}")
        short, long = (h_in, w_in) if h_in <= w_in else (w_in, h_in)
        new_long = int(int(size) * long / short)
        h, w = (int(size), new_long) if h_in <= w_in else (new_long, int(size))
    else:
        h, w = _size_hw(size, "resize size")
    if (h, w) == (h_in, w_in):
        return raster
    data = resample(raster.data, h, w, method, antialias)
    pick = _nearest_index if method == "nearest" else _centre_index
    rows, cols = pick(h_in, h), pick(w_in, w)
    valid = raster.valid[:, rows[:, None], cols[None, :]]
    return raster.replace(data=data, valid=valid, grid=raster.grid.resized(w, h))


# ---------------------------------------------------------------------------------------------
# windows


def center_crop(raster: Raster, size: Any) -> Raster:
    """Cut the central [h, w] window; offsets round((H - h) / 2) half-to-even, as torchvision."""
    h, w = _size_hw(size, "center_crop size")
    _, _, h_in, w_in = raster.shape
    if h > h_in or w > w_in:
        raise SpecError(f"center_crop: {h}x{w} is larger than the raster ({h_in}x{w_in}); pad or resize first")
    top, left = int(round((h_in - h) / 2.0)), int(round((w_in - w) / 2.0))
    win = (slice(None), slice(None), slice(top, top + h), slice(left, left + w))
    return raster.replace(data=raster.data[win], valid=raster.valid[win[1:]],
                          grid=raster.grid.window(left, top, w, h))


def pad(raster: Raster, size: Any, value: float = 0.0) -> Raster:
    """Pad (centred; odd extra pixel at the bottom/right) up to at least [h, w] with `value`.

    Padded pixels are invalid; the grid grows on the same lattice.
    """
    h, w = _size_hw(size, "pad size")
    v = _number(value, "pad value")
    t, c, h_in, w_in = raster.shape
    h_out, w_out = max(h, h_in), max(w, w_in)
    if (h_out, w_out) == (h_in, w_in):
        return raster
    top, left = (h_out - h_in) // 2, (w_out - w_in) // 2
    data = np.full((t, c, h_out, w_out), v, dtype=np.float32)
    data[:, :, top:top + h_in, left:left + w_in] = raster.data
    valid = np.zeros((t, h_out, w_out), dtype=bool)
    valid[:, top:top + h_in, left:left + w_in] = raster.valid
    return raster.replace(data=data, valid=valid, grid=raster.grid.window(-left, -top, w_out, h_out))


# ---------------------------------------------------------------------------------------------
# time


def _frame_positions(times: tuple[dt.datetime | None, ...]) -> tuple[np.ndarray, dt.datetime | None]:
    """Seconds since the first time, or frame indices when any time is unknown."""
    if any(t is None for t in times):
        return np.arange(len(times), dtype=np.float64), None
    try:
        t0 = min(times)  # type: ignore[type-var]
        pos = np.array([(t - t0).total_seconds() for t in times])  # type: ignore[operator]
    except TypeError as exc:  # naive mixed with timezone-aware
        raise SpecError(f"temporal_bins: frame times cannot be compared: {exc}") from None
    return pos, t0


def temporal_bins(raster: Raster, n: int, reducer: str = "median") -> Raster:
    """Reduce T frames to `n` frames, one per equal slice of the frames' time span.

    Frames are assigned to bins by time (the last frame closes the last bin); when any frame
    has no time, all frames are spread evenly by index instead. Each bin reduces its *valid*
    observations per pixel ("median" or "mean"). A pixel with no valid observation in a bin
    takes the value of the nearest bin (by bin distance, earlier on a tie) that has one, and
    counts as valid; only pixels with no valid observation in any frame stay invalid (they
    hold the reducer over all their frames, as the provider delivered them). Each bin's time
    is its interval's centre (None when times were unknown).
    """
    if not _is_int(n) or n <= 0:
        raise SpecError(f"temporal_bins: n must be a positive int, got {n!r}")
    if reducer not in ("median", "mean"):
        raise SpecError(f"temporal_bins: unknown reducer {reducer!r}; use 'median' or 'mean'")
    n = int(n)
    t, c, h, w = raster.shape
    if t == 0:
        raise SpecError("temporal_bins: the raster has no frames")
    pos, t0 = _frame_positions(raster.times)
    span = float(pos.max() - pos.min())
    rel = (pos - pos.min()) / span if span > 0 else np.zeros(t)
    bin_of = np.minimum((rel * n).astype(np.int64), n - 1)

    nan_reduce, plain_reduce = (np.nanmedian, np.median) if reducer == "median" else (np.nanmean, np.mean)
    observed = np.where(raster.valid[:, None], raster.data, np.float32(np.nan))
    reduced = np.full((n, c, h, w), np.nan, dtype=np.float32)
    has = np.zeros((n, h, w), dtype=bool)
    for b in range(n):
        sel = bin_of == b
        if not sel.any():
            continue
        has[b] = raster.valid[sel].any(axis=0)
        with warnings.catch_warnings():  # all-NaN pixels are expected; they get filled below
            warnings.simplefilter("ignore", RuntimeWarning)
            reduced[b] = nan_reduce(observed[sel], axis=0)

    out = reduced.copy()
    for b in range(n):
        done = has[b].copy()
        for other in sorted(range(n), key=lambda j: (abs(j - b), j))[1:]:
            need = ~done & has[other]
            if need.any():
                out[b][:, need] = reduced[other][:, need]
                done |= need
    never = ~has.any(axis=0)
    if never.any():
        out[:, :, never] = plain_reduce(raster.data, axis=0)[:, never].astype(np.float32)[None]

    if t0 is None:
        times: tuple[dt.datetime | None, ...] = (None,) * n
    else:
        times = tuple(t0 + dt.timedelta(seconds=(b + 0.5) * span / n) for b in range(n))
    valid = np.broadcast_to(~never, (n, h, w)).copy()
    return raster.replace(data=out, valid=valid, times=times)


# ---------------------------------------------------------------------------------------------
# chains


def _with_step(exc: SpecError, msg: str) -> SpecError:
    """The same error type (e.g. UnknownBandError) with the step named in its message."""
    try:
        return type(exc)(msg)
    except TypeError:
        return SpecError(msg)


@lru_cache(maxsize=256)
def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # some callables have no signature; they check their own
        return None


def check_chain(steps: Iterable[Any]) -> list[tuple[int, Step, Callable[..., Any]]]:
    """Resolve every step and bind its parameters to the step's signature, without any pixels.

    Runs before any fetch, so an unknown step or a misspelt / missing parameter is a SpecError
    naming the step before network or model work (values are checked when the step runs).
    """
    from .registry import preprocessor

    plan: list[tuple[int, Step, Callable[..., Any]]] = []
    for i, value in enumerate(steps):
        step = Step.of(value)
        fn = preprocessor(step.name)
        sig = _signature(fn)
        if sig is not None:
            try:
                sig.bind(None, **step.params)
            except TypeError as exc:
                raise SpecError(f"preprocessing step {i} {step.name!r}: bad parameters {step.params}: {exc}") from None
        plan.append((i, step, fn))
    return plan


def apply_chain(raster: Raster, steps: Iterable[Any]) -> Raster:
    """Run preprocessing steps in order; every step is resolved and its parameters bound first.

    `steps` holds `Step`s or anything `Step.of` accepts ("name", ("name", {params}),
    {"name": ..., "params": ...}). An unknown step, a missing or unexpected parameter, or a
    bad parameter value raises SpecError naming the step.
    """
    for i, step, fn in check_chain(steps):
        try:
            out = fn(raster, **step.params)
        except SpecError as exc:
            raise _with_step(exc, f"preprocessing step {i} {step.name!r} {step.params}: {exc}") from exc
        if not isinstance(out, Raster):
            raise PluginError(f"preprocessing step {step.name!r} returned {type(out).__name__}, not a Raster")
        raster = out
    return raster


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def chain_to_meta(steps: Iterable[Any]) -> list[dict[str, Any]]:
    """The chain as JSON-friendly [{"name", "params"}] for Embedding meta and manifests."""
    return [_jsonable(Step.of(s).to_dict()) for s in steps]


@hookimpl
def register_preprocessors(register: Callable[[str, Callable[..., Any]], None]) -> None:
    for fn in (select_bands, scale, clip, to_8bit, resize, center_crop, pad, normalize,
               standardize, fill_invalid, temporal_bins):
        register(fn.__name__, fn)
