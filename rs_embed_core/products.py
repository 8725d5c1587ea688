"""Precomputed embedding products (Google Satellite Embedding, TESSERA, Copernicus-Embed) as models.

A product is a model whose input *is* the embedding: its card's InputSpec names the product's
collection and bands, the fetch stage reads those bands through a provider onto the request's
grid like any other pixels, and `ProductEmbedder.forward` only pools or passes them through:

- pooled (pooling="model"): the mean of the valid pixels of the ROI;
- grid: the product's pixels on the request grid (forward gives invalid pixels 0; the assembled
  Embedding has NaN there and its cell valid mask `Embedding.valid` says which).

Products are annual (or one year): `product_year` is the one rule for what a TemporalSpec
selects. A sensor= or preprocessing= other than the card's is refused, since nothing about a
precomputed vector can be chosen.

`ProductProvider` is the base of providers that read one product themselves (not through Earth
Engine or STAC); any other collection goes to an optional fallback provider, so a product and
on-the-fly models can share one `export_batch` call: `backend="copernicus_embed:gee"`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import numpy as np

from .embedder import BatchContext, Embedder, EmbedOutput
from .errors import DataNotFoundError, SpecError
from .grid import GridSpec
from .raster import Raster
from .specs import SensorSpec, TemporalSpec


def years_text(years: tuple[int, ...]) -> str:
    if len(years) > 2 and list(years) == list(range(years[0], years[-1] + 1)):
        return f"{years[0]}-{years[-1]}"
    return ", ".join(str(y) for y in years)


def product_year(temporal: TemporalSpec, years: tuple[int, ...] | None, product: str) -> int:
    """The product year a window selects: TemporalSpec.year(Y), or any window inside year Y.

    A window across years is refused (SpecError naming the years available), never resolved
    silently to its first year; so is a year the product does not have. `years=None`: the
    product's catalogue knows them (its provider checks the year), only the one-year rule applies.
    """
    first, last = temporal.start.year, (temporal.end - dt.timedelta(days=1)).year
    available = "see the product's catalogue" if years is None else years_text(years)
    if first != last:
        raise SpecError(
            f"{product} is an annual product: the window [{temporal.start}, {temporal.end}) spans the years "
            f"{first}-{last}; ask for one year with TemporalSpec.year(Y) (available: {available})"
        )
    if years is not None and first not in years:
        raise SpecError(f"{product} has no year {first}; available: {available}")
    return first


def nearest_cells(grid: GridSpec, crs: str, transform: Any, height: int, width: int, *, wrap_lon: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, inside) of the source raster cell holding each pixel centre of `grid` (each (H, W)).

    Nearest-cell sampling of a product raster (`crs`, north-up affine `transform`, `height` x
    `width`) onto a request grid, exact (no approximate warp transformer). `wrap_lon`: the source
    is a global lon/lat map, so column indices wrap across the antimeridian.
    """
    from .grid import _transformer

    xs, ys = np.meshgrid(np.asarray(grid.x_coords()), np.asarray(grid.y_coords()))
    if crs != grid.crs:
        xs, ys = (np.asarray(v) for v in _transformer(grid.crs, crs).transform(xs, ys))
    a = transform
    if a.b or a.d:
        raise SpecError(f"product raster in {crs} is not north-up (transform {tuple(a)[:6]})")
    col = np.floor((xs - a.c) / a.a).astype(np.int64)
    row = np.floor((ys - a.f) / a.e).astype(np.int64)
    if wrap_lon:
        col %= width
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    return row, col, inside


def snapped_grid(crs: str, bounds: tuple[float, float, float, float], transform: Any) -> GridSpec:
    """The grid on a product raster's lattice (`transform`: origin and pixel size) that covers `bounds`
    (left, bottom, right, top in `crs`), snapped outward: the product's native grid over an ROI."""
    import math

    a = transform
    res_x, res_y = a.a, -a.e
    c0, c1 = math.floor((bounds[0] - a.c) / res_x), math.ceil((bounds[2] - a.c) / res_x)
    r0, r1 = math.floor((a.f - bounds[3]) / res_y), math.ceil((a.f - bounds[1]) / res_y)
    return GridSpec(crs, a.c + c0 * res_x, a.f - r0 * res_y, res_x, max(1, c1 - c0), max(1, r1 - r0),
                    None if math.isclose(res_x, res_y) else res_y)


