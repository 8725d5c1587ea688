"""Reading one raster source onto a request grid: the code the local and STAC providers share.

`read_warped` warps the asked bands of a file or URL (GDAL path such as /vsicurl/https://...)
onto a GridSpec through a rasterio WarpedVRT and returns a validity mask *per band*: a pixel of
band k is valid where band k's own mask (its nodata value, an internal mask or an alpha band, or
a nodata override) is valid at the nearest source pixel, the pixel lies inside the source, and
the value is finite. Bands whose fill collars differ therefore keep their own masks instead of
"valid if any band is".

`remote_gdal_env` is the GDAL configuration for HTTP range reads, applied per read through
`rasterio.Env` (never process-wide): timeouts, no directory listing, HTTP/2 multiplexing, merged
ranges, and no GDAL retries (retries are the caller's, `rs_embed_core.retry`). Settings the user
exported in the environment win over these defaults.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import DataNotFoundError, ProviderError, TransientProviderError
from ..grid import GridSpec

HTTP_TIMEOUT_S = 30
HTTP_CONNECT_TIMEOUT_S = 10
_REMOTE_DEFAULTS = {
    "GDAL_HTTP_TIMEOUT": str(HTTP_TIMEOUT_S),
    "GDAL_HTTP_CONNECTTIMEOUT": str(HTTP_CONNECT_TIMEOUT_S),
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "0",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.vrt,.xml",
    "VSI_CACHE": "TRUE",
}
# network timeouts for every read, local files included: a .vrt may point at a host that never answers
_ALWAYS = {k: _REMOTE_DEFAULTS[k] for k in ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT")}


def network_env() -> dict[str, str]:
    """HTTP timeouts for any GDAL open or read (a local .vrt may point at a host that never answers)."""
    return {k: v for k, v in _ALWAYS.items() if k not in os.environ}


def remote_gdal_env(**overrides: Any) -> dict[str, str]:
    """GDAL options for reading over HTTP; `overrides` win, then the user's environment, then ours."""
    env = {k: v for k, v in _REMOTE_DEFAULTS.items() if k not in os.environ}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def _nodata_per_band(nodata: float | Sequence[float | None] | None, n: int) -> list[float | None]:
    if nodata is None or np.isscalar(nodata):
        return [None if nodata is None else float(nodata)] * n  # type: ignore[arg-type]
    values = list(nodata)  # type: ignore[arg-type]
    if len(values) != n:
        raise ProviderError(f"nodata has {len(values)} values for {n} bands")
    return [None if v is None else float(v) for v in values]


def _classify(exc: Exception, path: str) -> Exception:
    text = str(exc)
    low = text.lower()
    if any(s in low for s in ("timed out", "timeout", "connection", "http error code: 5", "http response code: 5",
                              "429", "too many requests", "could not resolve", "reset by peer")):
        return TransientProviderError(f"reading {path} failed: {text.splitlines()[0] if text else type(exc).__name__}")
    if any(s in low for s in ("no such file", "does not exist", "404", "not recognized as")):
        return DataNotFoundError(f"reading {path} failed: {text.splitlines()[0]}")
    return ProviderError(f"reading {path} failed: {text.splitlines()[0] if text else type(exc).__name__}")


