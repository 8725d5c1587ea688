"""Band tables of well-known collections: the one place these facts live.

Collection ids follow Google Earth Engine's catalogue names, which users already know; the
`local` and `stac` providers map their own files and assets onto these names. A collection
not listed here is allowed (your own data); its bands are then checked by the provider.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from .errors import SpecError, UnknownBandError


@frozen
class Band:
    name: str
    gsd_m: float
    center_nm: float | None = None  # centre wavelength (SAR: the radar wavelength); None for QA/class bands
    description: str = ""
    bandwidth_nm: float | None = None  # full width at half maximum of the spectral response


@frozen
class Collection:
    id: str
    bands: tuple[Band, ...]
    # physical reflectance = DN * scale + offset (surface or TOA reflectance, 0..1)
    reflectance_scale: float = 1.0
    reflectance_offset: float = 0.0
    description: str = ""
    kind: str = "optical"  # "optical", "sar" or "embedding" (a precomputed embedding product)
    # per-pixel cloud masks this collection supports (CLOUD_MASK_BAND keys), the default first
    cloud_masks: tuple[str, ...] = ()
    # one image per year (stamped 1 January): a window inside a year selects that year's image
    annual: bool = False

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> Band:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(name)


# Per-pixel cloud masks: which band each method reads and which values mean "not clear". Every
# provider applies these same definitions (Earth Engine server-side, STAC and local files in numpy).
CLOUD_MASK_BAND = {"scl": "SCL", "qa60": "QA60", "qa_pixel": "QA_PIXEL", "fmask": "Fmask", "cloud_score_plus": "cs"}
# Sentinel-2 L2A scene classification, not clear: 0 no data, 1 saturated/defective, 3 cloud shadow,
# 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus (ESA L2A product
# specification). Snow (11) and water (6) stay clear.
SCL_NOT_CLEAR = (0, 1, 3, 8, 9, 10)
# Sentinel-2 QA60 bits: 10 opaque clouds, 11 cirrus (ESA L1C).
QA60_NOT_CLEAR_BITS = (10, 11)
# QA60 is empty (masked out) on Earth Engine from 2022-01-25 to 2024-02-28 inclusive: ESA stopped producing
# the cloud polygons, and the legacy-consistent band from MSK_CLASSI starts after (Earth Engine catalogue,
# COPERNICUS/S2_SR_HARMONIZED and S2_HARMONIZED band tables). A QA60 mask there would hide every pixel.
QA60_GAP = ("2022-01-25", "2024-02-28")  # first and last day, inclusive
# Landsat collection 2 QA_PIXEL bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow
# (USGS Landsat 8-9 C2 L2 product guide).
QA_PIXEL_NOT_CLEAR_BITS = (0, 1, 2, 3, 4)
# HLS v2.0 Fmask bits: 1 cloud, 2 adjacent to cloud or shadow, 3 cloud shadow (HLS v2.0 user guide).
FMASK_NOT_CLEAR_BITS = (1, 2, 3)
# Cloud Score+ (Google, Pasquarella et al. 2023): per-pixel "cs" in [0, 1], 1 = clear; images share
# the Sentinel-2 image ids. Clear where cs >= threshold; 0.6 is the value Google's guide uses.
CLOUD_SCORE_PLUS_COLLECTION = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
CLOUD_SCORE_PLUS_DEFAULT_THRESHOLD = 0.6

# Sentinel-2 MSI: rounded centre wavelengths (the values model papers use) and S2A bandwidths (ESA
# spectral response functions, S2-PDGS-TAS-DI-PSD), nm.
_S2_BANDS = (
    Band("B1", 60, 443, "coastal aerosol", 21),
    Band("B2", 10, 490, "blue", 66),
    Band("B3", 10, 560, "green", 36),
    Band("B4", 10, 665, "red", 31),
    Band("B5", 20, 705, "red edge 1", 15),
    Band("B6", 20, 740, "red edge 2", 15),
    Band("B7", 20, 783, "red edge 3", 20),
    Band("B8", 10, 842, "near infrared", 106),
    Band("B8A", 20, 865, "narrow near infrared", 21),
    Band("B9", 60, 945, "water vapour", 20),
    Band("B11", 20, 1610, "short-wave infrared 1", 91),
    Band("B12", 20, 2190, "short-wave infrared 2", 175),
)
_S2_L1C_EXTRA = (Band("B10", 60, 1375, "cirrus", 31),)
_S2_SR_EXTRA = (Band("SCL", 20, None, "scene classification"),)
_S2_QA = (Band("QA60", 60, None, "cloud mask bits (10 opaque, 11 cirrus)"),)

# Landsat 8/9 OLI (-2): USGS band designations, centre wavelength and bandwidth, nm.
_OLI = (
    ("B1", 443, 16, "coastal aerosol"),
    ("B2", 482, 60, "blue"),
    ("B3", 561, 57, "green"),
    ("B4", 655, 37, "red"),
    ("B5", 865, 28, "near infrared"),
    ("B6", 1609, 85, "short-wave infrared 1"),
    ("B7", 2201, 187, "short-wave infrared 2"),
)
_LANDSAT_OLI_L2 = tuple(Band(f"SR_{b}", 30, c, d, w) for b, c, w, d in _OLI) + (
    Band("ST_B10", 30, 10895, "surface temperature (K = DN * 0.00341802 + 149)", 590),
    Band("QA_PIXEL", 30, None, "pixel quality bits"),
)
_LANDSAT_OLI_TOA = tuple(Band(b, 30, c, d, w) for b, c, w, d in _OLI) + (
    Band("B8", 15, 590, "panchromatic", 172),
    Band("B9", 30, 1373, "cirrus", 20),
    Band("B10", 30, 10895, "thermal infrared 1 (brightness temperature, K)", 590),
    Band("B11", 30, 12005, "thermal infrared 2 (brightness temperature, K)", 1010),
    Band("QA_PIXEL", 30, None, "pixel quality bits"),
)

# Harmonized Landsat Sentinel-2 (HLS v2.0): 30 m surface reflectance, DN = reflectance x 10000.
_HLS_S30 = tuple(Band(b.name, 30, b.center_nm, b.description, b.bandwidth_nm) for b in _S2_BANDS + _S2_L1C_EXTRA) + (
    Band("Fmask", 30, None, "cloud/shadow/snow/water bits"),
)
_HLS_L30 = tuple(Band(b, 30, c, d, w) for b, c, w, d in _OLI) + (
    Band("B9", 30, 1373, "cirrus", 20),
    Band("B10", 30, 10895, "thermal infrared 1", 590),
    Band("B11", 30, 12005, "thermal infrared 2", 1010),
    Band("Fmask", 30, None, "cloud/shadow/snow/water bits"),
)

# Sentinel-1 C-band SAR (5.405 GHz, wavelength 5.5466 cm), GRD backscatter in dB as Earth Engine serves it.
_C_BAND_NM = 299_792_458.0 / 5.405e9 * 1e9
_S1_BANDS = (
    Band("VV", 10, _C_BAND_NM, "backscatter, vertical transmit / vertical receive (dB)"),
    Band("VH", 10, _C_BAND_NM, "backscatter, vertical transmit / horizontal receive (dB)"),
    Band("HH", 10, _C_BAND_NM, "backscatter, horizontal transmit / horizontal receive (dB)"),
    Band("HV", 10, _C_BAND_NM, "backscatter, horizontal transmit / vertical receive (dB)"),
    Band("angle", 10, None, "incidence angle (degrees)"),
)

# MODIS Terra surface reflectance, 8-day composite, 500 m (MOD09A1 v6.1), DN = reflectance x 10000.
_MODIS_SR = tuple(
    Band(f"sur_refl_b{k:02d}", 500, c, d, w)
    for k, c, w, d in (
        (1, 645, 50, "red"), (2, 858.5, 35, "near infrared"), (3, 469, 20, "blue"), (4, 555, 20, "green"),
        (5, 1240, 20, "near infrared 2"), (6, 1640, 24, "short-wave infrared 1"), (7, 2130, 50, "short-wave infrared 2"),
    )
) + (Band("StateQA", 500, None, "500 m state flags (cloud, shadow, snow)"),)

# MODIS Terra level-1B calibrated radiances at 1 km (MOD021KM v6.1, LAADS), gridded: the reflective solar
# bands as top-of-atmosphere reflectance in percent (value x 0.01 = reflectance), the thermal emissive bands
# as brightness temperature in kelvin (satpy's modis_l1b calibration). Band names are the MODIS band numbers.
# Centre wavelength and bandwidth from the MODIS band table (nm); the bands SatVision-TOA uses, plus 20 and 34.
_MODIS_L1B = tuple(
    Band(str(k), 1000, c, d, w)
    for k, c, w, d in (
        (1, 645, 50, "red (TOA reflectance, %)"), (2, 858.5, 35, "near infrared (TOA reflectance, %)"),
        (3, 469, 20, "blue (TOA reflectance, %)"), (6, 1640, 24, "short-wave infrared 1.6 um (TOA reflectance, %)"),
        (7, 2130, 50, "short-wave infrared 2.1 um (TOA reflectance, %)"),
        (20, 3750, 180, "mid-wave infrared 3.75 um (brightness temperature, K)"),
        (21, 3959, 60, "mid-wave infrared 3.96 um, fire (brightness temperature, K)"),
        (26, 1375, 30, "cirrus 1.38 um (TOA reflectance, %)"),
        (27, 6715, 360, "water vapour 6.7 um (brightness temperature, K)"),
        (28, 7325, 300, "water vapour 7.3 um (brightness temperature, K)"),
        (29, 8550, 300, "thermal infrared 8.55 um (brightness temperature, K)"),
        (30, 9730, 300, "ozone 9.73 um (brightness temperature, K)"),
        (31, 11030, 500, "thermal infrared 11 um (brightness temperature, K)"),
        (32, 12020, 500, "thermal infrared 12 um (brightness temperature, K)"),
        (33, 13335, 300, "carbon dioxide 13.3 um (brightness temperature, K)"),
        (34, 13635, 300, "carbon dioxide 13.6 um (brightness temperature, K)"),
    )
)

# Google Satellite Embedding V1 (AlphaEarth Foundations), Earth Engine's GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL:
# 64 unit-length axes A00-A63 in [-1, 1], 10 m, one image per UTM zone tile and year (catalogue page).
SATELLITE_EMBEDDING = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
_GSE_BANDS = tuple(Band(f"A{k:02d}", 10, None, f"embedding axis {k}") for k in range(64))

COLLECTIONS: dict[str, Collection] = {
    c.id: c
    for c in (
        Collection(
            "COPERNICUS/S2_SR_HARMONIZED",
            _S2_BANDS + _S2_SR_EXTRA + _S2_QA,
            reflectance_scale=1e-4,
            description="Sentinel-2 MSI level-2A surface reflectance (DN = reflectance x 10000)",
            cloud_masks=("cloud_score_plus", "scl", "qa60"),
        ),
        Collection(
            "COPERNICUS/S2_HARMONIZED",
            _S2_BANDS + _S2_L1C_EXTRA + _S2_QA,
            reflectance_scale=1e-4,
            description="Sentinel-2 MSI level-1C top-of-atmosphere reflectance (DN = reflectance x 10000)",
            cloud_masks=("cloud_score_plus", "qa60"),
        ),
        *(
            Collection(
                f"LANDSAT/{sat}/C02/T1_L2",
                _LANDSAT_OLI_L2,
                reflectance_scale=2.75e-5,
                reflectance_offset=-0.2,
                description=f"Landsat {n} OLI collection 2 level-2 surface reflectance",
                cloud_masks=("qa_pixel",),
            )
            for sat, n in (("LC08", "8"), ("LC09", "9"))
        ),
        *(
            Collection(
                f"LANDSAT/{sat}/C02/T1_TOA",
                _LANDSAT_OLI_TOA,
                description=f"Landsat {n} collection 2 tier 1 top-of-atmosphere reflectance (already 0..1)",
                cloud_masks=("qa_pixel",),
            )
            for sat, n in (("LC08", "8"), ("LC09", "9"))
        ),
        Collection("NASA/HLS/HLSS30/v002", _HLS_S30, reflectance_scale=1e-4,
                   description="Harmonized Landsat Sentinel-2, Sentinel-2 part (S30), 30 m surface reflectance",
                   cloud_masks=("fmask",)),
        Collection("NASA/HLS/HLSL30/v002", _HLS_L30, reflectance_scale=1e-4,
                   description="Harmonized Landsat Sentinel-2, Landsat part (L30), 30 m surface reflectance",
                   cloud_masks=("fmask",)),
        Collection("COPERNICUS/S1_GRD", _S1_BANDS, kind="sar",
                   description="Sentinel-1 C-band SAR ground range detected, backscatter in dB"),
        Collection("MODIS/061/MOD09A1", _MODIS_SR, reflectance_scale=1e-4,
                   description="MODIS Terra surface reflectance, 8-day composite, 500 m"),
        Collection("MODIS/061/MOD021KM", _MODIS_L1B, reflectance_scale=0.01,
                   description="MODIS Terra L1B at 1 km, gridded: TOA reflectance (%) and brightness temperature (K)"),
        Collection(SATELLITE_EMBEDDING, _GSE_BANDS, kind="embedding", annual=True,
                   description="Google Satellite Embedding V1 (AlphaEarth Foundations), annual, 10 m, 64 axes"),
    )
}


def known_collection(collection_id: str) -> Collection | None:
    return COLLECTIONS.get(collection_id)


def delivering_sensor(sensors: Any, name: str, model: str) -> Any:
    """The sensor of a request that delivers band `name` (a multi-sensor request, e.g. Sentinel-2 +
    Sentinel-1 merged band-wise, mixes collections). `sensors`: one SensorSpec or a sequence."""
    group = tuple(sensors) if isinstance(sensors, (list, tuple)) else (sensors,)
    owner = next((s for s in group if name in s.bands), None)
    if owner is None:
        raise UnknownBandError(f"{model} cannot tell which sensor delivered band {name!r}: the request's sensors "
                               f"have bands {[list(s.bands) for s in group]}")
    return owner


def band_entry(collection_id: str, name: str, model: str) -> tuple[Collection, Band]:
    """The band table's entry of one band, for models that need its physical description (wavelength,
    bandwidth, SAR or optical). Typed errors, naming `model`, before any network or model work."""
    coll = known_collection(collection_id)
    if coll is None:
        raise SpecError(f"{model} needs each band's wavelength, but collection {collection_id!r} is not in the band "
                        "table (rs_embed_core.collections); use a listed collection")
    try:
        return coll, coll.band(name)
    except KeyError:
        raise UnknownBandError(f"{collection_id} has no band {name!r}; it has {list(coll.band_names)}") from None
