"""TESSERA (Feng et al. 2025) precomputed embeddings as an rs-embed model: `tessera`.

TESSERA publishes one 128-dimensional vector per 10 m pixel and year, in 0.1 degree tiles (centres
at 0.05 degree offsets), each tile on its own UTM grid. geotessera (0.7 tile API) lists the tiles in
a Parquet registry and keeps them in a local cache (`embeddings_dir`):

    global_0.1_degree_representation/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>.npy          int8 (H, W, 128)
    global_0.1_degree_representation/<year>/grid_<lon>_<lat>/grid_<lon>_<lat>_scales.npy   float32 (H, W) or (H, W, 128)
    global_0.1_degree_tiff_all/grid_<lon>_<lat>.tiff                                        landmask: the tile's UTM CRS + transform

Dequantisation is the publisher's: value = int8 x scale (`geotessera.dequantize_embedding`), applied to
the tile pixels the request grid samples only (the tiles are memory-mapped). Each request pixel centre
is read from the tile whose 0.1 degree box holds it, at the tile pixel it falls in (exact nearest-cell
sampling, rs_embed_core.products.nearest_cells),
so tiles of several UTM zones, or both sides of the antimeridian, are stitched onto the request's one
UTM grid in a single pass, without a warning-and-resample. Pixels whose vector is all zero (or not
finite) are invalid. Files missing from the cache are downloaded and hash-checked by geotessera.
`TesseraProvider(native=True)` (backend "tessera:native") returns the tiles' own UTM grid over the ROI
instead (one zone only: an ROI across zones is refused there, and stitched on the request grid).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Variant
from rs_embed_core.errors import DataNotFoundError, ProviderError, SpecError, UnknownBandError
from rs_embed_core.grid import GridSpec
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.products import (ProductEmbedder, ProductProvider, nearest_cells, product_year, snapped_grid,
                                    years_text)
from rs_embed_core.raster import Raster
from rs_embed_core.specs import SensorSpec

__all__ = ["Tessera", "TesseraProvider", "BANDS", "register_embedders", "register_providers"]

COLLECTION = "TESSERA/v1"
DATASET_VERSION = "v1"
DIM, GSD_M, TILE_DEG = 128, 10.0, 0.1
BANDS: tuple[str, ...] = tuple(f"T{k:03d}" for k in range(DIM))  # the tiles' last axis, in order
EMBEDDINGS_DIR_ENV = "TESSERA_EMBEDDINGS_DIR"

CARD = ModelCard(
    id="tessera",
    description="TESSERA: precomputed annual 128-d embeddings of Sentinel-1/2 time series, 10 m, 0.1 degree UTM "
                "tiles, int8 with per-pixel scales, read through geotessera",
    input=InputSpec(COLLECTION, BANDS, GSD_M, composite="mosaic"),
    variants=(Variant(DATASET_VERSION, DIM, DIM),),
    preprocessing=(),
    pooled="mean of the ROI's valid 10 m pixels (dequantised)",
    grid="the product's 10 m pixels on the request's UTM grid, tiles of other zones stitched by nearest pixel "
         "(invalid pixels 0)",
    license="embeddings: the terms of the TESSERA project (ucam-eo/tessera; not stated in geotessera's package "
            "metadata); geotessera library: MIT",
    citation="Feng et al. 2025, TESSERA: Temporal Embeddings of Surface Spectra for Earth Representation and "
             "Analysis, arXiv:2506.20380",
    homepage="https://github.com/ucam-eo/geotessera",
    notes="Precomputed product: no weights, no sensor= or preprocessing=. The years are those in geotessera's "
          "registry (2017-2024 per geotessera 0.7.5's README); a window across years is refused. Needs "
          "backend='tessera' (or 'tessera:gee' etc. to mix with models on another backend). Tested against "
          "geotessera 0.7.5's tile API and cache layout only.",
)


class Tessera(ProductEmbedder):
    card = CARD
    years = None  # geotessera's registry knows them; the provider checks the year before reading any tile


def _lon_ranges(lo: float, hi: float) -> list[tuple[float, float]]:
    """A continuous longitude range (may pass +/-180 across the antimeridian) as ranges inside [-180, 180]."""
    if hi > 180.0:
        return [(lo, 180.0), (-180.0, hi - 360.0)]
    if lo < -180.0:
        return [(lo + 360.0, 180.0), (-180.0, hi)]
    return [(lo, hi)]


def _owning_tiles(grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """The centre (lon, lat) of the 0.1 degree tile box holding each pixel centre of `grid`, rounded to
    0.01 degree like geotessera's tile names: each pixel is read from the one tile that owns it."""
    from pyproj import Transformer

    xs, ys = np.meshgrid(np.asarray(grid.x_coords()), np.asarray(grid.y_coords()))
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    lon = (np.asarray(lon) + 180.0) % 360.0 - 180.0
    centre = lambda v: np.round(np.floor(np.asarray(v) / TILE_DEG) * TILE_DEG + TILE_DEG / 2, 2)  # noqa: E731
    return centre(lon), centre(lat)


