"""Pixel grids in true ground metres.

A spatial spec plus a GSD resolves to a GridSpec in the ROI centre's UTM zone with square
pixels whose edges sit on a global lattice (multiples of the GSD in UTM coordinates), so two
overlapping ROIs share pixels exactly and their fetches can share cache entries.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

from attrs import field, frozen

from .errors import SpecError
from .specs import BBox, PointBuffer, Spatial


@frozen
class GridSpec:
    """A north-up pixel grid: `crs` (e.g. "EPSG:32651"), top-left corner, pixel size, shape.

    Grids resolved from specs have square pixels (`res_y` is None). A preprocessing resize of
    a non-square footprint to a square model input gives rectangular pixels: `res_y` holds the
    vertical size then, so the footprint stays exact.
    """

    crs: str
    x0: float = field(converter=float)  # left edge, CRS units (metres)
    y0: float = field(converter=float)  # top edge
    res: float = field(converter=float)  # square pixel size
    width: int = field(converter=int)
    height: int = field(converter=int)
    res_y: float | None = field(default=None, converter=lambda v: None if v is None else float(v))

    def __attrs_post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise SpecError(f"grid must have a positive shape, got {self.width}x{self.height}")
        if self.res <= 0:
            raise SpecError(f"grid resolution must be > 0, got {self.res}")

    @property
    def yres(self) -> float:
        return self.res if self.res_y is None else self.res_y

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        return (self.x0, self.y0 - self.height * self.yres, self.x0 + self.width * self.res, self.y0)

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL/rasterio affine coefficients (a, b, c, d, e, f)."""
        return (self.res, 0.0, self.x0, 0.0, -self.yres, self.y0)

    def affine(self):  # -> affine.Affine, imported lazily (rasterio dependency)
        from affine import Affine

        return Affine(*self.transform)

    def x_coords(self) -> list[float]:
        return [self.x0 + (i + 0.5) * self.res for i in range(self.width)]

    def y_coords(self) -> list[float]:
        return [self.y0 - (j + 0.5) * self.yres for j in range(self.height)]

    def resized(self, width: int, height: int) -> GridSpec:
        """The same footprint divided into width x height cells (a resize, or a model's token grid)."""
        left, bottom, right, top = self.bounds
        res_x = (right - left) / width
        res_y = (top - bottom) / height
        square = math.isclose(res_x, res_y, rel_tol=1e-9)
        return GridSpec(self.crs, left, top, res_x, width, height, None if square else res_y)

    def window(self, col_off: int, row_off: int, width: int, height: int) -> GridSpec:
        """A sub-grid (crop) or super-grid (pad, negative offsets) on the same lattice."""
        return GridSpec(self.crs, self.x0 + col_off * self.res, self.y0 - row_off * self.yres,
                        self.res, width, height, self.res_y)

    def footprint_lonlat(self) -> tuple[float, float, float, float]:
        """(minlon, minlat, maxlon, maxlat) of the grid, densified edges, WGS 84."""
        t = _transformer(self.crs, "EPSG:4326")
        left, bottom, right, top = self.bounds
        xs, ys = [], []
        n = 16
        for i in range(n + 1):
            f = i / n
            for x, y in ((left + f * (right - left), bottom), (left + f * (right - left), top),
                         (left, bottom + f * (top - bottom)), (right, bottom + f * (top - bottom))):
                xs.append(x)
                ys.append(y)
        lons, lats = t.transform(xs, ys)
        ref = lons[0]  # unwrap across the antimeridian: lons stay continuous, may pass +/-180
        lons = [((lo - ref + 180.0) % 360.0) - 180.0 + ref for lo in lons]
        return (min(lons), min(lats), max(lons), max(lats))


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def utm_crs(lon: float, lat: float) -> str:
    """EPSG code of the UTM zone holding (lon, lat) (WGS 84 / UTM, north 326xx or south 327xx)."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


MAX_PIXELS_ENV = "RS_EMBED_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2**25  # 33.5 M pixels a frame (5792 x 5792): ~130 MB per float32 band
MAX_BBOX_WIDTH_DEG = 30.0  # one UTM grid stops being a faithful map far from its zone


def max_pixels() -> int:
    """The largest grid (pixels per frame) a request may ask for: $RS_EMBED_MAX_PIXELS or the default."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    try:
        return int(float(raw)) if raw else DEFAULT_MAX_PIXELS
    except ValueError:
        raise SpecError(f"{MAX_PIXELS_ENV} must be a number of pixels, got {raw!r}") from None


