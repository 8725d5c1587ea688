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

import os
import warnings
from typing import Any, Mapping, Sequence

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
    """
    import rasterio
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import reproject, transform_bounds

    # rasterio warns that the in-memory mask arrays have no geotransform, though both transforms are
    # passed explicitly; catch_warnings is not thread-safe (reads run on fetch threads), so filter once
    warnings.filterwarnings("ignore", message="Dataset has no geotransform", category=NotGeoreferencedWarning)
    idx = [int(i) for i in indexes]
    overrides = _nodata_per_band(nodata, len(idx))
    env = {**network_env(), **dict(gdal_env or {})}
    h, w = grid.height, grid.width
    try:
        with rasterio.Env(**env), rasterio.open(path) as src:
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
            # per-band masks at source resolution over the ROI's window, warped by nearest pixel
            left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
            win = _source_window(src, left, bottom, right, top)
            valid = np.zeros((len(idx), h, w), bool)
            if win is not None:
                for k, (band, nd) in enumerate(zip(idx, per_band)):
                    if overrides[k] is not None:  # the override replaces the file's own masks
                        vals = src.read(band, window=win, masked=False)
                        mask = (vals != overrides[k]) & (np.isfinite(vals) if vals.dtype.kind == "f" else True)
                        mask = np.asarray(mask, np.uint8)
                    else:
                        mask = (src.read_masks(band, window=win) > 0).astype(np.uint8)
                    out = np.zeros((h, w), np.uint8)
                    reproject(mask, out, src_transform=src.window_transform(win), src_crs=src.crs,
                              dst_transform=grid.affine(), dst_crs=grid.crs, resampling=Resampling.nearest,
                              src_nodata=None, dst_nodata=0)
                    valid[k] = (out > 0) & (alpha if overrides[k] is None else True)
    except RasterioError as exc:
        raise _classify(exc, path) from None
    valid &= np.isfinite(data)
    return data, valid


def _source_window(src: Any, left: float, bottom: float, right: float, top: float) -> Any:
    """The source pixels under the ROI (one pixel of margin for resampling), or None when disjoint."""
    import math

    from rasterio.windows import Window

    if left > right:  # the ROI crosses the antimeridian of this geographic source: all columns
        left, right = src.bounds.left, src.bounds.right
    inv = ~src.transform
    cols, rows = zip(*(inv * (x, y) for x in (left, right) for y in (bottom, top)))
    c0, r0 = max(0, math.floor(min(cols)) - 1), max(0, math.floor(min(rows)) - 1)
    c1, r1 = min(src.width, math.ceil(max(cols)) + 1), min(src.height, math.ceil(max(rows)) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)