class TesseraProvider(ProductProvider):
    """Reads TESSERA tiles through geotessera onto request grids.

    embeddings_dir: geotessera's tile cache ($TESSERA_EMBEDDINGS_DIR, else <rs-embed cache>/tessera);
    registry_dir: a folder with registry.parquet and landmasks.parquet (else geotessera downloads and
    caches them in `cache_dir`); client: a ready `geotessera.GeoTessera` (overrides the rest);
    native: return the tiles' own grid instead of the request's.
    `fallback`: the backend for every other collection.
    """

    name = "tessera"
    collection = COLLECTION

    def __init__(self, fallback: Any = None, *, embeddings_dir: str | os.PathLike | None = None,
                 registry_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 native: bool = False, client: Any = None) -> None:
        super().__init__(fallback, native=native)
        if embeddings_dir is None:
            env = os.environ.get(EMBEDDINGS_DIR_ENV, "").strip()
            if env:
                embeddings_dir = env
            else:
                from rs_embed_core.weights import rs_embed_cache_dir

                embeddings_dir = rs_embed_cache_dir() / "tessera"
        self.embeddings_dir = Path(embeddings_dir)
        self.registry_dir = None if registry_dir is None else Path(registry_dir)
        self.cache_dir = cache_dir
        self._client = client
        self._lock = threading.Lock()

    def product_token(self) -> str:
        return f"{super().product_token()}:{DATASET_VERSION}:{self.embeddings_dir}"

    def check_product(self, sensor: SensorSpec) -> None:
        unknown = [b for b in sensor.bands if b not in BANDS]
        if unknown:
            raise UnknownBandError(f"TESSERA has bands T000-T127; no {unknown[:5]}")

    def client(self) -> Any:
        """The GeoTessera client (its registries are loaded, or downloaded once, on first use)."""
        with self._lock:
            if self._client is None:
                from geotessera import GeoTessera

                self.embeddings_dir.mkdir(parents=True, exist_ok=True)
                try:
                    self._client = GeoTessera(dataset_version=DATASET_VERSION, embeddings_dir=self.embeddings_dir,
                                              registry_dir=self.registry_dir, cache_dir=self.cache_dir)
                except (RuntimeError, OSError, ValueError) as exc:
                    raise ProviderError(f"geotessera could not load its tile registry: {exc}") from None
            return self._client

    def years(self) -> tuple[int, ...]:
        return tuple(int(y) for y in self.client().registry.get_available_years())

    def tiles(self, grid: GridSpec, year: int) -> list[tuple[float, float]]:
        """Centres (lon, lat) of the registry's tiles of `year` whose 0.1 degree boxes meet the grid's footprint."""
        lo, la0, hi, la1 = grid.footprint_lonlat()
        found: dict[tuple[float, float], None] = {}
        for a, b in _lon_ranges(lo, hi):
            for _, lon, lat in self.client().registry.iter_tiles_in_region((a, la0, b, la1), year):
                found[(round(float(lon), 2), round(float(lat), 2))] = None
        return sorted(found)

    def _tile(self, lon: float, lat: float, year: int) -> tuple[Any, Any, str, Any]:
        """(quantised, scales) memory-mapped, and the tile's CRS and transform (from its landmask)."""
        import rasterio

        registry = self.client().registry
        q_path = registry.fetch(year=year, lon=lon, lat=lat, is_scales=False, progressbar=False)
        s_path = registry.fetch(year=year, lon=lon, lat=lat, is_scales=True, progressbar=False)
        with rasterio.open(registry.fetch_landmask(lon=lon, lat=lat, progressbar=False)) as mask:
            crs, transform = mask.crs.to_string(), mask.transform
        return (np.load(q_path, mmap_mode="r", allow_pickle=False), np.load(s_path, mmap_mode="r", allow_pickle=False),
                crs, transform)

    def _native_grid(self, grid: GridSpec, tiles: dict[tuple[float, float], Any]) -> GridSpec:
        """The tiles' own UTM grid over the ROI: one zone and one pixel lattice, or a SpecError."""
        from rasterio.warp import transform_bounds

        crss = sorted({t[2] for t in tiles.values()})
        if len(crss) != 1:
            raise SpecError(f"the ROI spans TESSERA tiles in {crss}: a native grid is one UTM grid; ask for the "
                            "request's grid instead (native=False), which stitches them")
        transforms = [t[3] for t in tiles.values()]
        ref = transforms[0]
        if any(t.a != ref.a or t.e != ref.e or (t.c - ref.c) % ref.a or (t.f - ref.f) % ref.e for t in transforms):
            raise SpecError("the ROI's TESSERA tiles do not share one pixel lattice; ask for the request's grid "
                            "(native=False)")
        return snapped_grid(crss[0], transform_bounds(grid.crs, crss[0], *grid.bounds, densify_pts=21), ref)

    def fetch_product(self, request: Any) -> Raster:
        import geotessera

        sensor: SensorSpec = request.sensor
        self.check_product(sensor)
        year = product_year(request.temporal, None, CARD.id)
        years = self.years()
        if year not in years:
            raise SpecError(f"tessera has no year {year}; available: {years_text(years)}")
        listed = set(self.tiles(request.grid, year))
        owner_lon, owner_lat = _owning_tiles(request.grid)
        owners = sorted({(float(a), float(b)) for a, b in zip(owner_lon.ravel(), owner_lat.ravel())} & listed)
        if not owners:
            lo, la0, hi, la1 = request.grid.footprint_lonlat()
            raise DataNotFoundError(f"no TESSERA tile for {year} over the ROI (lon {lo:.3f}..{hi:.3f}, lat {la0:.3f}.."
                                    f"{la1:.3f}): TESSERA covers the 0.1 degree tiles listed in geotessera's "
                                    f"registry ({DATASET_VERSION}, years {years_text(years)})")
        opened = {key: self._tile(*key, year) for key in owners}
        grid = self._native_grid(request.grid, opened) if self.native else request.grid
        if self.native:
            owner_lon, owner_lat = _owning_tiles(grid)
        index = [BANDS.index(b) for b in sensor.bands]
        data = np.zeros((len(index), grid.height, grid.width), np.float32)
        valid = np.zeros(grid.shape, bool)
        used = []
        for lon, lat in sorted({(float(a), float(b)) for a, b in zip(owner_lon.ravel(), owner_lat.ravel())} & listed):
            quantised, scales, crs, transform = opened.get((lon, lat)) or self._tile(lon, lat, year)
            row, col, inside = nearest_cells(grid, crs, transform, quantised.shape[0], quantised.shape[1])
            take = (owner_lon == lon) & (owner_lat == lat) & inside
            if not take.any():
                continue
            rows, cols = row[take], col[take]  # only the pixels the grid samples are read and dequantised
            vectors = geotessera.dequantize_embedding(np.asarray(quantised[rows, cols])[:, None],
                                                      np.asarray(scales[rows, cols])[:, None])[:, 0][:, index]
            ok = np.isfinite(vectors).all(axis=1) & (vectors != 0).any(axis=1)
            data[:, take] = np.where(ok[:, None], vectors, 0).T
            valid[take] = ok
            used.append({"lon": lon, "lat": lat, "crs": crs, "pixels": int(ok.sum())})
        if not valid.any():
            raise DataNotFoundError(f"the TESSERA tiles over the ROI hold no valid pixel for {year} "
                                    f"(tiles {[(t['lon'], t['lat']) for t in used] or owners})")
        meta = {
            "provider": self.name, "collection": COLLECTION, "dataset_version": DATASET_VERSION, "year": year,
            "tiles": used, "embeddings_dir": str(self.embeddings_dir),
            "dequantisation": "int8 x scales (geotessera.dequantize_embedding)",
            "resampling": "none: the tiles' own grid (native)" if self.native
            else "nearest tile pixel of each request pixel centre",
            "geotessera": getattr(geotessera, "__version__", "unknown"),
            "valid_fraction": float(valid.mean()),
        }
        data = np.where(valid[None], data, np.float32(sensor.fill_value))
        return Raster(data[None], sensor.bands, grid, (None,), valid[None], meta)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(Tessera)


@hookimpl
def register_providers(register) -> None:  # type: ignore[no-untyped-def]
    register("tessera", TesseraProvider)  # "tessera:gee" = with gee for every other collection