def _guard(w: float, h: float, gsd_m: float, what: str) -> tuple[int, int]:
    """Refuse grids that are not finite or too large, before anything is allocated."""
    limit = max_pixels()
    if not (math.isfinite(w) and math.isfinite(h)) or w * h > limit:
        size = f"{w:.3g} x {h:.3g}" if math.isfinite(w * h) else "an unbounded number of"
        raise SpecError(
            f"{what} at {gsd_m:g} m is {size} pixels, more than the limit of {limit:,} pixels per frame "
            f"({MAX_PIXELS_ENV}). Split it into several smaller ROIs (and use input_prep='tile' for "
            "grids), or use a coarser scale_m."
        )
    return max(1, int(round(w))), max(1, int(round(h)))


def grid_for(spatial: Spatial, gsd_m: float) -> GridSpec:
    """Resolve a spatial spec at a GSD into a lattice-snapped UTM grid.

    PointBuffer: round(2*buffer/gsd) pixels a side (at least 1), so every point with the same
    buffer gets the same shape; the top-left corner snaps to the nearest lattice node.
    BBox: the UTM bounds of the densified lon/lat box, snapped outward to the lattice.
    """
    if not gsd_m > 0 or not math.isfinite(gsd_m):
        raise SpecError(f"GSD must be a finite number > 0, got {gsd_m}")
    lon, lat = spatial.center
    crs = utm_crs(lon, lat)
    fwd = _transformer("EPSG:4326", crs)
    if isinstance(spatial, PointBuffer):
        cx, cy = fwd.transform(lon, lat)
        side = 2.0 * spatial.buffer_m / gsd_m
        n, _ = _guard(side, side, gsd_m, f"PointBuffer(buffer_m={spatial.buffer_m:g})")
        x0 = round((cx - n * gsd_m / 2.0) / gsd_m) * gsd_m
        y0 = round((cy + n * gsd_m / 2.0) / gsd_m) * gsd_m
        return GridSpec(crs, x0, y0, gsd_m, n, n)
    if isinstance(spatial, BBox):
        if spatial.width_deg > MAX_BBOX_WIDTH_DEG:
            raise SpecError(
                f"{spatial!r} is {spatial.width_deg:g} degrees wide; one ROI may span at most "
                f"{MAX_BBOX_WIDTH_DEG:g} degrees of longitude (it is mapped on one UTM grid). Split it into "
                "smaller ROIs. (minlon > maxlon means a box across the antimeridian.)"
            )
        k = 16
        lons, lats = [], []
        for i in range(k + 1):
            f = i / k
            lo = spatial.minlon + f * spatial.width_deg
            la = spatial.minlat + f * (spatial.maxlat - spatial.minlat)
            lons += [lo, lo, spatial.minlon, spatial.maxlon]
            lats += [spatial.minlat, spatial.maxlat, la, la]
        lons = [lo - 360.0 if lo > 180.0 else lo for lo in lons]
        xs, ys = fwd.transform(lons, lats)
        if not all(math.isfinite(v) for v in (*xs, *ys)):
            raise SpecError(f"{spatial!r} cannot be mapped onto the UTM grid of its centre ({crs})")
        w, h = (max(xs) - min(xs)) / gsd_m, (max(ys) - min(ys)) / gsd_m
        _guard(w, h, gsd_m, f"{spatial!r}")
        left = math.floor(min(xs) / gsd_m) * gsd_m
        right = math.ceil(max(xs) / gsd_m) * gsd_m
        bottom = math.floor(min(ys) / gsd_m) * gsd_m
        top = math.ceil(max(ys) / gsd_m) * gsd_m
        return GridSpec(crs, left, top, gsd_m, round((right - left) / gsd_m), round((top - bottom) / gsd_m))
    raise SpecError(f"unsupported spatial spec: {spatial!r} (use PointBuffer or BBox)")
