"""The Earth Engine computations one fetch sends, built with the real client (`ee` objects).

1. `scene_table`: the images over the ROI in the window (after the metadata cloud filter), each with
   its id, acquisition time, scene cloud cover and the fraction of the ROI that is clear after the
   per-pixel cloud mask. One `value:compute` call; the client plans the frames from it.
2. `pixel_image`: for each frame, the composite of an explicit list of image ids (median, mosaic
   with the latest image on top, or the one least cloudy image), its bands as float32 plus a 0/1
   validity band, all frames stacked into one image that `image:computePixels` returns as NPY on
   the request grid.

Cloud masks (definitions in rs_embed_core.collections) are applied per image before compositing:
Cloud Score+ joins each Sentinel-2 image to the Cloud Score+ image with the same id and keeps
cs >= threshold (an image whose score is not published yet is fully masked); "scl" drops the SCL
classes in SCL_NOT_CLEAR; "qa60", "qa_pixel" and "fmask" drop pixels with any of their not-clear
bits set. Bands with a wavelength are resampled as asked (Earth Engine's default is nearest;
rs-embed's default is bilinear, like the STAC and local providers); QA/class bands stay nearest.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rs_embed_core.collections import (
    CLOUD_MASK_BAND,
    CLOUD_SCORE_PLUS_COLLECTION,
    FMASK_NOT_CLEAR_BITS,
    QA60_NOT_CLEAR_BITS,
    QA_PIXEL_NOT_CLEAR_BITS,
    SCL_NOT_CLEAR,
    known_collection,
)
from rs_embed_core.grid import GridSpec
from rs_embed_core.specs import SensorSpec, TemporalSpec

_NOT_CLEAR_BITS = {"qa60": QA60_NOT_CLEAR_BITS, "qa_pixel": QA_PIXEL_NOT_CLEAR_BITS, "fmask": FMASK_NOT_CLEAR_BITS}

# Scene-level cloud cover property (percent) of catalogue collections, for max_cloud_fraction and provenance.
SCENE_CLOUD_PROPERTY = {
    "COPERNICUS/S2_SR_HARMONIZED": "CLOUDY_PIXEL_PERCENTAGE",
    "COPERNICUS/S2_HARMONIZED": "CLOUDY_PIXEL_PERCENTAGE",
    "LANDSAT/LC08/C02/T1_L2": "CLOUD_COVER",
    "LANDSAT/LC09/C02/T1_L2": "CLOUD_COVER",
    "LANDSAT/LC08/C02/T1_TOA": "CLOUD_COVER",
    "LANDSAT/LC09/C02/T1_TOA": "CLOUD_COVER",
    "NASA/HLS/HLSS30/v002": "CLOUD_COVERAGE",
    "NASA/HLS/HLSL30/v002": "CLOUD_COVERAGE",
}
VALID = "valid"
SAR_POLARISATIONS = ("VV", "VH", "HH", "HV")
RESAMPLING = ("nearest", "bilinear", "bicubic")  # Image.resample modes, "nearest" = Earth Engine's default
# Sentinel-1 GRD image properties (Earth Engine catalogue, COPERNICUS/S1_GRD) a homogeneous mosaic filters on.
S1_GRD = "COPERNICUS/S1_GRD"
S1_INSTRUMENT_MODES = ("IW", "EW", "SM")
S1_RESOLUTIONS_M = (10, 25, 40)
S1_ORBIT_PASSES = ("ASCENDING", "DESCENDING")


def region(grid: GridSpec) -> Any:
    """The grid's footprint as a planar rectangle in the grid's own CRS (exact, antimeridian-safe)."""
    import ee

    left, bottom, right, top = grid.bounds
    return ee.Geometry.Rectangle([left, bottom, right, top], grid.crs, False)


def source_collection(sensor: SensorSpec, window: TemporalSpec, roi: Any, max_scenes: int,
                      properties: dict[str, Any] | None = None) -> Any:
    """The collection filtered to the window [start, end), the ROI, the scene cloud limit and `properties`
    (name -> required value, e.g. Sentinel-1's instrumentMode), oldest first."""
    import ee

    coll = known_collection(sensor.collection)
    start, end = window.start, window.end
    if coll is not None and coll.annual:  # images stamped 1 January: a window inside a year selects that year
        start, end = dt.date(start.year, 1, 1), dt.date((end - dt.timedelta(days=1)).year + 1, 1, 1)
    col = ee.ImageCollection(sensor.collection).filterDate(start.isoformat(), end.isoformat())
    col = col.filterBounds(roi)
    if coll is not None and coll.kind == "sar":
        # Sentinel-1 images carry only the polarisations they were acquired in: keep those with every one asked
        for band in sensor.bands:
            if band in SAR_POLARISATIONS:
                col = col.filter(ee.Filter.listContains("transmitterReceiverPolarisation", band))
    for name, value in (properties or {}).items():
        col = col.filter(ee.Filter.eq(name, value))
    prop = SCENE_CLOUD_PROPERTY.get(sensor.collection)
    if sensor.max_cloud_fraction is not None and prop is not None:
        col = col.filter(ee.Filter.lte(prop, sensor.max_cloud_fraction * 100.0))
    return col.limit(max_scenes, "system:time_start")


def masked(col: Any, bands: tuple[str, ...], method: str | None, threshold: float | None,
           resampling: str = "nearest", collection: str | None = None) -> Any:
    """Each image cut to `bands`, its wavelength bands resampled with `resampling`, with the per-pixel
    cloud mask `method` applied (None: no mask)."""
    import ee

    names = list(bands)
    coll = known_collection(collection) if collection else None
    smooth = [b for b in names if resampling != "nearest" and (
        coll is None or b not in coll.band_names or coll.band(b).center_nm is not None)]

    def apply(image: Any) -> Any:
        img = ee.Image(image)
        out = img.select(names)
        if smooth:
            others = [b for b in names if b not in smooth]
            out = img.select(smooth).resample(resampling)
            out = (out.addBands(img.select(others)) if others else out).select(names)
        if method is None:
            return out
        if method == "cloud_score_plus":
            band = CLOUD_MASK_BAND[method]
            scores = ee.ImageCollection(CLOUD_SCORE_PLUS_COLLECTION).filter(
                ee.Filter.eq("system:index", img.get("system:index"))).select([band])
            # an image without its score yet (Cloud Score+ lags new acquisitions) is masked, not an error:
            # a fully masked stand-in sits under the score, so the mosaic is the score where there is one
            missing = ee.Image.constant(0).toFloat().rename([band]).updateMask(ee.Image.constant(0))
            score = ee.ImageCollection.fromImages([missing]).merge(scores).mosaic()
            clear = score.gte(threshold)
        elif method == "scl":
            clear = img.select(CLOUD_MASK_BAND[method]).remap(list(SCL_NOT_CLEAR), [0] * len(SCL_NOT_CLEAR), 1)
        else:
            bits = sum(1 << b for b in _NOT_CLEAR_BITS[method])
            clear = img.select(CLOUD_MASK_BAND[method]).bitwiseAnd(bits).eq(0)
        return out.updateMask(clear)

    return col.map(apply)


def scene_table(images: Any, roi: Any, grid: GridSpec, cloud_property: str | None, max_scenes: int) -> Any:
    """[{id, time, clear, cloud}] per image. `clear` is the ROI's clear fraction (all bands valid after the
    cloud mask), measured at a scale no finer than 1/256 of the ROI's extent to keep the call cheap."""
    import ee

    extent = max(grid.width * grid.res, grid.height * grid.yres)
    scale = max(grid.res, extent / 256.0)

    def row(image: Any) -> Any:
        img = ee.Image(image)
        clear = img.mask().reduce(ee.Reducer.min())
        fraction = clear.reduceRegion(reducer=ee.Reducer.mean(), geometry=roi, scale=scale, crs=grid.crs,
                                      bestEffort=True, maxPixels=10_000_000).get("min")
        fields = {"id": img.get("system:index"), "time": img.get("system:time_start"), "clear": fraction}
        if cloud_property is not None:
            fields["cloud"] = img.get(cloud_property)
        return ee.Dictionary(fields)

    return images.toList(max_scenes).map(row)


def frame_composite(images: Any, ids: list[str], composite: str) -> Any:
    """The composite of the images with these ids ("none" frames are one day's images, mosaicked)."""
    import ee

    subset = images.filter(ee.Filter.inList("system:index", list(ids)))
    if composite == "median":
        return subset.median()
    if composite == "least_cloudy":
        return ee.Image(subset.first())  # the caller passes the one chosen id
    return subset.sort("system:time_start").mosaic()  # mosaic puts the last image on top: the latest wins


def band_id(frame: int, channel: int | None) -> str:
    """Output band names: f{frame}_c{channel} for data, f{frame}_valid for validity."""
    return f"f{frame}_{VALID}" if channel is None else f"f{frame}_c{channel}"


def pixel_image(frames: list[tuple[int, Any]], bands: tuple[str, ...]) -> Any:
    """One image holding every (frame index, composite): float32 data bands (masked pixels as 0) and a
    0/1 validity band per frame (1 where every requested band is unmasked)."""
    import ee

    parts = []
    for k, composite in frames:
        selected = composite.select(list(bands))
        valid = selected.mask().reduce(ee.Reducer.min()).gt(0).unmask(0)
        parts.append(selected.unmask(0).toFloat().rename([band_id(k, c) for c in range(len(bands))]))
        parts.append(valid.toFloat().rename([band_id(k, None)]))
    return ee.Image.cat(*parts)


def pixel_grid(grid: GridSpec, row0: int, col0: int, height: int, width: int) -> dict[str, Any]:
    """The computePixels PixelGrid of a window of `grid`: same CRS and pixel size, shifted origin."""
    crs = {"crsCode": grid.crs} if grid.crs.upper().startswith("EPSG:") else {"crsWkt": grid.crs}
    return {
        "dimensions": {"width": int(width), "height": int(height)},
        "affineTransform": {
            "scaleX": grid.res, "shearX": 0.0, "translateX": grid.x0 + col0 * grid.res,
            "shearY": 0.0, "scaleY": -grid.yres, "translateY": grid.y0 - row0 * grid.yres,
        },
        **crs,
    }
