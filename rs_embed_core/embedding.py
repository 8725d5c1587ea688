"""Embedding: the result of one (model, place, time)."""

from __future__ import annotations

from typing import Any

import numpy as np
from attrs import field, frozen

from .errors import SpecError
from .grid import GridSpec


@frozen(eq=False)
class Embedding:
    """`data` is (D,) for pooled output or (D, h, w) for a grid; `grid` georeferences the latter.

    `meta` says what produced it: model id, variant, weights revision, provider, sensor,
    time window, the preprocessing chain that ran, input size, valid fraction, versions.
    `valid` (grids only) is (h, w) float32: the fraction of the model's input values (frames x
    pixels after preprocessing) under each cell that were valid. Cells with `valid == 0` saw only
    fill values and hold NaN in every band of `data`; None for pooled output.
    """

    data: np.ndarray
    meta: dict[str, Any] = field(factory=dict)
    grid: GridSpec | None = None
    valid: np.ndarray | None = None

    def __attrs_post_init__(self) -> None:
        if self.valid is not None and (self.data.ndim != 3 or tuple(self.valid.shape) != tuple(self.data.shape[1:])):
            raise SpecError(f"a cell valid mask of shape {tuple(self.valid.shape)} does not fit data of shape "
                             f"{tuple(self.data.shape)}; it must be (h, w) of a (D, h, w) grid")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def quicklook(self, path: str, title: str | None = None) -> str:
        """Write a PNG of a grid embedding's PCA colours (PC1-3 -> RGB, 2-98 percentile stretch; similar
        cells look alike), north up with lon/lat ticks; returns the path. See rs_embed_core.quicklook."""
        from .quicklook import write_embedding_png

        return write_embedding_png(self, path, title)

    def to_xarray(self):
        """An xarray.DataArray: dims ("band",) or ("band", "y", "x") with UTM coordinates; a grid's cell
        valid mask is its ("y", "x") coordinate `valid` (`da.where(da.valid > 0.5)` keeps well-covered cells)."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("Embedding.to_xarray needs xarray: pip install xarray") from None

        attrs = {k: v for k, v in self.meta.items() if isinstance(v, (str, int, float))}
        if self.data.ndim == 1:
            return xr.DataArray(self.data, dims=("band",), coords={"band": np.arange(self.data.shape[0])}, attrs=attrs)
        if self.grid is None:
            raise ValueError("a grid embedding without a GridSpec cannot be georeferenced")
        attrs["crs"] = self.grid.crs
        attrs["transform"] = list(self.grid.transform)
        coords: dict[str, Any] = {
            "band": np.arange(self.data.shape[0]),
            "y": np.asarray(self.grid.y_coords()),
            "x": np.asarray(self.grid.x_coords()),
        }
        if self.valid is not None:
            coords["valid"] = (("y", "x"), self.valid)
        return xr.DataArray(self.data, dims=("band", "y", "x"), coords=coords, attrs=attrs)
