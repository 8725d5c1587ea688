"""Copernicus-Embed (Wang et al., ICCV 2025) as an rs-embed model: `copernicus` / `copernicus_embed`.

Copernicus-Embed is one global map of 768-dimensional Copernicus-FM embeddings on a 0.25 degree
EPSG:4326 lattice (721 x 1440 cells, pixel centres on multiples of 0.25 degree), each cell the
aggregate of every Copernicus-Pretrain image over it; cells without data (mostly ocean) hold 0.
torchgeo redistributes it as one GeoTIFF (`embed_map_310k.tif`) in the Hugging Face dataset
torchgeo/copernicus_embed; this plugin reads that file at a pinned revision, checked by sha256.
The values are the embeddings themselves (no quantisation is documented), read as stored.

Reading (`CopernicusEmbedProvider`, backend "copernicus_embed"): each pixel centre of the request's
UTM grid (2.5 km pixels) takes the value of the 0.25 degree cell it falls in (nearest cell, longitude
wrapped, so an ROI across the antimeridian reads both edges of the map), read with windowed reads
of just the rows and column runs the ROI touches. Pooled output is then the mean over the ROI weighted
by the area each cell covers. An ROI smaller than a cell gets that cell's vector, with a note in
`meta["source"]["note"]`. `CopernicusEmbedProvider(native=True)` (backend "copernicus_embed:native")
returns the map's own 0.25 degree cells over the ROI instead, georeferenced in EPSG:4326.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Variant, WeightsSpec
from rs_embed_core.errors import DataNotFoundError, ProviderError, SpecError, UnknownBandError
from rs_embed_core.grid import GridSpec
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.products import (ProductEmbedder, ProductProvider, column_runs, nearest_cells, product_year,
                                    snapped_grid)
from rs_embed_core.raster import Raster
from rs_embed_core.specs import SensorSpec

__all__ = ["CopernicusEmbed", "CopernicusEmbedProvider", "MAP_FILE", "BANDS", "register_embedders",
           "register_providers"]

# torchgeo's CopernicusEmbed dataset class (torchgeo/datasets/copernicus/embed.py): url
# https://hf.co/datasets/torchgeo/copernicus_embed/resolve/435b4a7bdce6f6fdbf4272f9d6e54f2604f35fdb/embed_map_310k.tif
# with md5 63de14ab9f5eeffb785066f3013a40b4. The sha256 of the same file at the same revision is the one a
# Keras port of that class pins ("ported from torchgeo.datasets.copernicus.embed", found by a code search); it
# is not recomputed here (no Hub access): a mismatch fails before any read. Licence: the dataset card's cc-by-4.0.
COLLECTION = "torchgeo/copernicus_embed"
YEARS: tuple[int, ...] = (2021,)
MAP_FILE = WeightsSpec(COLLECTION, "435b4a7bdce6f6fdbf4272f9d6e54f2604f35fdb", "embed_map_310k.tif",
                       "38f6fd15b20153f7b3ba2d7b38fb9ef56b751dfcb42e17cc1b02aad1580a59ad", "cc-by-4.0",
                       repo_type="dataset")
DIM = 768
BANDS: tuple[str, ...] = tuple(f"E{k:03d}" for k in range(DIM))  # the file's bands 1..768, in order
CELL_DEG = 0.25
GSD_M = 2500.0  # request grid: about 11 pixels across a cell at the equator, so cells keep their shape
COVERAGE = ("Copernicus-Embed covers the land cells of Copernicus-Pretrain on a global 0.25 degree grid for 2021; "
            "cells without data (mostly ocean) hold 0 and are not valid")

CARD = ModelCard(
    id="copernicus",
    aliases=("copernicus_embed",),
    description="Copernicus-Embed: precomputed global 0.25 degree map of 768-d Copernicus-FM embeddings (2021), "
                "read from torchgeo's pinned Hugging Face file",
    input=InputSpec(COLLECTION, BANDS, GSD_M, composite="mosaic"),
    variants=(Variant("025deg", DIM, DIM),),
    preprocessing=(),
    pooled="mean of the ROI's valid cells, weighted by the area of the ROI each covers",
    grid="the 0.25 degree cells on the request's UTM grid at 2.5 km (nearest cell; invalid pixels 0)",
    license="CC-BY-4.0 (torchgeo/copernicus_embed dataset card)",
    citation="Wang et al. 2025, Towards a Unified Copernicus Foundation Model for Earth Vision, ICCV, arXiv:2503.11849",
    homepage="https://github.com/zhu-xlab/Copernicus-FM/tree/main/Copernicus-Embed-025deg",
    notes="Precomputed product: no weights, no sensor= or preprocessing=. One year, 2021. Needs "
          "backend='copernicus_embed' (or 'copernicus_embed:gee' etc. to mix with models on another backend; "
          "'copernicus_embed:native' for the 0.25 degree cells in EPSG:4326). Map file: "
          f"{MAP_FILE.repo_id} (dataset) @ {MAP_FILE.revision} / {MAP_FILE.filename}, sha256 {MAP_FILE.sha256}.",
)


class CopernicusEmbed(ProductEmbedder):
    card = CARD
    years = YEARS


class CopernicusEmbedProvider(ProductProvider):
    """Reads Copernicus-Embed onto request grids. `fallback`: the backend for every other collection.
    `map_file`: the pinned file (tests pass their own synthetic one)."""

    name = "copernicus_embed"
    collection = COLLECTION

    def __init__(self, fallback: Any = None, *, native: bool = False, map_file: WeightsSpec = MAP_FILE) -> None:
        super().__init__(fallback, native=native)
        self.map_file = map_file
        self._path: Path | None = None

    def product_token(self) -> str:
        return f"{super().product_token()}:{self.map_file.revision}:{self.map_file.sha256}"

    def check_product(self, sensor: SensorSpec) -> None:
        unknown = [b for b in sensor.bands if b not in BANDS]
        if unknown:
            raise UnknownBandError(f"Copernicus-Embed has bands E000-E767; no {unknown[:5]}")

    def path(self) -> Path:
        """The verified local file (Hub cache or $RS_EMBED_WEIGHTS_DIR), fetched once per provider."""
        if self._path is None:
            from rs_embed_core.weights import weights_file

            self._path = weights_file(self.map_file)
        return self._path

    def fetch_product(self, request: Any) -> Raster:
        import rasterio
        from rasterio.windows import Window

        grid: GridSpec = request.grid
        sensor: SensorSpec = request.sensor
        self.check_product(sensor)
        year = product_year(request.temporal, YEARS, CARD.id)
        roi_lonlat = grid.footprint_lonlat()
        with rasterio.open(self.path()) as src:
            a = src.transform
            if src.crs is None or src.crs.to_epsg() != 4326 or src.count != DIM:
                raise ProviderError(f"{self.path()} is not the Copernicus-Embed layout (EPSG:4326, {DIM} bands): "
                                    f"crs {src.crs}, {src.count} bands")
            if self.native:  # the map's own cells over the ROI (longitudes may run past 180 across the antimeridian)
                grid = snapped_grid("EPSG:4326", roi_lonlat, a)
            row, col, inside = nearest_cells(grid, "EPSG:4326", a, src.height, src.width,
                                             wrap_lon=abs(src.width * a.a - 360.0) < 1e-6)  # a global map wraps
            index = [BANDS.index(b) + 1 for b in sensor.bands]
            data = np.zeros((len(index), grid.height, grid.width), np.float32)
            if inside.any():
                r0, r1 = int(row[inside].min()), int(row[inside].max()) + 1
                for c0, c1 in column_runs(np.unique(col[inside])):
                    block = src.read(index, window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=np.float32)
                    take = inside & (col >= c0) & (col < c1)
                    data[:, take] = block[:, row[take] - r0, col[take] - c0]
            nodata = src.nodata
        valid = inside & (data != 0).any(axis=0)
        if nodata is not None:
            valid &= ~(data == np.float32(nodata)).all(axis=0)
        if not valid.any():
            lo0, la0, lo1, la1 = roi_lonlat
            raise DataNotFoundError(f"no Copernicus-Embed data over the ROI (lon {lo0:.3f}..{lo1:.3f}, lat "
                                    f"{la0:.3f}..{la1:.3f}): {COVERAGE}")
        cells = sorted({(int(r), int(c)) for r, c in zip(row[valid], col[valid])})
        meta: dict[str, Any] = {
            "provider": self.name, "collection": COLLECTION, "year": year,
            "file": {"repo_id": self.map_file.repo_id, "revision": self.map_file.revision,
                     "filename": self.map_file.filename, "sha256": self.map_file.sha256},
            "native_crs": "EPSG:4326", "native_res_deg": CELL_DEG, "native_cells": len(cells),
            "resampling": "none: the map's own cells (native grid)" if self.native
            else "nearest 0.25 degree cell of each request pixel centre",
            "valid_fraction": float(valid.mean()),
        }
        lo0, la0, lo1, la1 = roi_lonlat
        if lo1 - lo0 < CELL_DEG and la1 - la0 < CELL_DEG:
            meta["note"] = (f"the ROI is smaller than one {CELL_DEG} degree cell: this is the vector of the cell it "
                            "lies in" if len(cells) == 1 else
                            f"the ROI is smaller than one {CELL_DEG} degree cell but straddles {len(cells)} cells: "
                            "the area-weighted mean of their vectors")
        data = np.where(valid[None], data, np.float32(sensor.fill_value))
        return Raster(data[None], sensor.bands, grid, (None,), valid[None], meta)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(CopernicusEmbed)


@hookimpl
def register_providers(register) -> None:  # type: ignore[no-untyped-def]
    register("copernicus_embed", CopernicusEmbedProvider)  # "copernicus_embed:gee" = with gee for the rest
