"""Raster: the one in-memory contract between providers, preprocessors and embedders.

No provider-specific object crosses this line: a provider returns a Raster, preprocessors map
Raster -> Raster, and the runner stacks the final Rasters into a model batch.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import numpy as np
from attrs import field, frozen

from .errors import ProviderError, SpecError, UnknownBandError
from .grid import GridSpec


def _f32(a: Any) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim != 4:
        raise SpecError(f"Raster data must be (T, C, H, W), got shape {arr.shape}")
    return arr


def _mask(a: Any) -> np.ndarray:
    m = np.asarray(a, dtype=bool)
    if m.ndim != 3:
        raise SpecError(f"Raster valid mask must be (T, H, W), got shape {m.shape}")
    return m


@frozen(eq=False)
class Raster:
    """float32 pixels (T, C, H, W) on `grid`, with band names, frame times and a validity mask.

    `valid[t, y, x]` is False where the pixel is nodata, cloud-masked or outside the source;
    `meta` holds provenance (provider, scenes used, composite, cloud fraction...).
    """

    data: np.ndarray = field(converter=_f32)
    bands: tuple[str, ...] = field(converter=tuple)
    grid: GridSpec
    times: tuple[dt.datetime | None, ...] = field(converter=tuple)
    valid: np.ndarray = field(converter=_mask)
    meta: dict[str, Any] = field(factory=dict)

    def __attrs_post_init__(self) -> None:
        t, c, h, w = self.data.shape
        if len(self.bands) != c:
            raise SpecError(f"Raster has {c} channels but {len(self.bands)} band names")
        if len(self.times) != t:
            raise SpecError(f"Raster has {t} frames but {len(self.times)} timestamps")
        if self.valid.shape != (t, h, w):
            raise SpecError(f"valid mask shape {self.valid.shape} does not match data {(t, h, w)}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.data.shape  # type: ignore[return-value]

    def band_index(self, names: tuple[str, ...] | list[str]) -> list[int]:
        missing = [b for b in names if b not in self.bands]
        if missing:
            raise UnknownBandError(f"raster has no band(s) {missing}; it has {list(self.bands)}")
        return [self.bands.index(b) for b in names]

    def replace(self, **changes: Any) -> Raster:
        """A new Raster with some fields changed (meta is merged, not replaced)."""
        if "meta" in changes:
            changes["meta"] = {**self.meta, **changes["meta"]}
        return attrs.evolve(self, **changes)

    @property
    def valid_fraction(self) -> float:
        return true_fraction(self.valid)


@frozen(eq=False)
class RasterHead:
    """A Raster without its pixels: all the runner keeps of an input a worker process already prepared
    (grid, bands, times, provenance, valid fraction), so the pixels need not travel back to it."""

    bands: tuple[str, ...]
    grid: GridSpec
    times: tuple[dt.datetime | None, ...]
    shape: tuple[int, int, int, int]
    valid_fraction: float
    meta: dict[str, Any] = field(factory=dict)

    @classmethod
    def of(cls, raster: Raster) -> RasterHead:
        return cls(raster.bands, raster.grid, raster.times, raster.shape, raster.valid_fraction, raster.meta)


def check_delivery(raster: Any, grid: GridSpec | None, bands: tuple[str, ...], who: str) -> None:
    """A provider's raster must be what was asked: a Raster on exactly the requested grid (shape,
    CRS, origin, pixel size) holding every requested band. Anything else would be embedded as if
    it were the ROI, so it fails the item with a ProviderError instead. `grid=None`: bands only."""
    if not isinstance(raster, Raster):
        raise ProviderError(f"{who} returned a {type(raster).__name__}, not a Raster")
    missing = [b for b in bands if b not in raster.bands]
    if missing:
        raise ProviderError(f"{who} returned bands {list(raster.bands)}, without the requested {missing}")
    if grid is None:
        return
    g = raster.grid
    h, w = raster.data.shape[2:]
    tol = 1e-6 * grid.res
    same = ((h, w) == (grid.height, grid.width) and (g.height, g.width) == (grid.height, grid.width)
            and g.crs == grid.crs and abs(g.x0 - grid.x0) <= tol and abs(g.y0 - grid.y0) <= tol
            and abs(g.res - grid.res) <= tol and abs((g.res_y or g.res) - (grid.res_y or grid.res)) <= tol)
    if not same:
        raise ProviderError(f"{who} returned a {h}x{w} px raster on {g.crs} at ({g.x0}, {g.y0}), {g.res} m pixels, "
                            f"for a request of {grid.height}x{grid.width} px on {grid.crs} at ({grid.x0}, {grid.y0}), "
                            f"{grid.res} m pixels")


def true_fraction(mask: np.ndarray) -> float:
    """The share of True in a boolean mask (0 when empty): the same float as `mask.mean()`, 5x cheaper."""
    return float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0