def column_runs(cols: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique column indices -> [start, stop) runs of consecutive columns (one windowed read each)."""
    breaks = np.flatnonzero(np.diff(cols) != 1)
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks, [len(cols) - 1]])
    return [(int(cols[a]), int(cols[b]) + 1) for a, b in zip(starts, stops)]


class ProductEmbedder(Embedder):
    """A precomputed product as a model: forward pools the fetched product bands, nothing else.

    Subclasses set `card` (InputSpec = the product's collection, bands and native GSD) and
    `years`. No weights, no torch.
    """

    years: ClassVar[tuple[int, ...]]
    uses_torch: ClassVar[bool] = False

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Any, ...]:
        return ()

    @classmethod
    def product_sensor(cls) -> SensorSpec:
        i = cls.card.input
        return SensorSpec(i.collection, i.bands, i.gsd_m, composite=i.composite, cloud_mask=False)

    @classmethod
    def check_request(cls, variant: Any, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        i = cls.card.input
        if len(sensors) != 1 or (sensors[0].collection, sensors[0].bands, sensors[0].scale_m) != (
                i.collection, i.bands, i.gsd_m):
            raise SpecError(f"{cls.card.id} is a precomputed product ({i.collection}): it takes no sensor=; "
                            "its bands and pixel size are the product's")
        if steps:
            raise SpecError(f"{cls.card.id} is a precomputed product: it takes no preprocessing= "
                            f"(got {[getattr(s, 'name', s) for s in steps]})")

    @classmethod
    def check_temporal(cls, temporal: TemporalSpec) -> None:
        product_year(temporal, cls.years, cls.card.id)

    def forward(self, x: Any, ctx: BatchContext) -> EmbedOutput:
        product_year(ctx.temporal, self.years, self.card.id)
        data = np.asarray(x, dtype=np.float32)
        if data.ndim != 5 or data.shape[1] != 1:
            raise SpecError(f"{self.card.id}: expected one product frame per item (B, 1, C, H, W), got {data.shape}")
        data = data[:, 0]
        valid = np.ones((data.shape[0], *data.shape[2:]), bool) if ctx.valid is None else np.asarray(ctx.valid)[:, 0]
        counts = valid.sum(axis=(1, 2))
        if (counts == 0).any():
            raise DataNotFoundError(f"{self.card.id}: no valid product pixel in the ROI ({self.card.input.collection})")
        pooled = (data.astype(np.float64) * valid[:, None]).sum(axis=(2, 3)) / counts[:, None]
        grid = np.where(valid[:, None], data, np.float32(0))
        return EmbedOutput(pooled=pooled.astype(np.float32), grid=grid)


class ProductProvider:
    """A provider that reads one product collection itself; other collections go to `fallback`.

    Subclasses set `name` and `collection` and implement `check_product` (cheap, no I/O) and
    `fetch_product`. `fallback`: None, a provider, or a backend string ("gee", "local:DIR").
    `native=True`: the product's pixels come back on the product's own grid (its CRS and lattice,
    covering the ROI) instead of the request's UTM grid; the Embedding's GridSpec is then that
    grid. As a backend string: "NAME:native" or "NAME:native:FALLBACK".
    """

    name: ClassVar[str]
    collection: ClassVar[str]
    max_concurrency: int = 4

    def __init__(self, fallback: Any = None, *, native: bool = False) -> None:
        if isinstance(fallback, str):
            head, _, rest = fallback.partition(":")
            if head.strip().lower() == "native":
                native, fallback = True, rest
        if isinstance(fallback, str) and fallback:
            from .runner import resolve_provider

            fallback = resolve_provider(fallback)
        self.fallback = fallback or None
        self.native = bool(native)

    def _other(self, sensor: SensorSpec) -> Any:
        if self.fallback is None:
            raise SpecError(
                f"backend {self.name!r} serves only {self.collection}; for {sensor.collection} name a second "
                f"backend after it, e.g. backend='{self.name}:gee' or '{self.name}:local:DIR'"
            )
        return self.fallback

    def check(self, sensor: SensorSpec) -> None:
        if sensor.collection == self.collection:
            self.check_product(sensor)
        else:
            self._other(sensor).check(sensor)

    def fetch(self, request: Any) -> Raster:
        if request.sensor.collection == self.collection:
            return self.fetch_product(request)
        return self._other(request.sensor).fetch(request)

    def source_token(self, request: Any) -> str:
        if request.sensor.collection == self.collection:
            return self.product_token()
        token = getattr(self._other(request.sensor), "source_token", None)
        return token(request) if callable(token) else ""

    def product_token(self) -> str:
        return f"{self.name}:native" if self.native else self.name

    def check_product(self, sensor: SensorSpec) -> None:
        raise NotImplementedError

    def fetch_product(self, request: Any) -> Raster:
        raise NotImplementedError