def read_warped(
    path: str,
    grid: GridSpec,
    indexes: Sequence[int],
    *,
    resampling: str = "bilinear",
    nodata: float | Sequence[float | None] | None = None,
    gdal_env: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(data (C, H, W) float32, valid (C, H, W) bool) of the 1-based band `indexes` of `path` on `grid`.

    `nodata` overrides the file's nodata value (one value, or one per asked band; None keeps the
    file's). Resampling never mixes nodata into valid pixels (GDAL skips them per band); the
    masks are warped with nearest-neighbour so each output pixel takes its source pixel's mask.
    When the grid is the file's own lattice (same CRS and pixel size, whole-pixel offset) every
    resampling reads the source pixels themselves, so a plain window read gives the same pixels and
    masks without a warp. Local files stay open per thread (`open_dataset`), so overlapping ROIs reuse
    GDAL's decompressed blocks.
    """
    from rasterio.errors import RasterioError

    idx = [int(i) for i in indexes]
    overrides = _nodata_per_band(nodata, len(idx))
    env = {**network_env(), **dict(gdal_env or {})}
    try:
        with _env(env), open_dataset(path) as src:
            win = _aligned_window(src, grid)
            if win is not None:
                data, valid = _read_window(src, win, grid, idx, overrides)
            else:
                data, valid = _read_through_warp(src, grid, idx, overrides, resampling)
    except RasterioError as exc:
        raise _classify(exc, path) from None
    valid &= np.isfinite(data)
    return data, valid


# ---------------------------------------------------------------- open datasets, per thread

_MAX_IDLE = 64  # open datasets kept idle (file handles and GDAL block caches), least recently used dropped


def _cacheable(path: str) -> bool:
    """Local files are kept open (keyed by inode, size and mtime); URLs are not: signed URLs expire."""
    return "://" not in path and not path.startswith("/vsi")


def _env(env: Mapping[str, str]) -> Any:
    import rasterio

    return rasterio.Env(**env) if env else contextlib.nullcontext()


class _DatasetPool:
    """Idle open datasets of local files, lent to one thread at a time.

    GDAL datasets are not thread-safe but may move between threads, so a read borrows one (or opens
    one), uses it alone, and gives it back; whichever thread runs the next read (the runner's
    timeout helpers, the pool threads of each call) still finds the file open and its decompressed
    blocks cached. A file that changed (inode, size or mtime) is opened again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: OrderedDict[tuple[str, tuple[int, int, int]], list[Any]] = OrderedDict()
        self._count = 0

    @staticmethod
    def _key(path: str) -> tuple[str, tuple[int, int, int]]:
        st = os.stat(path)
        return path, (st.st_ino, st.st_size, st.st_mtime_ns)

    def borrow(self, path: str) -> Any:
        import rasterio

        key = self._key(path)
        with self._lock:
            free = self._idle.get(key)
            if free:
                self._count -= 1
                ds = free.pop()
                if not free:
                    del self._idle[key]
                return ds
        return rasterio.open(path)

    def give_back(self, path: str, ds: Any) -> None:
        if ds.closed:
            return
        try:
            key = self._key(path)
        except OSError:  # the file is gone
            ds.close()
            return
        drop = []
        with self._lock:
            for old in [k for k in self._idle if k[0] == path and k != key]:  # stale versions of the file
                stale = self._idle.pop(old)
                self._count -= len(stale)
                drop += stale
            self._idle.setdefault(key, []).append(ds)
            self._idle.move_to_end(key)
            self._count += 1
            while self._count > _MAX_IDLE:
                _, free = next(iter(self._idle.items()))
                drop.append(free.pop(0))
                self._count -= 1
                if not free:
                    self._idle.popitem(last=False)
        for d in drop:
            d.close()

    def close_all(self) -> None:
        with self._lock:
            idle = [d for free in self._idle.values() for d in free]
            self._idle.clear()
            self._count = 0
        for d in idle:
            d.close()


_pool = _DatasetPool()


@contextlib.contextmanager
def open_dataset(path: str) -> Iterator[Any]:
    """An open rasterio dataset for `path`, this thread's alone while the block runs: for a local file
    one kept open from an earlier read (see `_DatasetPool`), for a URL a fresh one, closed after."""
    import rasterio

    if not _cacheable(path):
        with rasterio.open(path) as ds:
            yield ds
        return
    ds = _pool.borrow(path)
    try:
        yield ds
    except BaseException:
        ds.close()  # a failed read may leave GDAL's state unknown: do not lend it again
        raise
    _pool.give_back(path, ds)


def close_datasets() -> None:
    """Close every idle dataset (e.g. before rewriting files in place)."""
    _pool.close_all()


def forget_datasets() -> None:
    """In a forked worker: a pool of its own. The inherited one (whose lock another thread of the parent
    may have held at the fork) is dropped untouched; its handles close when it is collected."""
    global _pool
    _pool = _DatasetPool()


# ---------------------------------------------------------------- the two read paths


_static_info: weakref.WeakKeyDictionary[Any, tuple[int | None, list[Any], tuple[Any, ...]]] = \
    weakref.WeakKeyDictionary()


def _static(src: Any) -> tuple[int | None, list[Any], tuple[Any, ...]]:
    """(1-based alpha band or None, per-band mask flags, nodata values) of an open dataset. rasterio builds
    these enum lists anew on every access (~0.07 ms a read); an open dataset's never change."""
    info = _static_info.get(src)
    if info is None:
        from rasterio.enums import ColorInterp

        interp = list(src.colorinterp)
        alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
        info = _static_info[src] = (alpha, src.mask_flag_enums, tuple(src.nodatavals))
    return info


@lru_cache(maxsize=64)
def _crs(text: str) -> Any:
    from rasterio.crs import CRS

    return CRS.from_user_input(text)


def _aligned_window(src: Any, grid: GridSpec, tol: float = 1e-6) -> Any:
    """The file window that *is* `grid` (possibly partly outside the file), when the grid lies on
    the file's own pixel lattice; else None."""
    from rasterio.windows import Window

    t = src.transform
    if src.crs is None or t.b != 0 or t.d != 0 or abs(t.a - grid.res) > tol * grid.res \
            or abs(-t.e - grid.yres) > tol * grid.yres:
        return None
    col, row = (grid.x0 - t.c) / t.a, (t.f - grid.y0) / -t.e
    if abs(col - round(col)) > tol or abs(row - round(row)) > tol:
        return None
    try:
        if _crs(grid.crs) != src.crs:
            return None
    except Exception:
        return None
    return Window(round(col), round(row), grid.width, grid.height)


def _read_window(src: Any, win: Any, grid: GridSpec, idx: list[int], overrides: list[float | None]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Plain read of the part of `win` inside the file; the rest is invalid."""
    from rasterio.enums import MaskFlags
    from rasterio.windows import Window

    h, w = grid.height, grid.width
    c0, r0 = max(0, win.col_off), max(0, win.row_off)
    c1, r1 = min(src.width, win.col_off + w), min(src.height, win.row_off + h)
    inside = (c0, r0, c1, r1) == (win.col_off, win.row_off, win.col_off + w, win.row_off + h)
    valid = np.zeros((len(idx), h, w), bool)
    if c1 <= c0 or r1 <= r0:
        return np.zeros((len(idx), h, w), np.float32), valid
    inner = Window(c0, r0, c1 - c0, r1 - r0)
    ys, xs = slice(r0 - win.row_off, r1 - win.row_off), slice(c0 - win.col_off, c1 - win.col_off)
    raw = src.read(idx, window=inner, out_dtype="float32")  # GDAL converts while it copies, as the warp does
    if inside:
        data = raw
    else:
        data = np.zeros((len(idx), h, w), np.float32)
        data[:, ys, xs] = raw
    # an alpha band (by colour interpretation) limits every band without a nodata override, as in the warp
    alpha_band, all_flags, nodatavals = _static(src)
    alpha = None if alpha_band is None else src.read(alpha_band, window=inner) > 0
    for k, band in enumerate(idx):  # an override replaces the file's own masks for its band
        o = overrides[k]
        flags = all_flags[band - 1]
        if o is not None:
            valid[k, ys, xs] = raw[k] != o
            continue
        if flags == [MaskFlags.all_valid]:
            ok = np.ones(raw[k].shape, bool)
        elif flags == [MaskFlags.nodata]:  # the mask GDAL would derive, without a second read
            ok = raw[k] != nodatavals[band - 1]
        else:  # internal mask, alpha band
            ok = src.read_masks(band, window=inner) > 0
        valid[k, ys, xs] = ok if alpha is None else ok & alpha
    return data, valid


def _read_through_warp(src: Any, grid: GridSpec, idx: list[int], overrides: list[float | None], resampling: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Any other grid: a WarpedVRT for the pixels, the per-band masks warped by nearest pixel."""
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import reproject, transform_bounds

    # rasterio warns that the in-memory mask arrays have no geotransform, though both transforms are
    # passed explicitly; catch_warnings is not thread-safe (reads run on fetch threads), so filter once
    warnings.filterwarnings("ignore", message="Dataset has no geotransform", category=NotGeoreferencedWarning)
    h, w = grid.height, grid.width
    file_nodata = [src.nodatavals[i - 1] for i in idx]
    per_band = [o if o is not None else f for o, f in zip(overrides, file_nodata)]
    shared = per_band[0] if per_band and all(v == per_band[0] for v in per_band) else None
    vrt_kw: dict[str, Any] = {"src_nodata": shared} if shared is not None else {}
    has_alpha = ColorInterp.alpha in src.colorinterp
    with WarpedVRT(src, crs=grid.crs, transform=grid.affine(), width=w, height=h, add_alpha=not has_alpha,
                   resampling=Resampling[resampling], dtype="float32", **vrt_kw) as vrt:
        data = vrt.read(idx)
        # GDAL folds nodata, internal masks, alpha and "outside the source" into this band
        alpha = vrt.read(list(vrt.colorinterp).index(ColorInterp.alpha) + 1) > 0
    # per-band masks at source resolution over the ROI's window, warped by nearest pixel in one call
    left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
    win = _source_window(src, left, bottom, right, top)
    valid = np.zeros((len(idx), h, w), bool)
    if win is None:
        return data, valid
    masks = np.empty((len(idx), int(win.height), int(win.width)), np.uint8)
    for k, band in enumerate(idx):
        if overrides[k] is not None:  # the override replaces the file's own masks
            vals = src.read(band, window=win, masked=False)
            masks[k] = (vals != overrides[k]) & (np.isfinite(vals) if vals.dtype.kind == "f" else True)
        else:
            masks[k] = src.read_masks(band, window=win) > 0
    out = np.zeros((len(idx), h, w), np.uint8)
    reproject(masks, out, src_transform=src.window_transform(win), src_crs=src.crs,
              dst_transform=grid.affine(), dst_crs=grid.crs, resampling=Resampling.nearest,
              src_nodata=None, dst_nodata=0)
    for k in range(len(idx)):
        valid[k] = (out[k] > 0) & (alpha if overrides[k] is None else True)
    return data, valid


def _source_window(src: Any, left: float, bottom: float, right: float, top: float) -> Any:
    """The source pixels under the ROI (one pixel of margin for resampling), or None when disjoint."""
    import math

    from rasterio.windows import Window

    if left > right:  # the ROI crosses the antimeridian of this geographic source: all columns
        left, right = src.bounds.left, src.bounds.right
    inv = ~src.transform
    cols, rows = zip(*(inv @ (x, y) for x in (left, right) for y in (bottom, top)))
    c0, r0 = max(0, math.floor(min(cols)) - 1), max(0, math.floor(min(rows)) - 1)
    c1, r1 = min(src.width, math.ceil(max(cols)) + 1), min(src.height, math.ceil(max(rows)) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)
