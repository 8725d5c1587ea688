"""Per-pixel cloud masks and the DN convention, from what each item says about itself.

Masks (True = clear), defined once in rs_embed_core.collections:
- "scl": Sentinel-2 L2A scene classification (SCL_NOT_CLEAR classes).
- "qa_pixel": Landsat collection 2 QA_PIXEL bits (QA_PIXEL_NOT_CLEAR_BITS).
Neither has a threshold: SensorSpec.cloud_threshold is refused for them.

DN convention: pixels are delivered in the core collection's convention
(`rs_embed_core.collections`: physical = DN * reflectance_scale + reflectance_offset), so one
place gives the same numbers from Earth Engine, STAC and local files:
- Sentinel-2 (harmonized ids): processing baseline >= 04.00 adds BOA_ADD_OFFSET (-1000 DN,
  ESA). The shift applied is 0 when the item says the catalog already removed it
  (`earthsearch:boa_offset_applied: true`; Earth Search's maintainers call that flag the truth
  when raster:bands still lists -0.1), 0 when the baseline is below 04.00, else the item's
  raster:bands offset / scale, else -1000 for a baseline >= 04.00 (Planetary Computer items
  carry no raster:bands offset).
- The legacy Earth Search `sentinel-2-l2a` collection (CollectionMap.verify_offset) has items
  whose flag says false while their COGs already lack the offset (Element84/earth-search#66,
  #71). `offset_check` refuses a negative shift that would send more than
  OFFSET_CHECK_MAX_NEGATIVE of a scene's valid pixels below zero: real L2A reflectance is
  almost never negative, while a shifted-twice scene loses everything darker than 0.1. It can
  only catch scenes with dark pixels in the ROI (water, shadow, the blue band); a bright-only
  ROI passes either way.
- Other optical collections: when the asset's raster:bands scale equals the core scale, DN
  shifts by (offset - core offset) / scale (Landsat C2 L2: 2.75e-5 / -0.2 on both sides, so 0).
  Otherwise (thermal bands, a different scale) DN are kept as read.
- QA / class bands (no centre wavelength) are never shifted.
"""

from __future__ import annotations

import math

import numpy as np

from rs_embed_core.collections import QA_PIXEL_NOT_CLEAR_BITS, SCL_NOT_CLEAR, known_collection

from .search import AssetRef, Scene

S2_HARMONIZED = ("COPERNICUS/S2_SR_HARMONIZED", "COPERNICUS/S2_HARMONIZED")
BOA_ADD_OFFSET_DN = -1000.0  # ESA, processing baseline 04.00 onwards, every band


def clear_mask(method: str, qa: np.ndarray) -> np.ndarray:
    """True where the QA layer (read with nearest resampling) says the pixel is clear."""
    q = np.nan_to_num(qa, nan=0.0).astype(np.int64)
    if method == "scl":
        return ~np.isin(q, SCL_NOT_CLEAR)
    if method == "qa_pixel":
        bits = sum(1 << b for b in QA_PIXEL_NOT_CLEAR_BITS)
        return (q & bits) == 0
    raise ValueError(f"unknown cloud mask {method!r}")


def _baseline_at_least(baseline: str | None, major: int) -> bool | None:
    if baseline is None:
        return None
    try:
        return float(baseline) >= major
    except ValueError:
        return None


def dn_shift(scene: Scene, band: str, ref: AssetRef, collection: str) -> tuple[float, str]:
    """(DN to add, why) to bring this band of this scene into the core collection's convention."""
    coll = known_collection(collection)
    if coll is None:
        return 0.0, "collection not in the band table: DN as read"
    try:
        info = coll.band(band)
    except KeyError:
        return 0.0, "band not in the band table: DN as read"
    if info.center_nm is None or coll.kind != "optical":
        return 0.0, "QA/class or SAR band"
    if collection in S2_HARMONIZED:
        if scene.boa_offset_applied is True:
            return 0.0, "catalog already removed the offset (boa_offset_applied)"
        newer = _baseline_at_least(scene.processing_baseline, 4)
        if newer is False:
            return 0.0, f"processing baseline {scene.processing_baseline} < 04.00"
        if ref.offset is not None and ref.scale:
            return ref.offset / ref.scale - coll.reflectance_offset / coll.reflectance_scale, "raster:bands offset"
        if newer:
            return BOA_ADD_OFFSET_DN, f"processing baseline {scene.processing_baseline} >= 04.00"
        return 0.0, "no processing baseline and no raster:bands offset: DN as read"
    if ref.scale and ref.offset is not None and math.isclose(ref.scale, coll.reflectance_scale, rel_tol=1e-6):
        return (ref.offset - coll.reflectance_offset) / coll.reflectance_scale, "raster:bands offset"
    return 0.0, "DN as read"


OFFSET_CHECK_MAX_NEGATIVE = 0.05


def offset_check(bands: list[tuple[np.ndarray, np.ndarray, float]]) -> dict[str, float | bool]:
    """Whether to refuse the shifts of one scene: `bands` holds (DN as read, valid, shift) for each band
    to be shifted; the share of their valid pixels that the shift would send below zero decides."""
    below = total = 0
    for data, valid, shift in bands:
        px = data[valid]
        below += int(np.count_nonzero(px + shift < 0))
        total += px.size
    fraction = below / total if total else 0.0
    return {"negative_fraction": round(fraction, 4), "refused": fraction > OFFSET_CHECK_MAX_NEGATIVE}


def to_db(data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear power -> decibels; zero or negative power is invalid."""
    ok = valid & (data > 0)
    out = np.zeros_like(data, dtype=np.float32)
    np.log10(data, out=out, where=ok)
    return (10.0 * out).astype(np.float32), ok
